//! One image file: decoded as training and inference decode it, its header checked, and the
//! warning that counts the files left out.

use std::path::{Path, PathBuf};

use image::DynamicImage;
use rekindle_model::decode::Limits;

/// Decodes an image file to upright 8-bit RGB, with the reason when it cannot: the model
/// crate's [`rekindle_model::decode::decode_file`] within [`Limits::TRAINING`], the decoding
/// inference uses too, so both see the same pixels (EXIF orientation, pixel rules).
pub fn decode_file(path: &Path) -> Result<DynamicImage, String> {
    rekindle_model::decode::decode_file(path, &Limits::TRAINING)
        .map(DynamicImage::ImageRgb8)
        .map_err(|e| e.to_string())
}

/// Reads only the header of an image file: empty, not PNG or JPEG, unreadable (a broken or
/// looping symbolic link), or over [`Limits::TRAINING`] by its declared size; the reason.
pub fn check_file(path: &Path) -> Result<(), String> {
    rekindle_model::decode::check_file(path, &Limits::TRAINING)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A warning for files left out: the count, and the first few with their reasons.
pub fn skip_warning(what: &str, files: &[(PathBuf, String)]) -> Option<String> {
    const SHOWN: usize = 3;
    if files.is_empty() {
        return None;
    }
    let mut msg = format!("warning: {what} {} image file(s):", files.len());
    for (path, why) in files.iter().take(SHOWN) {
        msg.push_str(&format!("\n  {}: {why}", path.display()));
    }
    if files.len() > SHOWN {
        msg.push_str(&format!("\n  and {} more", files.len() - SHOWN));
    }
    Some(msg)
}
