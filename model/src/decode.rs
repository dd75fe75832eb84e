//! Encoded image bytes to the RGB8 the network sees, the one way training, evaluation and
//! serving all decode: size limits checked from the header before any pixel buffer exists
//! (a few-kilobyte PNG can declare 100000 x 100000 pixels), truncated JPEGs refused, the EXIF
//! orientation applied, then [`crate::pixels::to_rgb`].
//!
//! **EXIF orientation is applied.** A phone stores a photo as its sensor read it and says in
//! EXIF tag 0x0112 which way is up; every viewer and browser shows it turned, and that turned
//! picture is what a person labelled. PIL's `Image.open` ignores the tag, so torchvision's
//! `ImageFolder` and timm train on the sideways pixels, and a service that does the same
//! classifies a portrait phone photo lying on its side. Hugging Face's `load_image` and
//! `PIL.ImageOps.exif_transpose` turn it, as we do here, for training and serving alike, so
//! the two can never disagree. The tag is read from JPEG APP1 and PNG eXIf chunks; a missing
//! or malformed tag means "as stored".

use std::io::{BufRead, Cursor, Seek};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::pixels::to_rgb;

/// The formats this build decodes.
pub const FORMATS: &str = "PNG, JPEG";

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
    /// The service's limits: 32 MiB, 40 megapixels, 16384 pixels a side.
    fn default() -> Self {
        Self {
            max_bytes: 32 << 20,
            max_pixels: 40_000_000,
            max_side: 16_384,
        }
    }
}

impl Limits {
    /// Training's limits: PIL's decompression-bomb bound (`2 * Image.MAX_IMAGE_PIXELS`, over
    /// which `Image.open`, and so torchvision's loader, raises), JPEG's largest side, 1 GiB.
    pub const TRAINING: Self = Self {
        max_bytes: 1 << 30,
        max_pixels: 178_956_970,
        max_side: 65_535,
    };
}

/// Why bytes are not an image we decode; the caller names the file or input.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty (0 bytes), expected an image")]
    Empty,
    /// Over a limit, as the file or its header declares.
    #[error("{0}")]
    TooLarge(String),
    /// Not PNG or JPEG, or corrupt or truncated.
    #[error("{0}")]
    Bad(String),
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
}

/// What a header declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// PNG or JPEG.
    pub format: ImageFormat,
    /// Width as stored, before any EXIF turn.
    pub width: u32,
    /// Height as stored.
    pub height: u32,
}

/// Reads only the header of an encoded image of `len` bytes and checks it against `limits`:
/// empty, over the byte limit, not PNG or JPEG, unreadable header, too many pixels.
pub fn check<R: BufRead + Seek>(
    reader: R,
    len: u64,
    limits: &Limits,
) -> Result<Header, DecodeError> {
    if len == 0 {
        return Err(DecodeError::Empty);
    }
    if len > limits.max_bytes as u64 {
        return Err(DecodeError::TooLarge(format!(
            "{len} bytes is over the limit of {} bytes",
            limits.max_bytes
        )));
    }
    let reader = ImageReader::new(reader).with_guessed_format()?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Png | ImageFormat::Jpeg)) => f,
        Some(f) => {
            return Err(DecodeError::Bad(format!(
                "{f:?} images are not supported; send {FORMATS}"
            )));
        }
        None => {
            return Err(DecodeError::Bad(format!(
                "not an image this build reads ({FORMATS}): unrecognised content"
            )));
        }
    };
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| DecodeError::Bad(format!("corrupt or truncated {format:?} header: {e}")))?;
    let pixels = width as u64 * height as u64;
    if width > limits.max_side || height > limits.max_side || pixels > limits.max_pixels {
        return Err(DecodeError::TooLarge(format!(
            "{width}x{height} image ({:.1} megapixels) is over the limit of {:.1} megapixels \
             and {} pixels a side",
            pixels as f64 / 1e6,
            limits.max_pixels as f64 / 1e6,
            limits.max_side
        )));
    }
    Ok(Header {
        format,
        width,
        height,
    })
}

/// Decodes `bytes` within `limits`: [`check`], then the pixels, turned upright by their EXIF
/// orientation and converted by [`to_rgb`].
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<RgbImage, DecodeError> {
    let Header {
        format,
        width,
        height,
    } = check(Cursor::new(bytes), bytes.len() as u64, limits)?;
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(DecodeError::Bad(
            "corrupt or truncated Jpeg: the data ends before the end-of-image marker".into(),
        ));
    }
    let corrupt =
        |e: image::ImageError| DecodeError::Bad(format!("corrupt or truncated {format:?}: {e}"));
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    // The decoded buffer (up to 16 bytes a pixel for 16-bit RGBA) plus the decoder's own.
    let pixels = u64::from(width) * u64::from(height);
    l.max_alloc = Some(pixels.saturating_mul(16).saturating_add(64 << 20));
    reader.limits(l);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    // A malformed EXIF block reads as "no orientation", not as a broken image.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    let mut upright = DynamicImage::ImageRgb8(to_rgb(img));
    upright.apply_orientation(orientation);
    match upright {
        DynamicImage::ImageRgb8(rgb) => Ok(rgb),
        other => Ok(other.to_rgb8()),
    }
}

/// Reads and decodes an image file within `limits`; the size is checked before reading.
pub fn decode_file(path: &Path, limits: &Limits) -> Result<RgbImage, DecodeError> {
    let len = std::fs::metadata(path)?.len();
    if len > limits.max_bytes as u64 {
        return Err(DecodeError::TooLarge(format!(
            "{len} bytes is over the limit of {} bytes",
            limits.max_bytes
        )));
    }
    decode(&std::fs::read(path)?, limits)
}

/// [`check`] on a file's header, reading no more of it than the decoder's header needs.
pub fn check_file(path: &Path, limits: &Limits) -> Result<Header, DecodeError> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    check(std::io::BufReader::new(file), len, limits)
}

/// Whether a JPEG's entropy-coded data ends with the end-of-image marker. `image` decodes a
/// truncated JPEG without an error (the missing rows come out grey, as in a browser); we refuse
/// it rather than learn from or classify half an image, as PIL does unless told
/// `LOAD_TRUNCATED_IMAGES`. The header segments are skipped by their lengths, so an EXIF
/// thumbnail's own end marker does not count.
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
    use image::metadata::Orientation;
    use image::{GrayImage, Rgb};

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    /// A minimal EXIF block (TIFF, little-endian, one IFD entry): orientation `o`.
    fn exif(o: u16) -> Vec<u8> {
        let mut t = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
        t.extend(o.to_le_bytes());
        t.extend([0, 0, 0, 0, 0, 0]);
        t
    }

    /// `jpeg` with an APP1 EXIF segment after SOI.
    fn with_exif(jpeg: &[u8], exif: &[u8]) -> Vec<u8> {
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(exif);
        let mut out = jpeg[..2].to_vec();
        out.extend([0xFF, 0xE1]);
        out.extend(((app1.len() + 2) as u16).to_be_bytes());
        out.extend(app1);
        out.extend(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied_and_garbage_ignored() {
        let img = RgbImage::from_fn(16, 8, |x, y| Rgb([(x * 16) as u8, (y * 32) as u8, 0]));
        let jpeg = encode(&DynamicImage::ImageRgb8(img), ImageFormat::Jpeg);
        let plain = decode(&jpeg, &Limits::default()).unwrap();
        for o in 1..=8u16 {
            let got = decode(&with_exif(&jpeg, &exif(o)), &Limits::default()).unwrap();
            let mut want = DynamicImage::ImageRgb8(plain.clone());
            want.apply_orientation(Orientation::from_exif(o as u8).unwrap());
            assert!(got == want.to_rgb8(), "orientation {o}");
            assert_eq!(got.dimensions(), if o >= 5 { (8, 16) } else { (16, 8) });
        }
        for junk in [&b"II*\0\xff\xff\xff\xff"[..], b"", &exif(9)] {
            let got = decode(&with_exif(&jpeg, junk), &Limits::default()).unwrap();
            assert!(got == plain);
        }
    }

    #[test]
    fn the_header_is_refused_before_decoding() {
        let bytes = encode(
            &DynamicImage::ImageLuma8(GrayImage::new(300, 200)),
            ImageFormat::Png,
        );
        let small = Limits {
            max_pixels: 59_999,
            ..Limits::default()
        };
        let e = decode(&bytes, &small).unwrap_err();
        assert!(
            matches!(&e, DecodeError::TooLarge(m) if m.contains("300x200")),
            "{e}"
        );
        assert!(decode(&bytes, &Limits::TRAINING).is_ok());
        assert!(matches!(
            decode(b"", &Limits::default()),
            Err(DecodeError::Empty)
        ));
    }
}
