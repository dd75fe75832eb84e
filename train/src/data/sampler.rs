//! The order of the training images in an epoch: a seeded shuffle, or a class-balanced draw.

use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// `data.sampler`: how an epoch's images are chosen.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Sampler {
    /// Every image once, in a new order each epoch.
    #[default]
    Shuffle,
    /// As many draws as images, with replacement, each class equally likely: PyTorch's
    /// `WeightedRandomSampler` with weight 1 / (images of the class).
    Balanced,
}

impl Sampler {
    /// Indices into `labels` for one epoch, drawn with `rng`.
    pub fn order(self, labels: &[usize], rng: &mut impl Rng) -> Vec<usize> {
        match self {
            Sampler::Shuffle => {
                let mut order: Vec<usize> = (0..labels.len()).collect();
                order.shuffle(rng);
                order
            }
            Sampler::Balanced => balanced(labels, rng),
        }
    }
}

/// A class drawn uniformly among those present, then one of its images uniformly: the same
/// distribution as weighting each image by 1 / (images of its class).
fn balanced(labels: &[usize], rng: &mut impl Rng) -> Vec<usize> {
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    let mut members = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        members[l].push(i);
    }
    members.retain(|m| !m.is_empty());
    (0..labels.len())
        .map(|_| {
            let class = &members[rng.random_range(0..members.len())];
            class[rng.random_range(0..class.len())]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Pearson's chi-square statistic of `counts` against equal expected counts.
    fn chi_square(counts: &[usize]) -> f64 {
        let n: usize = counts.iter().sum();
        let e = n as f64 / counts.len() as f64;
        counts.iter().map(|&c| (c as f64 - e).powi(2) / e).sum()
    }

    /// 200, 30 and 6 images of three classes, 50 epochs, drawn as the loader draws them.
    fn class_counts(sampler: Sampler) -> Vec<usize> {
        let labels: Vec<usize> = [(0, 200), (1, 30), (2, 6)]
            .iter()
            .flat_map(|&(l, n)| std::iter::repeat_n(l, n))
            .collect();
        let mut counts = vec![0; 3];
        for epoch in 0..50u64 {
            let mut rng = StdRng::seed_from_u64(crate::data::loader::mix(11, epoch, 0));
            for i in sampler.order(&labels, &mut rng) {
                counts[labels[i]] += 1;
            }
        }
        counts
    }

    #[test]
    fn the_balanced_sampler_draws_classes_uniformly() {
        // Chi-square with 2 degrees of freedom: 13.8 is its 99.9th percentile. A balanced
        // draw stays below it; the shuffle, which follows the 200:30:6 imbalance, is far above.
        let balanced = class_counts(Sampler::Balanced);
        assert_eq!(balanced.iter().sum::<usize>(), 236 * 50);
        assert!(chi_square(&balanced) < 13.8, "{balanced:?}");
        let shuffled = class_counts(Sampler::Shuffle);
        assert_eq!(shuffled, vec![200 * 50, 30 * 50, 6 * 50]);
        assert!(chi_square(&shuffled) > 1000.0);
    }

    #[test]
    fn within_a_class_images_are_drawn_uniformly() {
        // Class 1's 30 images, over 50 epochs of about 79 draws each: ~131 draws per image.
        let labels: Vec<usize> = (0..236)
            .map(|i| usize::from(i >= 200) + usize::from(i >= 230))
            .collect();
        let mut per_image = vec![0usize; 30];
        for epoch in 0..50u64 {
            let mut rng = StdRng::seed_from_u64(crate::data::loader::mix(5, epoch, 0));
            for i in Sampler::Balanced.order(&labels, &mut rng) {
                if labels[i] == 1 {
                    per_image[i - 200] += 1;
                }
            }
        }
        // 29 degrees of freedom: 58.3 is the 99.9th percentile.
        assert!(chi_square(&per_image) < 58.3, "{per_image:?}");
    }

    #[test]
    fn the_same_seed_draws_the_same_epoch() {
        let labels = [0, 0, 0, 1, 2, 2];
        let a = Sampler::Balanced.order(&labels, &mut StdRng::seed_from_u64(1));
        let b = Sampler::Balanced.order(&labels, &mut StdRng::seed_from_u64(1));
        assert_eq!(a, b);
        assert_eq!(a.len(), labels.len());
        assert!(
            Sampler::Balanced
                .order(&[], &mut StdRng::seed_from_u64(1))
                .is_empty()
        );
    }
}
