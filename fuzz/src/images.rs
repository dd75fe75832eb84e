//! The `png` and `jpeg` targets: an image decoded as the service decodes a request body (with
//! its limits) and as training decodes a file, then preprocessed for a model.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};
use rekindle_infer::Limits;
use rekindle_model::Preprocess;
use rekindle_model::preprocess::eval_transform;

/// Small images in the modes users send: RGB, RGBA, 16-bit grey, grey with alpha.
pub fn seeds(format: ImageFormat) -> Vec<Vec<u8>> {
    let (w, h) = (13, 9);
    let rgb = ImageBuffer::from_fn(w, h, |x, y| Rgb([(x * 19) as u8, (y * 27) as u8, 90]));
    let mut images = vec![
        DynamicImage::ImageRgb8(rgb),
        DynamicImage::ImageLuma8(ImageBuffer::from_fn(w, h, |x, y| Luma([(x * y) as u8]))),
    ];
    if format == ImageFormat::Png {
        images.push(DynamicImage::ImageRgba8(ImageBuffer::from_fn(
            w,
            h,
            |x, _| Rgba([200, (x * 9) as u8, 3, (x * 20) as u8]),
        )));
        images.push(DynamicImage::ImageLuma16(ImageBuffer::from_fn(
            w,
            h,
            |x, y| Luma([(x * 5000 + y) as u16]),
        )));
        images.push(DynamicImage::ImageLumaA8(ImageBuffer::from_fn(
            w,
            h,
            |x, _| LumaA([x as u8, 128]),
        )));
    }
    images
        .iter()
        .filter_map(|img| {
            let mut out = Cursor::new(Vec::new());
            img.write_to(&mut out, format).ok()?;
            Some(out.into_inner())
        })
        .collect()
}

/// Decodes `input` both ways (bytes in memory with the service's limits, and the file at
/// `path` as training reads it) and preprocesses what decodes.
pub fn run(input: &[u8], path: &Path) -> Result<(), String> {
    let pre = Preprocess {
        resize: 28,
        crop: 24,
        ..Preprocess::imagenet()
    };
    // Tighter than the service's defaults, so limit checks are reached by small inputs too.
    let limits = Limits {
        max_bytes: 1 << 20,
        max_pixels: 4 << 20,
        ..Limits::default()
    };
    let served = rekindle_infer::decode::decode(input, "input", &limits)
        .map(|img| eval_transform(&img, &pre).len())
        .map_err(|e| e.to_string());
    let trained = rekindle_train::data::dataset::decode_file(path)
        .map(|img| eval_transform(&img, &pre).len());
    match (served, trained) {
        (Ok(_), Ok(_)) => Ok(()),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}
