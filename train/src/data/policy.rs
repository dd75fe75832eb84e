//! The augmentation policies after the random crop: torchvision's `RandAugment` and
//! `TrivialAugmentWide` (their operations, magnitude bins and signs), `ColorJitter`, and
//! `RandomErasing` on the normalised pixels. Every draw comes from the image's own seeded
//! stream, so a resumed run sees the same pixels.

use image::RgbImage;
use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::data::ops::{self, Op};

/// Magnitude bins of both policies (torchvision's `num_magnitude_bins` default).
pub const BINS: usize = 31;

/// `data.auto_augment`: an automatic augmentation policy.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum AutoAugment {
    /// None.
    #[default]
    None,
    /// RandAugment (Cubuk et al. 2020): `rand_augment_ops` operations at magnitude
    /// `rand_augment_magnitude` of 30.
    RandAugment,
    /// TrivialAugment (Müller and Hutter 2021), wide space: one operation at a random magnitude.
    TrivialAugmentWide,
}

/// The operations of the policies, in torchvision's order.
const NAMES: [&str; 14] = [
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
];

/// torchvision's `torch.linspace(start, end, BINS)` in single precision, entry `i`.
fn linspace(start: f32, end: f32, i: usize) -> f64 {
    let step = (end - start) / (BINS - 1) as f32;
    let half = BINS / 2;
    let v = if i < half {
        start + step * i as f32
    } else {
        end - step * (BINS - 1 - i) as f32
    };
    f64::from(v)
}

impl AutoAugment {
    /// Operation `index` of [`NAMES`] at magnitude bin `bin`, unsigned, for an image of
    /// `w` x `h`, in this policy's space (RandAugment's for `None`, which draws nothing).
    fn op(self, index: usize, bin: usize, w: u32, h: u32) -> Op {
        let wide = self == AutoAugment::TrivialAugmentWide;
        let (shear, enhance, rotate) = if wide {
            (0.99, 0.99, 135.0)
        } else {
            (0.3, 0.9, 30.0)
        };
        let (tx, ty) = if wide {
            (32.0, 32.0)
        } else {
            (150.0 / 331.0 * w as f32, 150.0 / 331.0 * h as f32)
        };
        let posterize_div = if wide { 5.0 } else { 7.5 };
        match NAMES[index] {
            "ShearX" => Op::ShearX(linspace(0.0, shear, bin)),
            "ShearY" => Op::ShearY(linspace(0.0, shear, bin)),
            "TranslateX" => Op::TranslateX(linspace(0.0, tx, bin)),
            "TranslateY" => Op::TranslateY(linspace(0.0, ty, bin)),
            "Rotate" => Op::Rotate(linspace(0.0, rotate, bin)),
            "Brightness" => Op::Brightness(linspace(0.0, enhance, bin)),
            "Color" => Op::Color(linspace(0.0, enhance, bin)),
            "Contrast" => Op::Contrast(linspace(0.0, enhance, bin)),
            "Sharpness" => Op::Sharpness(linspace(0.0, enhance, bin)),
            // 8 - round(bin / divisor), rounding half to even as torch.round does.
            "Posterize" => Op::Posterize(8 - (bin as f64 / posterize_div).round_ties_even() as u32),
            "Solarize" => Op::Solarize(linspace(255.0, 0.0, bin)),
            "AutoContrast" => Op::AutoContrast,
            "Equalize" => Op::Equalize,
            _ => Op::Identity,
        }
    }

    /// The operations the policy draws for one image (`ops` and `magnitude` are RandAugment's).
    pub fn draw(self, ops: usize, magnitude: usize, w: u32, h: u32, rng: &mut impl Rng) -> Vec<Op> {
        let count = match self {
            AutoAugment::None => 0,
            AutoAugment::RandAugment => ops,
            AutoAugment::TrivialAugmentWide => 1,
        };
        (0..count)
            .map(|_| {
                let index = rng.random_range(0..NAMES.len());
                let bin = match self {
                    AutoAugment::TrivialAugmentWide => rng.random_range(0..BINS),
                    _ => magnitude.min(BINS - 1),
                };
                let op = self.op(index, bin, w, h);
                if signed(op) && rng.random_range(0..2) == 1 {
                    negate(op)
                } else {
                    op
                }
            })
            .collect()
    }
}

/// Whether the operation's magnitude takes a random sign.
fn signed(op: Op) -> bool {
    matches!(
        op,
        Op::ShearX(_)
            | Op::ShearY(_)
            | Op::TranslateX(_)
            | Op::TranslateY(_)
            | Op::Rotate(_)
            | Op::Brightness(_)
            | Op::Color(_)
            | Op::Contrast(_)
            | Op::Sharpness(_)
    )
}

fn negate(op: Op) -> Op {
    match op {
        Op::ShearX(m) => Op::ShearX(-m),
        Op::ShearY(m) => Op::ShearY(-m),
        Op::TranslateX(m) => Op::TranslateX(-m),
        Op::TranslateY(m) => Op::TranslateY(-m),
        Op::Rotate(m) => Op::Rotate(-m),
        Op::Brightness(m) => Op::Brightness(-m),
        Op::Color(m) => Op::Color(-m),
        Op::Contrast(m) => Op::Contrast(-m),
        Op::Sharpness(m) => Op::Sharpness(-m),
        other => other,
    }
}

/// What to write into an erased box.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ErasingFill {
    /// Zeros (torchvision's default `value=0`): the dataset's mean colour once normalised.
    #[default]
    Zero,
    /// Standard normal noise per value (torchvision's `value="random"`, timm's `mode="pixel"`).
    Noise,
}

/// The policies of a training run after its random crop and flip.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// The automatic augmentation.
    pub auto: AutoAugment,
    /// RandAugment's operations per image.
    pub ops: usize,
    /// RandAugment's magnitude bin, 0..=30.
    pub magnitude: usize,
    /// `ColorJitter(brightness, contrast, saturation, hue)`; zeros leave a property alone.
    pub jitter: [f64; 4],
    /// Probability of `RandomErasing` (scale 0.02-0.33, ratio 0.3-3.3).
    pub erasing: f64,
    /// What erased boxes hold.
    pub erasing_fill: ErasingFill,
}

impl Policy {
    /// Whether the policy leaves every image as it is (and draws nothing).
    pub fn is_identity(&self) -> bool {
        self.auto == AutoAugment::None
            && self.jitter.iter().all(|j| *j <= 0.0)
            && self.erasing <= 0.0
    }

    /// The automatic augmentation, then the colour jitter, on an 8-bit image.
    pub fn apply(&self, img: RgbImage, rng: &mut impl Rng) -> RgbImage {
        let (w, h) = img.dimensions();
        let mut img = img;
        for op in self.auto.draw(self.ops, self.magnitude, w, h, rng) {
            img = op.apply(&img);
        }
        if self.jitter.iter().any(|j| *j > 0.0) {
            img = jitter(&img, self.jitter, rng);
        }
        img
    }

    /// `RandomErasing` on one normalised CHW image of side `side`, in place.
    pub fn erase(&self, pixels: &mut [f32], side: usize, rng: &mut impl Rng) {
        if self.erasing <= 0.0 || rng.random::<f64>() >= self.erasing {
            return;
        }
        let Some((top, left, h, w)) = erasing_box(side, side, rng) else {
            return;
        };
        for c in 0..3 {
            for y in top..top + h {
                let row = c * side * side + y * side;
                for v in &mut pixels[row + left..row + left + w] {
                    *v = match self.erasing_fill {
                        ErasingFill::Zero => 0.0,
                        ErasingFill::Noise => normal(rng),
                    };
                }
            }
        }
    }
}

/// torchvision's `ColorJitter`: brightness, contrast, saturation and hue factors drawn from
/// their ranges, applied in a random order.
pub fn jitter(img: &RgbImage, [b, c, s, h]: [f64; 4], rng: &mut impl Rng) -> RgbImage {
    let mut order = [0usize, 1, 2, 3];
    order.shuffle(rng);
    let mut factor = |v: f64| (v > 0.0).then(|| rng.random_range((1.0 - v).max(0.0)..=1.0 + v));
    let (fb, fc, fs) = (factor(b), factor(c), factor(s));
    let fh = (h > 0.0).then(|| rng.random_range(-h..=h));
    let mut img = img.clone();
    for k in order {
        img = match (k, fb, fc, fs, fh) {
            (0, Some(f), ..) => ops::brightness(&img, f),
            (1, _, Some(f), ..) => ops::contrast(&img, f),
            (2, _, _, Some(f), _) => ops::saturation(&img, f),
            (3, .., Some(f)) => ops::hue(&img, f),
            _ => img,
        };
    }
    img
}

/// `RandomErasing.get_params` (scale 0.02-0.33 of the area, log-uniform ratio 0.3-3.3, ten
/// tries): `(top, left, height, width)`, or none when no try fits.
pub fn erasing_box(
    img_h: usize,
    img_w: usize,
    rng: &mut impl Rng,
) -> Option<(usize, usize, usize, usize)> {
    let area = (img_h * img_w) as f64;
    let (lo, hi) = (0.3f64.ln(), 3.3f64.ln());
    for _ in 0..10 {
        let erase = area * rng.random_range(0.02..0.33);
        let ratio = rng.random_range(lo..hi).exp();
        let h = (erase * ratio).sqrt().round() as usize;
        let w = (erase / ratio).sqrt().round() as usize;
        if !(h < img_h && w < img_w) {
            continue;
        }
        let top = rng.random_range(0..=img_h - h);
        let left = rng.random_range(0..=img_w - w);
        return Some((top, left, h, w));
    }
    None
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn magnitude_bins_are_torchvisions() {
        let ra = AutoAugment::RandAugment;
        // linspace(0, 0.3, 31)[9] and friends; posterize 8 - round(9 / 7.5) = 7.
        assert!(matches!(ra.op(1, 9, 224, 224), Op::ShearX(m) if (m - 0.09).abs() < 1e-6));
        assert!(matches!(ra.op(3, 30, 331, 100), Op::TranslateX(m) if (m - 150.0).abs() < 1e-4));
        assert!(
            matches!(ra.op(4, 30, 331, 100), Op::TranslateY(m) if (m - 150.0 * 100.0 / 331.0).abs() < 1e-4)
        );
        assert_eq!(ra.op(10, 9, 8, 8), Op::Posterize(7));
        assert_eq!(ra.op(10, 30, 8, 8), Op::Posterize(4));
        assert!(matches!(ra.op(11, 10, 8, 8), Op::Solarize(t) if t == 170.0));
        let ta = AutoAugment::TrivialAugmentWide;
        assert!(matches!(ta.op(5, 30, 8, 8), Op::Rotate(m) if m == 135.0));
        assert_eq!(ta.op(10, 30, 8, 8), Op::Posterize(2));
        assert_eq!(ta.op(10, 0, 8, 8), Op::Posterize(8));
        assert_eq!(ta.op(13, 7, 8, 8), Op::Equalize);
    }

    #[test]
    fn policies_draw_every_operation_and_both_signs() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut seen = std::collections::HashSet::new();
        let (mut negative, mut total) = (0, 0);
        for _ in 0..3000 {
            let ops = AutoAugment::RandAugment.draw(2, 9, 32, 32, &mut rng);
            assert_eq!(ops.len(), 2);
            for op in ops {
                seen.insert(
                    format!("{op:?}")
                        .split('(')
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                );
                if let Op::Rotate(m) = op {
                    total += 1;
                    negative += usize::from(m < 0.0);
                    assert_eq!(m.abs(), 9.0);
                }
            }
        }
        assert_eq!(seen.len(), 14, "{seen:?}");
        // Rotate is 1 of 14 ops: ~430 draws, half of them negative.
        assert!(
            (negative as f64 / total as f64 - 0.5).abs() < 0.1,
            "{negative}/{total}"
        );
        assert_eq!(
            AutoAugment::TrivialAugmentWide
                .draw(2, 9, 8, 8, &mut rng)
                .len(),
            1
        );
        assert!(AutoAugment::None.draw(2, 9, 8, 8, &mut rng).is_empty());
    }

    #[test]
    fn erasing_boxes_fit_and_cover_the_right_share() {
        let mut rng = StdRng::seed_from_u64(9);
        for _ in 0..500 {
            if let Some((t, l, h, w)) = erasing_box(32, 32, &mut rng) {
                assert!(t + h <= 32 && l + w <= 32 && h < 32 && w < 32);
                let share = (h * w) as f64 / 1024.0;
                // Rounding each side moves the area a little past [0.02, 0.33].
                assert!((0.01..0.40).contains(&share), "{share}");
            }
        }
        let policy = Policy {
            erasing: 1.0,
            ..Default::default()
        };
        let mut px = vec![1.0f32; 3 * 16 * 16];
        policy.erase(&mut px, 16, &mut StdRng::seed_from_u64(2));
        let zeros = px.iter().filter(|v| **v == 0.0).count();
        assert!(zeros > 0 && zeros % 3 == 0, "{zeros}");
    }

    #[test]
    fn jitter_with_nothing_to_do_is_the_identity() {
        let img = RgbImage::from_fn(5, 4, |x, y| Rgb([(x * 40) as u8, (y * 50) as u8, 90]));
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(jitter(&img, [0.0; 4], &mut rng), img);
        let policy = Policy::default();
        assert!(policy.is_identity());
        assert_eq!(policy.apply(img.clone(), &mut rng), img);
        let changed = jitter(&img, [0.4, 0.4, 0.4, 0.1], &mut rng);
        assert_ne!(changed, img);
    }
}
