//! The evaluation transform (RGB, resize, centre crop, normalise), shared by training's
//! validation data and by inference, so that the two cannot drift apart.

use std::borrow::Cow;

use burn::tensor::{Device, Tensor, TensorData};
use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};

use crate::Preprocess;
use crate::pixels::as_rgb;

/// Resizes so that the shorter side is `side` pixels, keeping the aspect ratio (torchvision's
/// `Resize(int)`), with a bilinear filter that widens when shrinking (PIL's antialiasing).
pub fn resize_shorter(img: &DynamicImage, side: u32) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    if w.min(h) == side {
        return img.clone();
    }
    let (nw, nh) = if w <= h {
        (side, scaled(h, side, w))
    } else {
        (scaled(w, side, h), side)
    };
    img.resize_exact(nw, nh, FilterType::Triangle)
}

/// `len * side / short`, rounded like torchvision (truncation of the exact ratio), at least 1.
fn scaled(len: u32, side: u32, short: u32) -> u32 {
    ((len as u64 * side as u64) / short.max(1) as u64).max(1) as u32
}

/// The centred `crop` x `crop` square (torchvision's `CenterCrop`); a smaller image is padded
/// with black first, as torchvision does.
pub fn center_crop(img: &DynamicImage, crop: u32) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    if w < crop || h < crop {
        let mut canvas = RgbImage::new(w.max(crop), h.max(crop));
        let rgb = as_rgb(img);
        let (ox, oy) = ((canvas.width() - w) / 2, (canvas.height() - h) / 2);
        image::imageops::replace(&mut canvas, &*rgb, ox as i64, oy as i64);
        return center_crop(&DynamicImage::ImageRgb8(canvas), crop);
    }
    // torchvision's offset is Python's int(round((h - crop) / 2)): ties go to even.
    let left = ((w - crop) as f64 / 2.0).round_ties_even() as u32;
    let top = ((h - crop) as f64 / 2.0).round_ties_even() as u32;
    img.crop_imm(left, top, crop, crop)
}

/// Appends the image as normalised CHW floats: pixels scaled to [0, 1], then
/// `(x - mean) / std` per channel. Other modes are converted by [`crate::pixels::to_rgb`]'s rules.
pub fn normalize_into(img: &DynamicImage, p: &Preprocess, out: &mut Vec<f32>) {
    let rgb = as_rgb(img);
    let plane = (rgb.width() * rgb.height()) as usize;
    let start = out.len();
    out.resize(start + 3 * plane, 0.0);
    let (scale, shift): (Vec<f32>, Vec<f32>) = (0..3)
        .map(|c| (1.0 / (255.0 * p.std[c]), p.mean[c] / p.std[c]))
        .unzip();
    for (i, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            out[start + c * plane + i] = px.0[c] as f32 * scale[c] - shift[c];
        }
    }
}

/// The full evaluation transform for one decoded image: CHW floats of side `p.crop`.
pub fn eval_transform(img: &DynamicImage, p: &Preprocess) -> Vec<f32> {
    let img = rgb8(img);
    let resized = resize_shorter(&img, p.resize as u32);
    let cropped = center_crop(&resized, p.crop as u32);
    let mut out = Vec::with_capacity(3 * p.crop * p.crop);
    normalize_into(&cropped, p, &mut out);
    out
}

/// `img` in RGB8, converted before resizing as torchvision's loader does: resampling 16-bit
/// samples and rounding afterwards gives other values.
fn rgb8(img: &DynamicImage) -> Cow<'_, DynamicImage> {
    match as_rgb(img) {
        Cow::Borrowed(_) => Cow::Borrowed(img),
        Cow::Owned(rgb) => Cow::Owned(DynamicImage::ImageRgb8(rgb)),
    }
}

/// Stacks `n` transformed images (CHW floats back to back) into an `[n, 3, side, side]` tensor.
pub fn batch_tensor(pixels: Vec<f32>, n: usize, side: usize, device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(pixels, [n, 3, side, side]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb};

    fn p(resize: usize, crop: usize) -> Preprocess {
        Preprocess {
            resize,
            crop,
            mean: [0.5, 0.25, 0.0],
            std: [0.5, 0.25, 1.0],
        }
    }

    #[test]
    fn shorter_side_and_aspect() {
        let img = DynamicImage::ImageRgb8(RgbImage::new(300, 200));
        let r = resize_shorter(&img, 100);
        assert_eq!((r.width(), r.height()), (150, 100));
        let tall = DynamicImage::ImageRgb8(RgbImage::new(97, 115));
        let r = resize_shorter(&tall, 64);
        assert_eq!((r.width(), r.height()), (64, 75)); // 115 * 64 / 97 = 75.9 -> 75
    }

    #[test]
    fn centre_crop_offsets_and_padding() {
        let mut img = RgbImage::new(5, 4);
        img.put_pixel(2, 1, Rgb([9, 9, 9]));
        let c = center_crop(&DynamicImage::ImageRgb8(img), 2).to_rgb8();
        // offsets round(1.5) = 2 and round(1.0) = 1, Python's rounding
        assert_eq!(c.get_pixel(0, 0).0, [9, 9, 9]);
        let small = DynamicImage::ImageRgb8(RgbImage::from_pixel(2, 2, Rgb([255, 0, 0])));
        let padded = center_crop(&small, 4).to_rgb8();
        assert_eq!((padded.width(), padded.height()), (4, 4));
        assert_eq!(padded.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(padded.get_pixel(1, 1).0, [255, 0, 0]);
    }

    #[test]
    fn normalises_per_channel_in_chw_order() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(2, 1, Rgb([255, 0, 51])));
        let mut out = Vec::new();
        normalize_into(&img, &p(2, 2), &mut out);
        let want = [1.0, 1.0, -1.0, -1.0, 0.2, 0.2];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn sixteen_bit_is_converted_before_resizing() {
        let img = DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(9, 7, |x, y| {
            let v = (x * 7919 + y * 104_729) as u16;
            Rgb([v, v.rotate_left(7), !v])
        }));
        let pre = p(4, 3);
        let rgb = DynamicImage::ImageRgb8(crate::pixels::to_rgb(img.clone()));
        assert_eq!(eval_transform(&img, &pre), eval_transform(&rgb, &pre));
        // the other order, resampling the 16-bit samples, would not give the same floats
        let late = center_crop(&resize_shorter(&img, 4), 3);
        let mut out = Vec::new();
        normalize_into(&late, &pre, &mut out);
        assert_ne!(eval_transform(&img, &pre), out);
    }

    #[test]
    fn grayscale_becomes_three_equal_channels() {
        let img = DynamicImage::ImageLuma8(GrayImage::from_pixel(4, 4, Luma([128])));
        let pre = Preprocess {
            resize: 4,
            crop: 4,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let out = eval_transform(&img, &pre);
        assert_eq!(out.len(), 3 * 16);
        assert!(out.iter().all(|v| (v - 128.0 / 255.0).abs() < 1e-6));
    }
}
