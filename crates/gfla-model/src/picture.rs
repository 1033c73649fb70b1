//! Pictures in and out of the networks, as the official data loader and `tensor2im` do.

use std::borrow::Cow;

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use image::imageops::{FilterType, resize};

/// `img` at `height x width`, resized if needed as the official loader does (bilinear with
/// antialiasing when shrinking, as Pillow's).
pub fn resized(img: &RgbImage, height: usize, width: usize) -> Cow<'_, RgbImage> {
    if img.dimensions() == (width as u32, height as u32) {
        Cow::Borrowed(img)
    } else {
        Cow::Owned(resize(
            img,
            width as u32,
            height as u32,
            FilterType::Triangle,
        ))
    }
}

/// The channel-major values `3 x H x W` of `img` in [-1, 1]: divided by 255, then
/// `(x - 0.5) / 0.5`, as the official loader's `ToTensor` and `Normalize`.
pub fn normalised(img: &RgbImage) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut v = vec![0.0f32; 3 * h * w];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            v[(c * h + y as usize) * w + x as usize] = (p.0[c] as f32 / 255.0 - 0.5) / 0.5;
        }
    }
    v
}

/// An RGB picture as the network input `[1, 3, height, width]` in [-1, 1] ([`resized`], then
/// [`normalised`]).
pub fn image_to_tensor(img: &RgbImage, height: usize, width: usize, device: &Device) -> Tensor<4> {
    let v = normalised(&resized(img, height, width));
    Tensor::from_data(TensorData::new(v, [1, 3, height, width]), device)
}

/// Network outputs `[B, 3, H, W]` in [-1, 1] as pictures, the official way:
/// `(x + 1) / 2 * 255` truncated to 8 bits (values outside are clamped first).
pub fn tensor_to_images(t: Tensor<4>) -> Vec<RgbImage> {
    let [b, c, h, w] = t.dims();
    assert_eq!(
        c,
        3,
        "tensor_to_images: expects 3 channels, got {:?}",
        t.dims()
    );
    let v: Vec<f32> = t.try_into_vec_as().expect("float image data");
    (0..b)
        .map(|i| {
            RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let at = |ch: usize| {
                    let value = v[((i * 3 + ch) * h + y as usize) * w + x as usize];
                    ((value + 1.0) / 2.0 * 255.0).clamp(0.0, 255.0) as u8
                };
                image::Rgb([at(0), at(1), at(2)])
            })
        })
        .collect()
}
