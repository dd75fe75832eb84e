//! Turning untrusted bytes into an image: format sniffing, size limits checked from the header
//! before any pixel is decoded (a 100-megapixel PNG can be a few kilobytes), decoders that
//! refuse truncated data, and the model crate's conversion to the RGB8 the network sees.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader};
use rekindle_model::pixels::to_rgb;

use crate::InferError;

/// How large an input may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Encoded size in bytes.
    pub max_bytes: usize,
    /// Decoded width x height.
    pub max_pixels: u64,
    /// Width or height.
    pub max_side: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 32 << 20,
            max_pixels: 40_000_000,
            max_side: 16_384,
        }
    }
}

/// The formats this build decodes.
pub const FORMATS: &str = "PNG, JPEG";

/// Decodes `bytes` (named `source` in errors) within `limits` into an RGB8 image, converted by
/// [`rekindle_model::pixels::to_rgb`]'s rules for gray, alpha, palette and 16-bit files.
pub fn decode(bytes: &[u8], source: &str, limits: &Limits) -> Result<DynamicImage, InferError> {
    if bytes.is_empty() {
        return Err(InferError::bad_image(
            source,
            "empty input, expected an image",
        ));
    }
    if bytes.len() > limits.max_bytes {
        return Err(InferError::TooLarge {
            source_name: source.into(),
            message: format!(
                "{} bytes is over the limit of {} bytes",
                bytes.len(),
                limits.max_bytes
            ),
        });
    }
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| InferError::bad_image(source, e))
    };
    let format = reader()?.format().ok_or_else(|| {
        InferError::bad_image(
            source,
            format!("not an image this build reads ({FORMATS}): unrecognised content"),
        )
    })?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
        return Err(InferError::bad_image(
            source,
            format!("{format:?} images are not supported; send {FORMATS}"),
        ));
    }
    let (w, h) = reader()?.into_dimensions().map_err(|e| {
        InferError::bad_image(
            source,
            format!("corrupt or truncated {format:?} header: {e}"),
        )
    })?;
    let pixels = w as u64 * h as u64;
    if w > limits.max_side || h > limits.max_side || pixels > limits.max_pixels {
        return Err(InferError::TooLarge {
            source_name: source.into(),
            message: format!(
                "{w}x{h} image ({:.1} megapixels) is over the limit of {:.1} megapixels and \
                 {} pixels a side",
                pixels as f64 / 1e6,
                limits.max_pixels as f64 / 1e6,
                limits.max_side
            ),
        });
    }
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(InferError::bad_image(
            source,
            "corrupt or truncated Jpeg: the data ends before the end-of-image marker",
        ));
    }
    let mut r = reader()?;
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    // The decoded buffer (up to 16 bytes a pixel for 16-bit RGBA) plus the decoder's own.
    l.max_alloc = Some(pixels.saturating_mul(16).saturating_add(64 << 20));
    r.limits(l);
    let img = r.decode().map_err(|e| {
        InferError::bad_image(source, format!("corrupt or truncated {format:?}: {e}"))
    })?;
    // Here rather than in preprocessing, so that whatever takes a decoded image sees what
    // training's loader saw.
    Ok(DynamicImage::ImageRgb8(to_rgb(img)))
}

/// Whether a JPEG's entropy-coded data ends with the end-of-image marker. `image` decodes a
/// truncated JPEG without an error (the missing rows come out grey, as in a browser); a service
/// must refuse it rather than classify half an image. The header segments are skipped by their
/// lengths, so an EXIF thumbnail's own end marker does not count.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let mut i = 2; // after SOI
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            return false;
        }
        match bytes[i + 1] {
            0xFF => i += 1, // fill byte
            0xDA => {
                // Start of scan: the image data follows; FF D9 cannot occur inside it.
                return bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9]);
            }
            _ => i += 2 + u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageBuffer, Luma, Rgb, RgbImage, Rgba};
    use rekindle_model::Preprocess;
    use rekindle_model::preprocess::eval_transform;

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn gradient(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 9) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
        }))
    }

    #[test]
    fn png_and_jpeg_decode() {
        let img = gradient(40, 30);
        for f in [ImageFormat::Png, ImageFormat::Jpeg] {
            let bytes = encode(&img, f);
            let d = decode(&bytes, "x", &Limits::default()).unwrap();
            assert_eq!((d.width(), d.height()), (40, 30));
            // exactly what training decodes, through the same `image` decoder
            assert!(d == image::load_from_memory(&bytes).unwrap());
        }
        let gray = DynamicImage::ImageLuma8(GrayImage::from_fn(9, 7, |x, y| {
            image::Luma([(x * y) as u8])
        }));
        let bytes = encode(&gray, ImageFormat::Jpeg);
        let want = to_rgb(image::load_from_memory(&bytes).unwrap());
        assert!(decode(&bytes, "g", &Limits::default()).unwrap() == DynamicImage::ImageRgb8(want));
    }

    #[test]
    fn wide_and_transparent_pngs_decode_like_their_rgb8_twins() {
        let rgb = gradient(23, 17).to_rgb8();
        let wide = |v: u8| v as u16 * 257; // exactly the 8-bit value at 16 bits
        let alpha = |x: u32, y: u32| ((x * 37 + y * 11) % 256) as u8;
        let at = |x: u32, y: u32| rgb.get_pixel(x, y).0;
        let (w, h) = rgb.dimensions();
        let twins = [
            DynamicImage::ImageRgb16(ImageBuffer::from_fn(w, h, |x, y| Rgb(at(x, y).map(wide)))),
            DynamicImage::ImageRgba8(ImageBuffer::from_fn(w, h, |x, y| {
                let [r, g, b] = at(x, y);
                Rgba([r, g, b, alpha(x, y)])
            })),
            DynamicImage::ImageRgba16(ImageBuffer::from_fn(w, h, |x, y| {
                let [r, g, b] = at(x, y).map(wide);
                Rgba([r, g, b, wide(alpha(x, y))])
            })),
        ];
        let l = Limits::default();
        let want = decode(
            &encode(&DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Png),
            "rgb",
            &l,
        );
        let want = want.unwrap();
        let pre = Preprocess {
            resize: 12,
            crop: 10,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        };
        for twin in twins {
            let got = decode(&encode(&twin, ImageFormat::Png), "twin", &l).unwrap();
            assert!(got == want, "{:?}", twin.color());
            assert_eq!(eval_transform(&got, &pre), eval_transform(&want, &pre));
        }
    }

    #[test]
    fn sixteen_bit_gray_is_rounded_not_clipped() {
        let samples = [0x0000u16, 0x00FF, 0x0100, 0x8080, 0xFF00, 0xFFFF];
        let g16 = ImageBuffer::from_fn(6, 1, |x, _| Luma([samples[x as usize]]));
        let bytes = encode(&DynamicImage::ImageLuma16(g16), ImageFormat::Png);
        let got = decode(&bytes, "g16", &Limits::default()).unwrap();
        let want = RgbImage::from_fn(6, 1, |x, _| Rgb([[0, 1, 1, 128, 254, 255][x as usize]; 3]));
        assert!(got == DynamicImage::ImageRgb8(want), "{:?}", got.to_rgb8());
    }

    #[test]
    fn bad_inputs_are_named() {
        let l = Limits::default();
        let err = |b: &[u8]| decode(b, "upload.bin", &l).unwrap_err().to_string();
        assert!(err(b"").contains("empty"));
        let e = err(b"hello, this is text and not an image at all");
        assert!(
            e.contains("upload.bin") && e.contains("not an image"),
            "{e}"
        );
        // a truncated JPEG: every prefix that cuts into the entropy-coded data is refused
        let jpeg = encode(&gradient(64, 64), ImageFormat::Jpeg);
        for cut in [jpeg.len() / 2, jpeg.len() - 10] {
            let e = err(&jpeg[..cut]);
            assert!(e.contains("upload.bin"), "{e}");
        }
        let png = encode(&gradient(64, 64), ImageFormat::Png);
        assert!(err(&png[..png.len() / 2]).contains("corrupt or truncated"));
    }

    #[test]
    fn limits_are_checked_before_decoding() {
        // 10000 x 10000 black pixels: 100 megapixels in a small PNG
        let huge = DynamicImage::ImageLuma8(GrayImage::new(10_000, 10_000));
        let bytes = encode(&huge, ImageFormat::Png);
        assert!(bytes.len() < 1 << 20, "{}", bytes.len());
        let e = decode(&bytes, "bomb.png", &Limits::default()).unwrap_err();
        assert!(matches!(e, InferError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("100.0 megapixels"), "{e}");
        let small = Limits {
            max_bytes: 100,
            ..Limits::default()
        };
        let e = decode(&encode(&gradient(64, 64), ImageFormat::Png), "p", &small).unwrap_err();
        assert!(matches!(e, InferError::TooLarge { .. }), "{e}");
    }
}
