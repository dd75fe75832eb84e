//! Turning untrusted bytes into an image, by the model crate's [`rekindle_model::decode`], the
//! decoding training uses too: format sniffing, size limits checked from the header before any
//! pixel is decoded (a 100-megapixel PNG can be a few kilobytes), decoders that refuse
//! truncated data, the EXIF orientation applied, and the conversion to the RGB8 the network
//! sees. Here its errors become [`InferError`]s naming the input.

use image::DynamicImage;
use rekindle_model::decode::DecodeError;

pub use rekindle_model::decode::{FORMATS, Limits};

use crate::InferError;

/// Decodes `bytes` (named `source` in errors) within `limits` into an upright RGB8 image, by
/// [`rekindle_model::decode::decode`]'s rules for orientation, gray, alpha, palette and 16-bit.
pub fn decode(bytes: &[u8], source: &str, limits: &Limits) -> Result<DynamicImage, InferError> {
    rekindle_model::decode::decode(bytes, limits)
        .map(DynamicImage::ImageRgb8)
        .map_err(|e| match e {
            DecodeError::TooLarge(message) => InferError::TooLarge {
                source_name: source.into(),
                message,
            },
            other => InferError::bad_image(source, other),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageBuffer, ImageFormat, Luma, Rgb, RgbImage, Rgba};
    use rekindle_model::Preprocess;
    use rekindle_model::pixels::to_rgb;
    use rekindle_model::preprocess::eval_transform;
    use std::io::Cursor;

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
