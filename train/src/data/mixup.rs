//! Mixup and CutMix over a whole batch, as timm's `Mixup` in its default `mode="batch"`: with
//! probability `prob` the batch is mixed with itself reversed, either blended (mixup, weight
//! lam ~ Beta(mixup_alpha)) or with a box pasted in (cutmix, lam ~ Beta(cutmix_alpha), or a
//! box side drawn from `cutmix_minmax`), and the targets become lam * y + (1 - lam) * y_reversed.
//! Written here because no Rust crate does it; the random draws come from the loader's seeded
//! stream, so a resumed run mixes the same batches the same way.

use rand::Rng;
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};

use crate::config::check::{
    End::{Closed, Open},
    in_range,
};

/// `[mixup]`: timm's `Mixup` arguments (all off by default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MixupSection {
    /// `mixup_alpha`: lam ~ Beta(a, a) for blending; 0: no mixup.
    pub mixup_alpha: f64,
    /// `cutmix_alpha`: lam ~ Beta(a, a) for the box's area; 0: no cutmix.
    pub cutmix_alpha: f64,
    /// `cutmix_minmax`: the box's sides as fractions of the image's, drawn in [min, max),
    /// instead of from `cutmix_alpha` (turns cutmix on).
    pub cutmix_minmax: Option<[f64; 2]>,
    /// `prob`: the probability that a batch is mixed at all.
    pub prob: f64,
    /// `switch_prob`: with both on, the probability of cutmix rather than mixup.
    pub switch_prob: f64,
    /// `correct_lam`: lam from the area the box keeps after clipping at the image's border.
    pub correct_lam: bool,
}

impl Default for MixupSection {
    fn default() -> Self {
        Self {
            mixup_alpha: 0.0,
            cutmix_alpha: 0.0,
            cutmix_minmax: None,
            prob: 1.0,
            switch_prob: 0.5,
            correct_lam: true,
        }
    }
}

impl MixupSection {
    /// Whether any batch gets mixed.
    pub fn active(&self) -> bool {
        self.prob > 0.0
            && (self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0 || self.cutmix_minmax.is_some())
    }

    /// Rejects negative alphas, probabilities outside [0, 1] and an empty box range.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("mixup.mixup_alpha", self.mixup_alpha),
            ("mixup.cutmix_alpha", self.cutmix_alpha),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} = {v}: must be 0 (off) or more"));
            }
        }
        in_range("mixup.prob", self.prob, Closed(0.0), Closed(1.0))?;
        in_range(
            "mixup.switch_prob",
            self.switch_prob,
            Closed(0.0),
            Closed(1.0),
        )?;
        if let Some([lo, hi]) = self.cutmix_minmax {
            in_range("mixup.cutmix_minmax[0]", lo, Open(0.0), Open(1.0))?;
            in_range("mixup.cutmix_minmax[1]", hi, Open(0.0), Closed(1.0))?;
            if lo >= hi {
                return Err(format!(
                    "mixup.cutmix_minmax = [{lo}, {hi}]: the first must be below the second"
                ));
            }
        }
        Ok(())
    }
}

/// How one batch is mixed with itself reversed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mix {
    /// The weight of each image's own label (1: not mixed).
    pub lam: f64,
    /// Cutmix's box `(top, bottom, left, right)`, half-open, pasted from the reversed batch;
    /// none for a blend.
    pub cut: Option<(usize, usize, usize, usize)>,
}

impl Mix {
    /// Nothing mixed.
    pub const NONE: Self = Self {
        lam: 1.0,
        cut: None,
    };
}

/// A batch mixer for images of `side` x `side` pixels and `classes` classes.
#[derive(Clone, Debug)]
pub struct Mixup {
    /// The settings.
    pub cfg: MixupSection,
    /// Number of classes of the targets.
    pub classes: usize,
}

impl Mixup {
    /// timm's `_params_per_batch`, then the box for cutmix (`cutmix_bbox_and_lam`).
    pub fn draw(&self, side: usize, rng: &mut impl Rng) -> Mix {
        let c = &self.cfg;
        let cutmix_alpha = if c.cutmix_minmax.is_some() {
            1.0
        } else {
            c.cutmix_alpha
        };
        if !(self.cfg.active() && rng.random::<f64>() < c.prob) {
            return Mix::NONE;
        }
        let cut = if c.mixup_alpha > 0.0 && cutmix_alpha > 0.0 {
            rng.random::<f64>() < c.switch_prob
        } else {
            c.mixup_alpha <= 0.0
        };
        let alpha = if cut { cutmix_alpha } else { c.mixup_alpha };
        let lam = beta(alpha, rng);
        if !cut {
            return Mix { lam, cut: None };
        }
        let (top, bottom, left, right) = match c.cutmix_minmax {
            Some(minmax) => box_minmax(side, minmax, rng),
            None => box_for_lam(side, lam, rng),
        };
        let lam = if c.correct_lam || c.cutmix_minmax.is_some() {
            1.0 - ((bottom - top) * (right - left)) as f64 / (side * side) as f64
        } else {
            lam
        };
        Mix {
            lam,
            cut: Some((top, bottom, left, right)),
        }
    }
}

/// A draw from Beta(alpha, alpha).
fn beta(alpha: f64, rng: &mut impl Rng) -> f64 {
    // alpha > 0 is checked by the config; Beta::new only fails on a non-positive shape.
    Beta::new(alpha, alpha).map_or(1.0, |b| b.sample(rng))
}

/// timm's `rand_bbox` (no margin): a box of side `side * sqrt(1 - lam)` centred at a uniform
/// pixel, clipped at the border.
pub fn box_for_lam(side: usize, lam: f64, rng: &mut impl Rng) -> (usize, usize, usize, usize) {
    let cut = (side as f64 * (1.0 - lam).sqrt()) as usize;
    let cy = rng.random_range(0..side);
    let cx = rng.random_range(0..side);
    let clip = |centre: usize| (centre.saturating_sub(cut / 2), (centre + cut / 2).min(side));
    let ((top, bottom), (left, right)) = (clip(cy), clip(cx));
    (top, bottom, left, right)
}

/// timm's `rand_bbox_minmax`: sides uniform in `[side * min, side * max)`, placed uniformly
/// inside the image.
pub fn box_minmax(
    side: usize,
    [lo, hi]: [f64; 2],
    rng: &mut impl Rng,
) -> (usize, usize, usize, usize) {
    let (lo, hi) = ((side as f64 * lo) as usize, (side as f64 * hi) as usize);
    // numpy refuses an empty range; at tiny sizes the range is widened to one value.
    let mut side_in = || {
        let s = rng.random_range(lo..hi.max(lo + 1)).min(side - 1);
        let start = rng.random_range(0..side - s);
        (start, start + s)
    };
    let (top, bottom) = side_in();
    let (left, right) = side_in();
    (top, bottom, left, right)
}

/// Mixes `pixels` (`n` images of 3 x `side` x `side`, in place) with the batch reversed.
pub fn mix_images(mix: &Mix, pixels: &mut [f32], n: usize, side: usize) {
    if mix.lam == 1.0 && mix.cut.is_none() {
        return;
    }
    let original = pixels.to_vec();
    let image = 3 * side * side;
    for i in 0..n {
        let (own, other) = (i * image, (n - 1 - i) * image);
        match mix.cut {
            None => {
                let lam = mix.lam as f32;
                for k in 0..image {
                    pixels[own + k] = original[own + k] * lam + original[other + k] * (1.0 - lam);
                }
            }
            Some((top, bottom, left, right)) => {
                for ch in 0..3 {
                    for y in top..bottom {
                        let row = ch * side * side + y * side;
                        let span = row + left..row + right;
                        pixels[own + span.start..own + span.end]
                            .copy_from_slice(&original[other + span.start..other + span.end]);
                    }
                }
            }
        }
    }
}

/// timm's `mixup_target` without smoothing (the loss smooths): `[n, classes]` probabilities.
pub fn mix_targets(mix: &Mix, labels: &[i64], classes: usize) -> Vec<f32> {
    let n = labels.len();
    let mut out = vec![0f32; n * classes];
    for (i, &y) in labels.iter().enumerate() {
        let other = labels[n - 1 - i];
        out[i * classes + y as usize] += mix.lam as f32;
        out[i * classes + other as usize] += (1.0 - mix.lam) as f32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn batch(n: usize, side: usize) -> Vec<f32> {
        (0..n * 3 * side * side)
            .map(|k| (k as f32 * 0.37).sin())
            .collect()
    }

    #[test]
    fn a_blend_is_the_formula() {
        let (n, side) = (3, 4);
        let x = batch(n, side);
        let mut mixed = x.clone();
        let mix = Mix {
            lam: 0.7,
            cut: None,
        };
        mix_images(&mix, &mut mixed, n, side);
        let image = 3 * side * side;
        for i in 0..n {
            for k in 0..image {
                let want = 0.7 * x[i * image + k] + 0.3 * x[(n - 1 - i) * image + k];
                assert!((mixed[i * image + k] - want).abs() < 1e-6);
            }
        }
        let t = mix_targets(&mix, &[0, 2, 1], 3);
        // Image i is mixed with image n-1-i: labels [0, 2, 1] with [1, 2, 0].
        assert_eq!(t, vec![0.7, 0.3, 0.0, 0.0, 0.0, 1.0, 0.3, 0.7, 0.0]);
    }

    #[test]
    fn a_cut_pastes_the_box_of_the_reversed_batch() {
        let (n, side) = (2, 5);
        let x = batch(n, side);
        let mut mixed = x.clone();
        // Rows 1..3, columns 2..5: 6 of 25 pixels.
        let mix = Mix {
            lam: 1.0 - 6.0 / 25.0,
            cut: Some((1, 3, 2, 5)),
        };
        mix_images(&mix, &mut mixed, n, side);
        for i in 0..n {
            for ch in 0..3 {
                for y in 0..side {
                    for xx in 0..side {
                        let k = ch * side * side + y * side + xx;
                        let inside = (1..3).contains(&y) && (2..5).contains(&xx);
                        let from = if inside { n - 1 - i } else { i };
                        assert_eq!(mixed[i * 75 + k], x[from * 75 + k], "{i} {ch} {y} {xx}");
                    }
                }
            }
        }
        let t = mix_targets(&mix, &[1, 0], 2);
        assert!((t[1] - 0.76).abs() < 1e-6 && (t[0] - 0.24).abs() < 1e-6);
    }

    proptest! {
        #[test]
        fn targets_are_distributions(labels in prop::collection::vec(0i64..4, 1..9), lam in 0.0f64..1.0) {
            let t = mix_targets(&Mix { lam, cut: None }, &labels, 4);
            for row in t.chunks(4) {
                prop_assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
                prop_assert!(row.iter().all(|p| *p >= 0.0));
            }
        }

        #[test]
        fn a_corrected_lam_is_the_area_left_uncovered(seed: u64, side in 1usize..64, alpha in 0.1f64..2.0) {
            let m = Mixup {
                cfg: MixupSection { cutmix_alpha: alpha, ..Default::default() },
                classes: 3,
            };
            let mix = m.draw(side, &mut StdRng::seed_from_u64(seed));
            let (t, b, l, r) = mix.cut.expect("cutmix only");
            prop_assert!(t <= b && b <= side && l <= r && r <= side);
            let kept = 1.0 - ((b - t) * (r - l)) as f64 / (side * side) as f64;
            prop_assert!((mix.lam - kept).abs() < 1e-12);
        }

        #[test]
        fn minmax_boxes_have_sides_in_range(seed: u64, side in 8usize..64) {
            let (t, b, l, r) = box_minmax(side, [0.2, 0.8], &mut StdRng::seed_from_u64(seed));
            let (lo, hi) = ((side as f64 * 0.2) as usize, (side as f64 * 0.8) as usize);
            prop_assert!(b - t >= lo && b - t < hi.max(lo + 1) && b <= side);
            prop_assert!(r - l >= lo && r - l < hi.max(lo + 1) && r <= side);
        }
    }

    #[test]
    fn the_switch_and_prob_are_honoured() {
        let m = Mixup {
            cfg: MixupSection {
                mixup_alpha: 0.8,
                cutmix_alpha: 1.0,
                prob: 0.5,
                switch_prob: 0.25,
                ..Default::default()
            },
            classes: 2,
        };
        let mut rng = StdRng::seed_from_u64(3);
        let draws: Vec<Mix> = (0..4000).map(|_| m.draw(16, &mut rng)).collect();
        let mixed = draws.iter().filter(|d| **d != Mix::NONE).count() as f64 / 4000.0;
        let cut = draws.iter().filter(|d| d.cut.is_some()).count() as f64 / 4000.0;
        // Binomial standard deviations at n = 4000 are below 0.008: 4 of them either side.
        assert!((mixed - 0.5).abs() < 0.032, "{mixed}");
        assert!((cut - 0.125).abs() < 0.032, "{cut}");
        // Beta(0.8, 0.8) is symmetric: the blends' lam averages 1/2.
        let blends: Vec<f64> = draws
            .iter()
            .filter(|d| d.cut.is_none() && **d != Mix::NONE)
            .map(|d| d.lam)
            .collect();
        let mean = blends.iter().sum::<f64>() / blends.len() as f64;
        assert!((mean - 0.5).abs() < 0.03, "{mean}");
        assert_eq!(
            Mixup {
                cfg: MixupSection::default(),
                classes: 2
            }
            .draw(16, &mut rng),
            Mix::NONE
        );
    }
}
