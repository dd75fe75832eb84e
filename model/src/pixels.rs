//! The one conversion from a decoded image, whatever its mode, to the 8-bit RGB the network sees.
//! Training and inference both reach it through [`crate::decode::decode`], so a grayscale,
//! transparent, palette or 16-bit file cannot look different to the two.

use std::borrow::Cow;

use image::{DynamicImage, RgbImage};

/// Converts a decoded image to the RGB8 the network sees; an RGB8 image is moved, not copied.
///
/// The rules follow what a PyTorch user of torchvision's `ImageFolder` gets from its default
/// loader, `PIL.Image.open(f).convert("RGB")`, except for 16-bit grayscale:
///
/// | decoded as | rule | PIL's `convert("RGB")` |
/// |---|---|---|
/// | gray (L8) | R = G = B = gray | the same |
/// | gray + alpha, RGBA | alpha dropped, colour kept as stored, not composited | the same (`rgba2rgb` copies R, G, B) |
/// | palette PNG | the palette's colours; `image` expands it to RGB8, or RGBA8 with a tRNS chunk, whose alpha is dropped | the same: `P` to `RGB` ignores `transparency` |
/// | gray below 8 bits | scaled to 8 bits by the PNG decoder (4-bit v is 17 v) | the same (`L;4` unpacks scaled) |
/// | 16-bit RGB, RGBA, gray + alpha | each sample `round(v / 257)` = `(v + 128) / 257` | keeps the high byte, `v >> 8` (up to 1 level darker) |
/// | 16-bit gray | R = G = B = `round(v / 257)` | opens as `I;16` and clips: `min(v, 255)` |
/// | 32-bit float | `round(255 * clamp(v, 0, 1))`, NaN as 1 (white) | no such PNG or JPEG mode |
/// | CMYK JPEG | the decoder's RGB | its own CMYK formula; may differ by a few levels |
///
/// We do not copy PIL's 16-bit gray rule: clipping turns every gray above 255 of 65535 white, so
/// a 16-bit gray photo comes out nearly blank (Pillow issues 2574 and 3011 call it a long-standing
/// limitation, not a choice); `round(v / 257)` is the exact rescale, and the one `image` uses.
///
/// No ICC profile is applied (nor does PIL apply one). Turning a photo upright by its EXIF
/// orientation is the decoder's step before this one, [`crate::decode::decode`], which also
/// differs from torchvision's loader there (its documentation says why).
pub fn to_rgb(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => convert(&other),
    }
}

/// [`to_rgb`] for a borrowed image: borrows an RGB8 image instead of copying it.
pub fn as_rgb(img: &DynamicImage) -> Cow<'_, RgbImage> {
    match img {
        DynamicImage::ImageRgb8(rgb) => Cow::Borrowed(rgb),
        other => Cow::Owned(convert(other)),
    }
}

/// The rules of [`to_rgb`]. Written out rather than left to `image`'s `to_rgb8`, which agrees
/// today (a test checks it) but goes through colour-space code that changes between releases.
fn convert(img: &DynamicImage) -> RgbImage {
    let raw = match img {
        DynamicImage::ImageRgb8(b) => return b.clone(),
        DynamicImage::ImageLuma8(b) => expand::<_, 1>(b, |v| v),
        DynamicImage::ImageLumaA8(b) => expand::<_, 2>(b, |v| v),
        DynamicImage::ImageRgba8(b) => expand::<_, 4>(b, |v| v),
        DynamicImage::ImageLuma16(b) => expand::<_, 1>(b, from_u16),
        DynamicImage::ImageLumaA16(b) => expand::<_, 2>(b, from_u16),
        DynamicImage::ImageRgb16(b) => expand::<_, 3>(b, from_u16),
        DynamicImage::ImageRgba16(b) => expand::<_, 4>(b, from_u16),
        DynamicImage::ImageRgb32F(b) => expand::<_, 3>(b, from_f32),
        DynamicImage::ImageRgba32F(b) => expand::<_, 4>(b, from_f32),
        // `DynamicImage` is non-exhaustive: a mode added later gets `image`'s conversion.
        other => return other.to_rgb8(),
    };
    RgbImage::from_raw(img.width(), img.height(), raw).expect("three samples a pixel")
}

/// Three bytes for each pixel of `N` interleaved samples: gray (one or two samples) replicated,
/// colour its first three; a trailing alpha is never read.
fn expand<T: Copy, const N: usize>(samples: &[T], f: impl Fn(T) -> u8) -> Vec<u8> {
    let (pixels, _) = samples.as_chunks::<N>();
    let mut out = Vec::with_capacity(3 * pixels.len());
    for px in pixels {
        if N < 3 {
            out.extend([f(px[0]); 3]);
        } else {
            out.extend([f(px[0]), f(px[1]), f(px[2])]);
        }
    }
    out
}

/// `round(v * 255 / 65535)`, that is `round(v / 257)`; no `v` falls on a tie.
fn from_u16(v: u16) -> u8 {
    ((v as u32 + 128) / 257) as u8
}

/// `round(255 * clamp(v, 0, 1))`, NaN counted as 1 as `image` and browsers do.
fn from_f32(v: f32) -> u8 {
    let v = if v < 1.0 { v.max(0.0) } else { 1.0 };
    (v * 255.0).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{
        GrayAlphaImage, GrayImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgb32FImage, Rgba,
        RgbaImage,
    };
    use std::io::Cursor;

    /// 16-bit samples where truncation, clipping and rounding all differ, with `round(v / 257)`.
    const WIDE: [(u16, u8); 10] = [
        (0x0000, 0),
        (0x0080, 0), // 0.498
        (0x0081, 1), // 0.502
        (0x00FF, 1), // PIL's high byte: 0
        (0x4000, 64),
        (0x8080, 128),
        (0x80FF, 128), // 128.49
        (0x8101, 129), // 128.50(4)
        (0xFF00, 254), // PIL's high byte: 255
        (0xFFFF, 255),
    ];

    fn png(img: &DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    /// Encodes, decodes as training and inference do, and converts.
    fn round_trip(img: DynamicImage) -> (image::ColorType, RgbImage) {
        let decoded = image::load_from_memory(&png(&img)).unwrap();
        (decoded.color(), to_rgb(decoded))
    }

    /// A PNG the `image` encoder cannot write (palette, sub-byte gray), through `png` directly.
    fn png_raw(
        (w, h): (u32, u32),
        (color, depth): (png::ColorType, png::BitDepth),
        palette: Option<&[u8]>,
        trns: Option<&[u8]>,
        data: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        if let Some(p) = palette {
            enc.set_palette(p.to_vec());
        }
        if let Some(t) = trns {
            enc.set_trns(t.to_vec());
        }
        let mut writer = enc.write_header().unwrap();
        writer.write_image_data(data).unwrap();
        writer.finish().unwrap();
        out
    }

    fn row(img: &RgbImage) -> Vec<[u8; 3]> {
        img.pixels().map(|p| p.0).collect()
    }

    #[test]
    fn gray_is_replicated() {
        let gray = GrayImage::from_fn(4, 1, |x, _| Luma([[0, 1, 128, 255][x as usize]]));
        let (color, rgb) = round_trip(DynamicImage::ImageLuma8(gray));
        assert_eq!(color, image::ColorType::L8);
        assert_eq!(row(&rgb), [[0; 3], [1; 3], [128; 3], [255; 3]]);
    }

    #[test]
    fn alpha_is_dropped_not_composited() {
        let rgba = RgbaImage::from_fn(4, 1, |x, _| {
            Rgba([200, 100, 50, [0, 1, 128, 255][x as usize]])
        });
        let (color, rgb) = round_trip(DynamicImage::ImageRgba8(rgba));
        assert_eq!(color, image::ColorType::Rgba8);
        assert_eq!(row(&rgb), [[200, 100, 50]; 4]);
        let la = GrayAlphaImage::from_fn(3, 1, |x, _| LumaA([77, [0, 128, 255][x as usize]]));
        let (color, rgb) = round_trip(DynamicImage::ImageLumaA8(la));
        assert_eq!(color, image::ColorType::La8);
        assert_eq!(row(&rgb), [[77; 3]; 3]);
    }

    #[test]
    fn palette_gives_its_colours_with_or_without_trns() {
        let palette = [255, 0, 0, 0, 255, 0, 10, 20, 30];
        let indexed = (png::ColorType::Indexed, png::BitDepth::Eight);
        let want = [[10, 20, 30], [255, 0, 0], [0, 255, 0], [10, 20, 30]];
        for (trns, color) in [
            (None, image::ColorType::Rgb8),
            (Some(&[0u8, 128][..]), image::ColorType::Rgba8),
        ] {
            let bytes = png_raw((4, 1), indexed, Some(&palette), trns, &[2, 0, 1, 2]);
            let decoded = image::load_from_memory(&bytes).unwrap();
            assert_eq!(decoded.color(), color);
            assert_eq!(row(&to_rgb(decoded)), want);
        }
    }

    #[test]
    fn gray_with_trns_and_sub_byte_gray_are_scaled_gray() {
        let eight = (png::ColorType::Grayscale, png::BitDepth::Eight);
        let bytes = png_raw((2, 1), eight, None, Some(&[0, 9]), &[9, 200]);
        let decoded = image::load_from_memory(&bytes).unwrap();
        assert_eq!(decoded.color(), image::ColorType::La8);
        assert_eq!(row(&to_rgb(decoded)), [[9; 3], [200; 3]]);
        // 4-bit samples 0, 1, 8, 15 packed two a byte: scaled by 17 as PIL's `L;4` does
        let four = (png::ColorType::Grayscale, png::BitDepth::Four);
        let bytes = png_raw((4, 1), four, None, None, &[0x01, 0x8F]);
        let rgb = to_rgb(image::load_from_memory(&bytes).unwrap());
        assert_eq!(row(&rgb), [[0; 3], [17; 3], [136; 3], [255; 3]]);
    }

    #[test]
    fn sixteen_bit_is_rounded_to_eight() {
        let n = WIDE.len() as u32;
        let want: Vec<u8> = WIDE.iter().map(|w| w.1).collect();
        let g16 = ImageBuffer::from_fn(n, 1, |x, _| Luma([WIDE[x as usize].0]));
        let (color, rgb) = round_trip(DynamicImage::ImageLuma16(g16));
        assert_eq!(color, image::ColorType::L16);
        assert_eq!(row(&rgb), want.iter().map(|&v| [v; 3]).collect::<Vec<_>>());
        // the channels are rotated so each carries every value
        let wide = |x: u32, c: u32| WIDE[((x + c) % n) as usize].0;
        let narrow = |x: u32, c: u32| want[((x + c) % n) as usize];
        let rgb16 = ImageBuffer::from_fn(n, 1, |x, _| Rgb([wide(x, 0), wide(x, 1), wide(x, 2)]));
        let rgba16 = ImageBuffer::from_fn(n, 1, |x, _| {
            Rgba([wide(x, 0), wide(x, 1), wide(x, 2), wide(x, 3)])
        });
        let la16 = ImageBuffer::from_fn(n, 1, |x, _| LumaA([wide(x, 0), wide(x, 5)]));
        let colour =
            RgbImage::from_fn(n, 1, |x, _| Rgb([narrow(x, 0), narrow(x, 1), narrow(x, 2)]));
        let gray = RgbImage::from_fn(n, 1, |x, _| Rgb([narrow(x, 0); 3]));
        for (img, color, want) in [
            (
                DynamicImage::ImageRgb16(rgb16),
                image::ColorType::Rgb16,
                &colour,
            ),
            (
                DynamicImage::ImageRgba16(rgba16),
                image::ColorType::Rgba16,
                &colour,
            ),
            (
                DynamicImage::ImageLumaA16(la16),
                image::ColorType::La16,
                &gray,
            ),
        ] {
            assert_eq!(round_trip(img), (color, want.clone()));
        }
    }

    #[test]
    fn float_is_clamped_and_rounded() {
        let values = [-0.5, 0.0, 0.2, 0.5, 1.0, 1.5, f32::NAN];
        let img = Rgb32FImage::from_fn(values.len() as u32, 1, |x, _| {
            Rgb([values[x as usize], 0.0, 1.0])
        });
        let rgb = to_rgb(DynamicImage::ImageRgb32F(img));
        let red: Vec<u8> = rgb.pixels().map(|p| p.0[0]).collect();
        assert_eq!(red, [0, 0, 51, 128, 255, 255, 255]);
        assert!(rgb.pixels().all(|p| p.0[1..] == [0, 255]));
        let rgba = ImageBuffer::from_pixel(1, 1, Rgba([0.2f32, 0.4, 0.6, 0.0]));
        assert_eq!(
            row(&to_rgb(DynamicImage::ImageRgba32F(rgba))),
            [[51, 102, 153]]
        );
    }

    #[test]
    fn rgb8_is_neither_copied_nor_changed() {
        let img = RgbImage::from_fn(5, 3, |x, y| Rgb([x as u8, y as u8, 7]));
        let (want, ptr) = (img.clone(), img.as_ptr());
        let dynamic = DynamicImage::ImageRgb8(img);
        assert!(matches!(as_rgb(&dynamic), Cow::Borrowed(b) if *b == want));
        let out = to_rgb(dynamic);
        assert_eq!((out.as_ptr(), &out), (ptr, &want));
    }

    #[test]
    fn agrees_with_image_to_rgb8_on_every_integer_sample() {
        // every value in the first channel, scrambled ones in the others
        let all16 = |c: usize| -> Vec<u16> {
            (0..=u16::MAX)
                .flat_map(|v| [v, v.rotate_left(5), !v].into_iter().take(c))
                .collect()
        };
        let all8: Vec<u8> = (0..=255u8)
            .flat_map(|v| [v, !v, v.rotate_left(3), 255])
            .collect();
        let images = [
            DynamicImage::ImageLuma16(ImageBuffer::from_raw(256, 256, all16(1)).unwrap()),
            DynamicImage::ImageLumaA16(ImageBuffer::from_raw(256, 256, all16(2)).unwrap()),
            DynamicImage::ImageRgb16(ImageBuffer::from_raw(256, 256, all16(3)).unwrap()),
            DynamicImage::ImageLuma8(ImageBuffer::from_raw(256, 4, all8.clone()).unwrap()),
            DynamicImage::ImageLumaA8(ImageBuffer::from_raw(256, 2, all8.clone()).unwrap()),
            DynamicImage::ImageRgba8(ImageBuffer::from_raw(256, 1, all8).unwrap()),
        ];
        for img in images {
            assert!(to_rgb(img.clone()) == img.to_rgb8(), "{:?}", img.color());
        }
    }
}
