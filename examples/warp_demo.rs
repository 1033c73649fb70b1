//! Shows the gfla-ops kernels on a picture: a swirl flow field, its Middlebury colour coding, the
//! picture warped by the flow with bilinear sampling, with the local attention (k = 3, weights
//! concentrated on the centre) and with the Gaussian resampler of the correctness loss.
//!
//! `cargo run --release --example warp_demo [-- OUT_DIR [--device flex|ndarray|wgpu]]`
//! writes `panel.png` (source | flow | bilinear | local attention | Gaussian) and each picture
//! on its own into OUT_DIR (default `target/warp_demo`).

use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use gfla_ops::{Padding, flow_to_color, local_attention, resample_gaussian, warp_bilinear};

const SIZE: usize = 128;

fn parse_args() -> Result<(PathBuf, Device), String> {
    let mut out = PathBuf::from("target/warp_demo");
    let mut device = Device::flex();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--device" => {
                device = match args.next().as_deref() {
                    Some("flex") => Device::flex(),
                    #[cfg(feature = "ndarray")]
                    Some("ndarray") => Device::ndarray(),
                    #[cfg(feature = "wgpu")]
                    Some("wgpu") => Device::wgpu(Default::default()),
                    other => {
                        return Err(format!(
                            "--device {other:?}: expected flex, or ndarray/wgpu when built with that feature"
                        ));
                    }
                }
            }
            "-h" | "--help" => {
                return Err("usage: warp_demo [OUT_DIR] [--device flex|ndarray|wgpu]".into());
            }
            path => out = PathBuf::from(path),
        }
    }
    Ok((out, device))
}

/// A test card: colour gradients, a checkerboard and a ring, in [0, 1], `[1, 3, S, S]`.
fn test_card(device: &Device) -> Tensor<4> {
    let mut v = vec![0.0f32; 3 * SIZE * SIZE];
    for y in 0..SIZE {
        for x in 0..SIZE {
            let (fx, fy) = (x as f32 / SIZE as f32, y as f32 / SIZE as f32);
            let check = if (x / 16 + y / 16) % 2 == 0 {
                1.0
            } else {
                0.55
            };
            let r = ((fx - 0.5).powi(2) + (fy - 0.5).powi(2)).sqrt();
            let ring = if (0.28..0.34).contains(&r) { 0.0 } else { 1.0 };
            let p = y * SIZE + x;
            v[p] = fx * check * ring;
            v[SIZE * SIZE + p] = fy * check * ring;
            v[2 * SIZE * SIZE + p] = (1.0 - fx) * check * ring;
        }
    }
    Tensor::from_data(TensorData::new(v, [1, 3, SIZE, SIZE]), device)
}

/// A swirl: rotation around the centre, strongest at mid radius, in pixels.
fn swirl(device: &Device) -> Tensor<4> {
    let mut v = vec![0.0f32; 2 * SIZE * SIZE];
    let c = SIZE as f32 / 2.0;
    for y in 0..SIZE {
        for x in 0..SIZE {
            let (dx, dy) = (x as f32 - c, y as f32 - c);
            let r = (dx * dx + dy * dy).sqrt() / c;
            let angle = 0.8 * (-(r - 0.5).powi(2) / 0.08).exp();
            let (s, co) = angle.sin_cos();
            v[y * SIZE + x] = co * dx - s * dy - dx;
            v[SIZE * SIZE + y * SIZE + x] = s * dx + co * dy - dy;
        }
    }
    Tensor::from_data(TensorData::new(v, [1, 2, SIZE, SIZE]), device)
}

fn save(img: &Tensor<4>, path: &PathBuf) -> Result<(), String> {
    let [_, _, h, w] = img.dims();
    let data: Vec<f32> = img
        .clone()
        .try_into_vec_as()
        .map_err(|e| format!("{e:?}"))?;
    let mut rgb = image::RgbImage::new(w as u32, h as u32);
    for (x, y, px) in rgb.enumerate_pixels_mut() {
        let p = y as usize * w + x as usize;
        *px = image::Rgb(std::array::from_fn(|c| {
            (data[c * h * w + p].clamp(0.0, 1.0) * 255.0).round() as u8
        }));
    }
    rgb.save(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("warp_demo: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let (out, device) = parse_args()?;
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let card = test_card(&device);
    let flow = swirl(&device);

    let bilinear = warp_bilinear(card.clone(), flow.clone(), Padding::Border);
    // Attention weights favouring the centre of each 3 x 3 window: a softened bilinear warp.
    let k = 3;
    let centre: Vec<f32> = (0..k * k)
        .map(|i| if i == k * k / 2 { 0.6 } else { 0.05 })
        .collect();
    let weights = Tensor::<1>::from_data(TensorData::new(centre, [k * k]), &device)
        .reshape([1, k * k, 1, 1])
        .expand([1, k * k, SIZE, SIZE]);
    // The official op divides by k^2; undo it for display.
    let attended = local_attention(card.clone(), flow.clone(), weights, k) * (k * k) as f64;
    let gaussian = resample_gaussian(card.clone(), flow.clone());
    let colour = flow_to_color(flow);

    let pictures = [
        ("source", card),
        ("flow", colour),
        ("bilinear", bilinear),
        ("local_attention", attended),
        ("gaussian", gaussian),
    ];
    for (name, img) in &pictures {
        save(img, &out.join(format!("{name}.png")))?;
    }
    let panel = Tensor::cat(pictures.iter().map(|(_, t)| t.clone()).collect(), 3);
    let panel_path = out.join("panel.png");
    save(&panel, &panel_path)?;
    println!(
        "wrote {} (source | flow | bilinear | local attention k=3 | gaussian)",
        panel_path.display()
    );
    Ok(())
}
