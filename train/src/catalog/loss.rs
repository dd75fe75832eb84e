//! The training loss: cross-entropy with `torch.nn.CrossEntropyLoss`'s label smoothing and
//! class weights, for class-index targets and for the probability targets mixup makes.
//!
//! Written here rather than taken from Burn's `CrossEntropyLoss` because that one takes no
//! probability targets and normalises a weighted, smoothed loss differently from PyTorch; both
//! cases below are one formula, checked against PyTorch by `tests/recipe.rs`.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::config::check::{End::Closed, in_range};

/// `[loss]`: what the training step minimises.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LossSection {
    /// PyTorch's `label_smoothing`: targets become (1 - e) * target + e / classes.
    pub label_smoothing: f64,
    /// Per-class weights of the loss: `"none"`, `"balanced"` or a list, one per class.
    pub class_weights: ClassWeights,
}

/// How classes weigh in the loss.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "WeightsRepr", into = "WeightsRepr")]
pub enum ClassWeights {
    /// Every class weighs 1.
    #[default]
    None,
    /// scikit-learn's `"balanced"`: images / (classes * images of the class), counted on the
    /// training split, so each class weighs as much in total.
    Balanced,
    /// As given, in class order.
    Given(Vec<f64>),
}

/// `class_weights` as written in TOML: a name or a list.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum WeightsRepr {
    Name(String),
    List(Vec<f64>),
}

impl TryFrom<WeightsRepr> for ClassWeights {
    type Error = String;

    fn try_from(r: WeightsRepr) -> Result<Self, String> {
        match r {
            WeightsRepr::Name(n) if n == "none" => Ok(Self::None),
            WeightsRepr::Name(n) if n == "balanced" => Ok(Self::Balanced),
            WeightsRepr::Name(n) => Err(format!(
                "class_weights `{n}`: expected \"none\", \"balanced\" or a list of numbers"
            )),
            WeightsRepr::List(w) => Ok(Self::Given(w)),
        }
    }
}

impl From<ClassWeights> for WeightsRepr {
    fn from(w: ClassWeights) -> Self {
        match w {
            ClassWeights::None => Self::Name("none".into()),
            ClassWeights::Balanced => Self::Name("balanced".into()),
            ClassWeights::Given(w) => Self::List(w),
        }
    }
}

impl LossSection {
    /// Rejects a smoothing outside [0, 1] and weights that are negative, not finite or all 0.
    pub fn validate(&self) -> Result<(), String> {
        in_range(
            "loss.label_smoothing",
            self.label_smoothing,
            Closed(0.0),
            Closed(1.0),
        )?;
        if let ClassWeights::Given(w) = &self.class_weights {
            if let Some(bad) = w.iter().find(|v| !v.is_finite() || **v < 0.0) {
                return Err(format!(
                    "loss.class_weights: {bad} is not a weight (finite, 0 or more)"
                ));
            }
            if w.iter().all(|v| *v == 0.0) {
                return Err("loss.class_weights: at least one weight must be above 0".into());
            }
        }
        Ok(())
    }

    /// The weight of each class, given how many training images each has; `None` when all
    /// weigh 1. A list of the wrong length is an error naming both lengths.
    pub fn weights(&self, counts: &[usize]) -> Result<Option<Vec<f64>>, String> {
        match &self.class_weights {
            ClassWeights::None => Ok(None),
            ClassWeights::Balanced => Ok(Some(balanced(counts))),
            ClassWeights::Given(w) if w.len() == counts.len() => Ok(Some(w.clone())),
            ClassWeights::Given(w) => Err(format!(
                "loss.class_weights has {} weights for {} classes",
                w.len(),
                counts.len()
            )),
        }
    }

    /// The loss of a run whose classes have `counts` training images.
    pub fn build(&self, counts: &[usize]) -> Result<Loss, String> {
        let weights = self
            .weights(counts)?
            .map(|w| w.into_iter().map(|v| v as f32).collect());
        Ok(Loss {
            smoothing: self.label_smoothing,
            weights,
        })
    }
}

/// scikit-learn's `compute_class_weight("balanced")`: n / (classes * count). scikit-learn
/// refuses a class with no image; here it gets weight 0 (it cannot be a target) and is not
/// counted, so every class that has images still weighs n / classes in total.
pub fn balanced(counts: &[usize]) -> Vec<f64> {
    let n: usize = counts.iter().sum();
    let k = counts.iter().filter(|&&c| c > 0).count() as f64;
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                n as f64 / (k * c as f64)
            }
        })
        .collect()
}

/// What the loss compares the logits with.
#[derive(Clone, Debug)]
pub enum Targets {
    /// One class index per image.
    Hard(Tensor<1, Int>),
    /// A probability per class per image (mixup, cutmix), `[n, classes]`.
    Soft(Tensor<2>),
}

/// Cross-entropy with label smoothing and class weights, as `torch.nn.functional.cross_entropy`;
/// the default is plain cross-entropy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loss {
    /// Label smoothing e.
    pub smoothing: f64,
    /// Per-class weights, or none (kept on the host: each device's step makes its own tensor).
    pub weights: Option<Vec<f32>>,
}

impl Loss {
    /// The mean loss over the batch: sum over images and classes of -w_c t_ic log p_ic, with the
    /// targets t smoothed, divided by the images' summed target weights for class-index targets
    /// and by the number of images for probability targets (PyTorch's two normalisations).
    pub fn forward(&self, logits: Tensor<2>, targets: &Targets) -> Tensor<1> {
        let [n, classes] = logits.dims();
        let device = logits.device();
        let weights: Option<Tensor<1>> = self
            .weights
            .as_ref()
            .map(|w| Tensor::from_data(TensorData::new(w.clone(), [w.len()]), &device));
        let log_p = log_softmax(logits, 1);
        let t = match targets {
            Targets::Hard(t) => t.clone().one_hot(classes).float(),
            Targets::Soft(t) => t.clone(),
        };
        let e = self.smoothing;
        let t = if e > 0.0 {
            t.mul_scalar(1.0 - e).add_scalar(e / classes as f64)
        } else {
            t
        };
        let per_class = match &weights {
            Some(w) => t * w.clone().unsqueeze::<2>(),
            None => t,
        };
        let total = (per_class * log_p).sum().neg();
        match (targets, weights) {
            (Targets::Hard(y), Some(w)) => {
                // A batch whose targets all weigh 0 has nothing to learn: PyTorch divides by 0
                // (NaN or inf, which would stop the run); here it is a loss of 0, no gradient.
                let den = w.select(0, y.clone()).sum();
                let empty = den.clone().equal_elem(0.0);
                (total / den.mask_fill(empty.clone(), 1.0)).mask_fill(empty, 0.0)
            }
            _ => total.div_scalar(n as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_zero_weight_targets_is_a_loss_of_zero() {
        let device = burn::tensor::Device::flex();
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, -2.0, 0.5, 3.0], [2, 2]),
            &device,
        );
        let targets = Targets::Hard(Tensor::from_data(
            TensorData::new(vec![0i64, 0], [2]),
            &device,
        ));
        for smoothing in [0.0, 0.1] {
            let loss = Loss {
                smoothing,
                weights: Some(vec![0.0, 1.0]),
            };
            let v = loss
                .forward(logits.clone(), &targets)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            assert_eq!(v, [0.0], "smoothing {smoothing}");
        }
    }

    #[test]
    fn balanced_weights_are_scikit_learns() {
        // 6 images over 3 classes: 6 / (3 * [3, 2, 1]).
        let w = balanced(&[3, 2, 1]);
        let want = [2.0 / 3.0, 1.0, 2.0];
        assert!(
            w.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12),
            "{w:?}"
        );
        // Each class then weighs the same in total.
        let totals: Vec<f64> = [3.0, 2.0, 1.0].iter().zip(&w).map(|(c, w)| c * w).collect();
        assert!(totals.iter().all(|t| (t - 2.0).abs() < 1e-12));
        assert_eq!(balanced(&[4, 0]), vec![1.0, 0.0]);
    }

    #[test]
    fn class_weights_read_from_toml_as_a_name_or_a_list() {
        let read = |s: &str| toml::from_str::<LossSection>(s);
        assert_eq!(
            read("class_weights = \"balanced\"").unwrap().class_weights,
            ClassWeights::Balanced
        );
        assert_eq!(
            read("class_weights = [1.0, 2.5]").unwrap().class_weights,
            ClassWeights::Given(vec![1.0, 2.5])
        );
        let err = read("class_weights = \"inverse\"").unwrap_err().to_string();
        assert!(err.contains("inverse") && err.contains("balanced"), "{err}");
        let s = LossSection {
            label_smoothing: 0.1,
            class_weights: ClassWeights::Given(vec![1.0, 2.0]),
        };
        assert_eq!(read(&toml::to_string(&s).unwrap()).unwrap(), s);
    }

    #[test]
    fn impossible_settings_are_named() {
        let with = |label_smoothing, w: ClassWeights| LossSection {
            label_smoothing,
            class_weights: w,
        };
        for (s, word) in [
            (with(1.5, ClassWeights::None), "loss.label_smoothing"),
            (with(0.0, ClassWeights::Given(vec![1.0, -1.0])), "-1"),
            (with(0.0, ClassWeights::Given(vec![0.0, 0.0])), "above 0"),
        ] {
            let err = s.validate().unwrap_err();
            assert!(err.contains(word), "{err}");
        }
        let err = with(0.0, ClassWeights::Given(vec![1.0]))
            .weights(&[5, 5])
            .unwrap_err();
        assert!(err.contains("1 weights for 2 classes"), "{err}");
    }
}
