//! Training augmentation: torchvision's `RandomResizedCrop` and `RandomHorizontalFlip`,
//! driven by an explicit RNG so that an image's augmentation depends only on the seed,
//! the epoch and its position, and a resumed run sees the same pixels.

use image::DynamicImage;
use image::imageops::FilterType;
use rand::Rng;

/// Parameters of the training transform.
#[derive(Clone, Copy, Debug)]
pub struct Augment {
    /// Output side.
    pub size: u32,
    /// Smallest area fraction of the crop.
    pub scale_min: f64,
    /// Probability of a horizontal flip.
    pub hflip: f64,
}

impl Augment {
    /// Random crop of random area and aspect ratio, resized to `size`, maybe mirrored.
    pub fn apply(&self, img: &DynamicImage, rng: &mut impl Rng) -> DynamicImage {
        let (x, y, w, h) = self.crop_box(img.width(), img.height(), rng);
        let out = img
            .crop_imm(x, y, w, h)
            .resize_exact(self.size, self.size, FilterType::Triangle);
        if rng.random::<f64>() < self.hflip {
            out.fliph()
        } else {
            out
        }
    }

    /// torchvision's `RandomResizedCrop.get_params`: ten tries at an area in
    /// `[scale_min, 1]` and a log-uniform ratio in `[3/4, 4/3]`, else the centred whole image,
    /// its aspect ratio clamped into that range.
    pub fn crop_box(&self, width: u32, height: u32, rng: &mut impl Rng) -> (u32, u32, u32, u32) {
        let area = (width * height) as f64;
        let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
        for _ in 0..10 {
            let target = area * rng.random_range(self.scale_min..=1.0);
            let ratio = rng.random_range(lo..=hi).exp();
            let w = (target * ratio).sqrt().round() as u32;
            let h = (target / ratio).sqrt().round() as u32;
            if w > 0 && h > 0 && w <= width && h <= height {
                let x = rng.random_range(0..=width - w);
                let y = rng.random_range(0..=height - h);
                return (x, y, w, h);
            }
        }
        fallback_box(width, height, (3.0 / 4.0, 4.0 / 3.0))
    }
}

/// torchvision's fallback when no try fits: the whole image if its aspect ratio is in range,
/// else the largest centred box whose ratio is the nearest bound.
fn fallback_box(width: u32, height: u32, (min, max): (f64, f64)) -> (u32, u32, u32, u32) {
    let in_ratio = f64::from(width) / f64::from(height);
    let (w, h) = if in_ratio < min {
        (
            width,
            ((f64::from(width) / min).round() as u32).clamp(1, height),
        )
    } else if in_ratio > max {
        (
            ((f64::from(height) * max).round() as u32).clamp(1, width),
            height,
        )
    } else {
        (width, height)
    };
    ((width - w) / 2, (height - h) / 2, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    proptest! {
        #[test]
        fn crop_stays_inside_and_respects_scale(w in 1u32..300, h in 1u32..300, seed: u64, min in 0.05f64..1.0) {
            let aug = Augment { size: 8, scale_min: min, hflip: 0.5 };
            let mut rng = StdRng::seed_from_u64(seed);
            let (x, y, cw, ch) = aug.crop_box(w, h, &mut rng);
            prop_assert!(cw >= 1 && ch >= 1 && x + cw <= w && y + ch <= h);
        }
    }

    #[test]
    fn fallback_is_torchvisions() {
        // torchvision 0.24 `RandomResizedCrop.get_params(img, scale=(1, 1))` on 300x20 and 20x300
        // images (every try misses) gives (i, j, h, w) = (0, 136, 20, 27) and (136, 0, 27, 20).
        assert_eq!(fallback_box(300, 20, (0.75, 4.0 / 3.0)), (136, 0, 27, 20));
        assert_eq!(fallback_box(20, 300, (0.75, 4.0 / 3.0)), (0, 136, 20, 27));
        // An image whose ratio is in range falls back to all of itself.
        assert_eq!(fallback_box(30, 28, (0.75, 4.0 / 3.0)), (0, 0, 30, 28));
    }

    #[test]
    fn same_seed_same_pixels() {
        let img = DynamicImage::ImageLuma8(image::GrayImage::from_fn(28, 28, |x, y| {
            image::Luma([(x * 9 + y) as u8])
        }));
        let aug = Augment {
            size: 16,
            scale_min: 0.3,
            hflip: 0.5,
        };
        let a = aug.apply(&img, &mut StdRng::seed_from_u64(7));
        let b = aug.apply(&img, &mut StdRng::seed_from_u64(7));
        let c = aug.apply(&img, &mut StdRng::seed_from_u64(8));
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_ne!(a.as_bytes(), c.as_bytes());
        assert_eq!((a.width(), a.height()), (16, 16));
    }
}
