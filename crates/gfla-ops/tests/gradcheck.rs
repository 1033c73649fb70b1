//! Finite-difference gradient checks in float64 on random inputs of odd shapes, flows pointing
//! far outside the map, k = 3 and 5 and batch > 1: the autodiff gradients of the composed ops
//! are the true derivatives (where the official CUDA kernels are not, for batch > 1).

use std::sync::OnceLock;

use burn::tensor::activation::softmax;
use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};
use gfla_ops::*;

/// The flex CPU device switched to float64, so central differences are accurate to ~1e-9.
fn device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let mut device = Device::flex();
            device
                .configure(FloatDType::F64)
                .expect("flex supports float64");
            device
        })
        .clone()
        .autodiff()
}

/// Deterministic uniform numbers in [lo, hi) (a 64-bit LCG; no dependency needed).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                lo + (hi - lo) * ((self.0 >> 11) as f64 / (1u64 << 53) as f64)
            })
            .collect()
    }
}

fn tensor(values: Vec<f64>, shape: [usize; 4]) -> Tensor<4> {
    Tensor::from_data(TensorData::new(values, shape), (&device(), DType::F64))
}

fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f64>()
}

/// Checks the autodiff gradient of `f` with respect to each of `inputs` against central
/// differences: along 3 random directions and on 12 single coordinates per input.
fn gradcheck(name: &str, inputs: &[(Vec<f64>, [usize; 4])], f: impl Fn(&[Tensor<4>]) -> Tensor<1>) {
    let h = 1e-6;
    let tracked: Vec<Tensor<4>> = inputs
        .iter()
        .map(|(v, s)| tensor(v.clone(), *s).require_grad())
        .collect();
    let grads = f(&tracked).backward();
    let mut rng = Rng(0x5eed ^ name.len() as u64);
    for (i, (x, shape)) in inputs.iter().enumerate() {
        let grad: Vec<f64> = tracked[i]
            .grad(&grads)
            .unwrap_or_else(|| panic!("{name}: input {i} got no gradient"))
            .try_into_vec_as::<f64>()
            .unwrap();
        let eval = |d: &[f64], eps: f64| {
            let args: Vec<Tensor<4>> = inputs
                .iter()
                .enumerate()
                .map(|(j, (v, s))| {
                    if j == i {
                        let moved = v.iter().zip(d).map(|(a, b)| a + eps * b).collect();
                        tensor(moved, *s)
                    } else {
                        tensor(v.clone(), *s)
                    }
                })
                .collect();
            scalar(f(&args))
        };
        let mut directions: Vec<Vec<f64>> =
            (0..3).map(|_| rng.uniform(x.len(), -1.0, 1.0)).collect();
        for c in rng.uniform(12, 0.0, x.len() as f64) {
            let mut d = vec![0.0; x.len()];
            d[c as usize] = 1.0;
            directions.push(d);
        }
        for d in directions {
            let numeric = (eval(&d, h) - eval(&d, -h)) / (2.0 * h);
            let analytic: f64 = grad.iter().zip(&d).map(|(g, e)| g * e).sum();
            let tol = 1e-6 * (1.0 + analytic.abs().max(numeric.abs()));
            assert!(
                (numeric - analytic).abs() <= tol,
                "{name}: input {i} {shape:?}: analytic {analytic} vs numeric {numeric}"
            );
        }
    }
}

#[test]
fn extract_blocks_gradients_far_outside_the_map() {
    let mut rng = Rng(1);
    for k in [3usize, 5] {
        // Source 3 x 5 x 7, flow on a 4 x 6 grid: the output size follows the flow.
        let source = (rng.uniform(2 * 3 * 5 * 7, -1.0, 1.0), [2, 3, 5, 7]);
        let flow = (rng.uniform(2 * 2 * 4 * 6, -12.0, 12.0), [2, 2, 4, 6]);
        let r = rng.uniform(2 * 3 * 4 * k * 6 * k, -1.0, 1.0);
        gradcheck(&format!("extract_blocks k{k}"), &[source, flow], |x| {
            let out = extract_blocks(x[0].clone(), x[1].clone(), k);
            (out * tensor(r.clone(), [2, 3, 4 * k, 6 * k])).sum()
        });
    }
}

#[test]
fn local_attention_gradients() {
    let mut rng = Rng(2);
    for k in [3usize, 5] {
        let source = (rng.uniform(3 * 4 * 5 * 3, -1.0, 1.0), [3, 4, 5, 3]);
        let flow = (rng.uniform(3 * 2 * 5 * 3, -4.0, 4.0), [3, 2, 5, 3]);
        let logits = (rng.uniform(3 * k * k * 5 * 3, -3.0, 3.0), [3, k * k, 5, 3]);
        let target = (rng.uniform(3 * 4 * 5 * 3, -1.0, 1.0), [3, 4, 5, 3]);
        let mask = (rng.uniform(3 * 5 * 3, 0.0, 1.0), [3, 1, 5, 3]);
        let r = rng.uniform(3 * 4 * 5 * 3, -1.0, 1.0);
        gradcheck(
            &format!("local_attention k{k}"),
            &[source, flow, logits, target, mask],
            |x| {
                let attended =
                    local_attention(x[0].clone(), x[1].clone(), softmax(x[2].clone(), 1), k);
                let out = blend(x[3].clone(), attended, x[4].clone());
                (out * tensor(r.clone(), [3, 4, 5, 3])).sum()
            },
        );
    }
}

#[test]
fn warp_gradients_both_paddings() {
    let mut rng = Rng(3);
    for padding in [Padding::Border, Padding::Zeros] {
        let source = (rng.uniform(2 * 2 * 7 * 5, -1.0, 1.0), [2, 2, 7, 5]);
        let flow = (rng.uniform(2 * 2 * 7 * 5, -6.0, 6.0), [2, 2, 7, 5]);
        let r = rng.uniform(2 * 2 * 7 * 5, -1.0, 1.0);
        gradcheck(&format!("warp {padding:?}"), &[source, flow], |x| {
            (warp_bilinear(x[0].clone(), x[1].clone(), padding) * tensor(r.clone(), [2, 2, 7, 5]))
                .sum()
        });
    }
}

#[test]
fn resample_and_correctness_gradients() {
    let mut rng = Rng(4);
    let source = rng.uniform(2 * 6 * 7 * 9, 0.0, 1.0);
    let target = rng.uniform(2 * 6 * 7 * 9, 0.0, 1.0);
    let flow = (rng.uniform(2 * 2 * 7 * 9, -9.0, 9.0), [2, 2, 7, 9]);
    let r = rng.uniform(2 * 6 * 7 * 9, -1.0, 1.0);
    gradcheck(
        "resample_gaussian",
        &[(source.clone(), [2, 6, 7, 9]), flow.clone()],
        |x| (resample_gaussian(x[0].clone(), x[1].clone()) * tensor(r.clone(), [2, 6, 7, 9])).sum(),
    );
    gradcheck("sampling_correctness", &[flow], |x| {
        sampling_correctness(
            tensor(source.clone(), [2, 6, 7, 9]),
            tensor(target.clone(), [2, 6, 7, 9]),
            x[0].clone(),
        )
    });
}

#[test]
fn affine_and_style_gradients() {
    let mut rng = Rng(5);
    for k in [3usize, 5] {
        let flow = (rng.uniform(3 * 2 * 9 * 7, -3.0, 3.0), [3, 2, 9, 7]);
        gradcheck(&format!("affine k{k}"), &[flow], |x| {
            affine_regularization(x[0].clone(), k)
        });
    }
    let x = (rng.uniform(2 * 5 * 3 * 4, 0.0, 1.0), [2, 5, 3, 4]);
    let y = rng.uniform(2 * 5 * 3 * 4, 0.0, 1.0);
    gradcheck("style_term", &[x], |x| {
        style_term(x[0].clone(), tensor(y.clone(), [2, 5, 3, 4]))
    });
}
