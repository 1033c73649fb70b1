//! VGG19 loading from a torchvision-layout `vgg19` state dict in PyTorch's zip format
//! (`tests/data/tiny_vgg19.pth`, written by `tools/make_tiny_vgg_pth.py`: every width / 16,
//! element i of key K = sin(0.01 i + len(K))).

use burn::tensor::Device;
use gfla_model::Vgg19;
use gfla_model::weights::WeightsError;

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tiny_vgg19.pth");

fn expected(key: &str, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (0.01 * i as f64 + key.len() as f64).sin() as f32)
        .collect()
}

#[test]
fn torchvision_state_dict_loads_into_the_right_convolutions() {
    let device = Device::flex();
    let mut vgg = Vgg19::new(16, &device);
    vgg.load_torchvision(FILE)
        .expect("tiny torchvision file loads");
    for (j, conv) in vgg.convs.iter().enumerate() {
        for (param, got) in [
            (
                "weight",
                conv.weight.val().try_into_vec_as::<f32>().unwrap(),
            ),
            (
                "bias",
                conv.bias
                    .as_ref()
                    .unwrap()
                    .val()
                    .try_into_vec_as::<f32>()
                    .unwrap(),
            ),
        ] {
            let key = Vgg19::torchvision_key(j, param);
            assert_eq!(got, expected(&key, got.len()), "{key} -> convs.{j}.{param}");
        }
    }
}

#[test]
fn a_full_size_network_refuses_the_tiny_file_naming_shapes() {
    let device = Device::flex();
    let mut vgg = Vgg19::new(1, &device);
    let err = vgg.load_torchvision(FILE).unwrap_err();
    assert!(matches!(err, WeightsError::Mismatch { .. }));
    let msg = err.to_string();
    assert!(msg.contains("32 with the wrong shape"), "{msg}");
    assert!(msg.contains("convs.0.weight"), "{msg}");
}
