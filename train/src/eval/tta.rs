//! Test-time augmentation: the views of an image a prediction averages over (their softmax
//! probabilities), each made by the model's own evaluation transform.

use image::DynamicImage;
use rekindle_model::Preprocess;
use rekindle_model::preprocess::{eval_transform, normalize_into, resize_shorter};
use serde::Serialize;

/// Which views of each image are classified.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Tta {
    /// The evaluation transform alone.
    #[default]
    None,
    /// It and its mirror image.
    Flip,
    /// torchvision's `FiveCrop` of the resized image: four corners and the centre.
    FiveCrop,
}

impl Tta {
    /// Views per image.
    pub fn views(self) -> usize {
        match self {
            Tta::None => 1,
            Tta::Flip => 2,
            Tta::FiveCrop => 5,
        }
    }

    /// Appends the views of `img` to `out` as normalised CHW floats of side `p.crop`.
    pub fn transform(self, img: &DynamicImage, p: &Preprocess, out: &mut Vec<f32>) {
        match self {
            Tta::None => out.extend(eval_transform(img, p)),
            Tta::Flip => {
                let view = eval_transform(img, p);
                out.extend_from_slice(&view);
                out.extend(mirrored(&view, p.crop));
            }
            Tta::FiveCrop => {
                let resized = resize_shorter(img, p.resize as u32);
                for (x, y) in five_corners(resized.width(), resized.height(), p.crop as u32) {
                    normalize_into(
                        &resized.crop_imm(x, y, p.crop as u32, p.crop as u32),
                        p,
                        out,
                    );
                }
            }
        }
    }
}

/// A CHW view flipped left to right.
fn mirrored(view: &[f32], side: usize) -> Vec<f32> {
    view.chunks(side)
        .flat_map(|row| row.iter().rev().copied())
        .collect()
}

/// Top-left corners of torchvision's five crops of a `w` x `h` image: top-left, top-right,
/// bottom-left, bottom-right and the centre (rounded as `CenterCrop` rounds). A crop larger
/// than the image is clamped to it (the resize makes the shorter side at least the crop).
pub fn five_corners(w: u32, h: u32, crop: u32) -> [(u32, u32); 5] {
    let (dx, dy) = (w.saturating_sub(crop), h.saturating_sub(crop));
    let centre = |d: u32| (d as f64 / 2.0).round_ties_even() as u32;
    [(0, 0), (dx, 0), (0, dy), (dx, dy), (centre(dx), centre(dy))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn plain(resize: usize, crop: usize) -> Preprocess {
        Preprocess {
            resize,
            crop,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }

    #[test]
    fn five_crops_are_the_corners_and_the_centre() {
        assert_eq!(
            five_corners(10, 7, 4),
            [(0, 0), (6, 0), (0, 3), (6, 3), (3, 2)]
        );
        // A 6 x 4 image whose pixel value is its x + 10 y: each crop starts where it should.
        let img = RgbImage::from_fn(6, 4, |x, y| Rgb([(x + 10 * y) as u8, 0, 0]));
        let mut out = Vec::new();
        Tta::FiveCrop.transform(&DynamicImage::ImageRgb8(img), &plain(4, 2), &mut out);
        assert_eq!(out.len(), 5 * 3 * 4);
        let firsts: Vec<f32> = out.chunks(12).map(|v| v[0] * 255.0).collect();
        let want = [0.0, 4.0, 20.0, 24.0, 12.0];
        for (a, b) in firsts.iter().zip(want) {
            assert!((a - b).abs() < 1e-3, "{firsts:?}");
        }
    }

    #[test]
    fn the_flip_view_mirrors_each_row() {
        let img = RgbImage::from_fn(3, 3, |x, y| Rgb([(x + 3 * y) as u8, 0, 0]));
        let mut out = Vec::new();
        Tta::Flip.transform(&DynamicImage::ImageRgb8(img), &plain(3, 3), &mut out);
        let red =
            |v: &[f32]| -> Vec<u8> { v[..9].iter().map(|p| (p * 255.0).round() as u8).collect() };
        assert_eq!(red(&out[..27]), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(red(&out[27..]), [2, 1, 0, 5, 4, 3, 8, 7, 6]);
        assert_eq!(Tta::Flip.views(), 2);
    }
}
