//! What an evaluation measures from a model's class probabilities and the true labels: top-k
//! accuracy, per-class precision, recall and F1 (scikit-learn's definitions, 0 where a ratio
//! has no denominator), the confusion matrix (rows are true classes) and the expected
//! calibration error over equal-width confidence bins (Guo et al. 2017).

use serde::Serialize;

/// Confidence bins of the calibration error and the reliability diagram (torchmetrics' default
/// count). Each bin is (lo, hi] as in Guo et al.; a confidence of exactly 0 goes in the first.
pub const BINS: usize = 15;

/// One class's scores.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassScores {
    /// The class's name.
    pub class: String,
    /// Right among those predicted as the class.
    pub precision: f64,
    /// Found among those truly of the class.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Images truly of the class.
    pub support: usize,
}

/// One confidence bin of the reliability diagram.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bin {
    /// Predictions whose confidence falls in the bin.
    pub count: usize,
    /// Their mean confidence.
    pub confidence: f64,
    /// The fraction of them that is right.
    pub accuracy: f64,
}

/// Every number of an evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    /// Images evaluated.
    pub images: usize,
    /// Top-1 accuracy, a fraction.
    pub top1: f64,
    /// Top-5 accuracy (top-k with k the number of classes when there are fewer).
    pub top5: f64,
    /// Per class, in class order.
    pub per_class: Vec<ClassScores>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// Expected calibration error over [`BINS`] bins.
    pub ece: f64,
    /// The bins behind it, low confidence first.
    pub bins: Vec<Bin>,
}

/// The metrics of `probs` (one row of class probabilities per image) against `labels`. The
/// probabilities must be numbers: evaluation refuses a model whose outputs are NaN.
pub fn metrics(probs: &[Vec<f32>], labels: &[usize], classes: &[String]) -> Metrics {
    let k = classes.len();
    let n = labels.len();
    let mut confusion = vec![vec![0usize; k]; k];
    let (mut top5, mut bins) = (0usize, vec![(0usize, 0f64, 0usize); BINS]);
    for (p, &y) in probs.iter().zip(labels) {
        let predicted = argmax(p);
        confusion[y][predicted] += 1;
        // Rank of the true class: how many classes score strictly higher (ties favour it). A NaN
        // probability ranks nowhere: nothing compares above it, so it must not count as a hit.
        let above = p.iter().filter(|&&q| q > p[y]).count();
        top5 += usize::from(!p[y].is_nan() && above < 5.min(k));
        let conf = f64::from(p[predicted]);
        let b = bin_of(conf);
        bins[b].0 += 1;
        bins[b].1 += conf;
        bins[b].2 += usize::from(predicted == y);
    }
    let right: usize = (0..k).map(|c| confusion[c][c]).sum();
    let per_class = (0..k).map(|c| scores(&confusion, c, &classes[c])).collect();
    let bins: Vec<Bin> = bins
        .into_iter()
        .map(|(count, conf, hits)| Bin {
            count,
            confidence: ratio(conf, count),
            accuracy: ratio(hits as f64, count),
        })
        .collect();
    let ece = bins
        .iter()
        .map(|b| b.count as f64 / n.max(1) as f64 * (b.accuracy - b.confidence).abs())
        .sum();
    Metrics {
        images: n,
        top1: ratio(right as f64, n),
        top5: ratio(top5 as f64, n),
        per_class,
        confusion,
        ece,
        bins,
    }
}

/// The index of the largest value (the first of equals, as `argmax` everywhere).
pub fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

/// The bin of a confidence: (i / BINS, (i + 1) / BINS], the first bin also holding 0.
fn bin_of(conf: f64) -> usize {
    ((conf * BINS as f64).ceil() as usize).clamp(1, BINS) - 1
}

fn ratio(num: f64, den: usize) -> f64 {
    if den == 0 { 0.0 } else { num / den as f64 }
}

fn scores(confusion: &[Vec<usize>], c: usize, name: &str) -> ClassScores {
    let tp = confusion[c][c] as f64;
    let predicted: usize = confusion.iter().map(|row| row[c]).sum();
    let support: usize = confusion[c].iter().sum();
    let precision = ratio(tp, predicted);
    let recall = ratio(tp, support);
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    ClassScores {
        class: name.to_string(),
        precision,
        recall,
        f1,
        support,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn a_worked_example() {
        // Three classes; truth 0,0,1,2,2 predicted 0,1,1,2,0.
        let p = |c: usize, conf: f32| {
            let mut v = vec![(1.0 - conf) / 2.0; 3];
            v[c] = conf;
            v
        };
        let probs = vec![p(0, 0.9), p(1, 0.6), p(1, 0.8), p(2, 0.95), p(0, 0.5)];
        let m = metrics(&probs, &[0, 0, 1, 2, 2], &names(3));
        assert_eq!(
            m.confusion,
            vec![vec![1, 1, 0], vec![0, 1, 0], vec![1, 0, 1]]
        );
        assert!((m.top1 - 0.6).abs() < 1e-12);
        assert_eq!(m.top5, 1.0);
        let c0 = &m.per_class[0];
        assert!((c0.precision - 0.5).abs() < 1e-12 && (c0.recall - 0.5).abs() < 1e-12);
        assert!((m.per_class[1].precision - 0.5).abs() < 1e-12);
        assert!((m.per_class[1].recall - 1.0).abs() < 1e-12);
        assert!((m.per_class[2].f1 - 2.0 / 3.0).abs() < 1e-12);
        // The five confidences fall in five different bins of 1/15, so ECE is the mean gap
        // between each confidence and its 0/1 hit.
        let gaps = [(0.9, 1.0), (0.6, 0.0), (0.8, 1.0), (0.95, 1.0), (0.5, 0.0)];
        let want: f64 = gaps
            .iter()
            .map(|(c, a): &(f64, f64)| (c - a).abs())
            .sum::<f64>()
            / 5.0;
        assert!((m.ece - want).abs() < 1e-6, "{} vs {want}", m.ece);
        assert_eq!(m.bins.iter().map(|b| b.count).sum::<usize>(), 5);
    }

    #[test]
    fn a_nan_probability_is_never_a_hit() {
        let m = metrics(&[vec![0.5, f32::NAN, 0.2]], &[1], &names(3));
        assert_eq!((m.top1, m.top5), (0.0, 0.0));
    }

    #[test]
    fn bins_split_at_fifteenths() {
        assert_eq!(bin_of(0.0), 0);
        assert_eq!(bin_of(1.0 / 15.0), 0);
        assert_eq!(bin_of(1.0 / 15.0 + 1e-9), 1);
        assert_eq!(bin_of(1.0), 14);
    }

    proptest! {
        #[test]
        fn counts_add_up_and_scores_stay_in_range(
            rows in prop::collection::vec((prop::collection::vec(0.0f32..1.0, 4), 0usize..4), 1..40)
        ) {
            let probs: Vec<Vec<f32>> = rows.iter().map(|(p, _)| p.clone()).collect();
            let labels: Vec<usize> = rows.iter().map(|(_, y)| *y).collect();
            let m = metrics(&probs, &labels, &names(4));
            prop_assert_eq!(m.confusion.iter().flatten().sum::<usize>(), labels.len());
            prop_assert_eq!(m.per_class.iter().map(|c| c.support).sum::<usize>(), labels.len());
            prop_assert!(m.top1 <= m.top5 && m.top5 <= 1.0);
            // With 4 classes every true class is within the top 5.
            prop_assert_eq!(m.top5, 1.0);
            for c in &m.per_class {
                prop_assert!((0.0..=1.0).contains(&c.precision) && (0.0..=1.0).contains(&c.f1));
            }
            prop_assert!((0.0..=1.0).contains(&m.ece));
        }
    }
}
