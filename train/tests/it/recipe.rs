//! The training recipes against their references, from `scripts/recipe_reference.py`
//! (`recipe.json` in `$REKINDLE_FIXTURES`, written by `cargo xtask test`): the loss with label
//! smoothing, class weights and mixed (probability) targets equals PyTorch's
//! `cross_entropy`, value and gradient; every operation of the automatic augmentation
//! policies and of the colour jitter equals torchvision's on PIL images within one level; the
//! evaluation report's per-class scores and confusion matrix equal scikit-learn's on the same
//! predictions.

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use rekindle_train::catalog::loss::{LossSection, Targets};
use rekindle_train::data::mixup::{Mix, mix_targets};
use rekindle_train::data::ops::{self, Op};
use rekindle_train::eval::metrics::metrics;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    torch: String,
    mix_lam: f64,
    logits: Vec<Vec<f64>>,
    targets: Vec<i64>,
    losses: Vec<LossCase>,
    classification: Classification,
    ops: Ops,
}

#[derive(Deserialize)]
struct Ops {
    images: Vec<Vec<Vec<[u8; 3]>>>,
    cases: Vec<OpCase>,
}

#[derive(Deserialize)]
struct OpCase {
    op: String,
    magnitude: f64,
    outputs: Vec<Vec<Vec<[u8; 3]>>>,
}

#[derive(Deserialize)]
struct Classification {
    classes: usize,
    y_true: Vec<usize>,
    y_pred: Vec<usize>,
    precision: Vec<f64>,
    recall: Vec<f64>,
    f1: Vec<f64>,
    support: Vec<usize>,
    confusion: Vec<Vec<usize>>,
}

#[derive(Deserialize)]
struct LossCase {
    loss: serde_json::Value,
    soft: bool,
    value: f64,
    grad: Vec<Vec<f64>>,
}

fn reference() -> Reference {
    let dir = std::env::var_os("REKINDLE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures"));
    let path = dir.join("recipe.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `cargo xtask test` (or `cargo xtask fixtures`) first",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_loss_matches_torch_cross_entropy() {
    let r = reference();
    let device = Device::flex().autodiff();
    let (n, classes) = (r.logits.len(), r.logits[0].len());
    let flat: Vec<f32> = r.logits.iter().flatten().map(|v| *v as f32).collect();
    let labels = Tensor::<1, Int>::from_data(TensorData::new(r.targets.clone(), [n]), &device);
    // The mixed targets come from the mixer the loader uses, not from the fixture.
    let mix = Mix {
        lam: r.mix_lam,
        cut: None,
    };
    let probs = mix_targets(&mix, &r.targets, classes);
    let (mut worst, mut smoothed, mut weighted) = (0f64, 0, 0);
    for case in &r.losses {
        let section: LossSection = serde_json::from_value(case.loss.clone()).unwrap();
        section.validate().unwrap();
        let loss = section.build(&vec![1; classes]).unwrap();
        smoothed += usize::from(loss.smoothing > 0.0);
        weighted += usize::from(loss.weights.is_some());
        let logits = Tensor::<2>::from_data(TensorData::new(flat.clone(), [n, classes]), &device)
            .require_grad();
        let targets = if case.soft {
            Targets::Soft(Tensor::from_data(
                TensorData::new(probs.clone(), [n, classes]),
                &device,
            ))
        } else {
            Targets::Hard(labels.clone())
        };
        let value = loss.forward(logits.clone(), &targets);
        let ours = f64::from(value.clone().into_scalar::<f32>());
        let grads = value.backward();
        let grad: Vec<f32> = logits
            .grad(&grads)
            .expect("a gradient for the logits")
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let grad_err = grad
            .iter()
            .zip(case.grad.iter().flatten())
            .fold(0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
        let err = (ours - case.value).abs().max(grad_err);
        assert!(
            err < 1e-6,
            "{} soft={}: ours {ours}, torch {} (gradient off by {grad_err})",
            case.loss,
            case.soft,
            case.value
        );
        worst = worst.max(err);
    }
    // Every combination was there: 2 target kinds x 3 smoothings x 2 weightings.
    assert_eq!((r.losses.len(), smoothed, weighted), (12, 8, 6));
    eprintln!(
        "12 loss cases match torch {} within {worst:.1e} (value and gradient)",
        r.torch
    );
}

#[test]
fn per_class_scores_and_the_confusion_matrix_match_scikit_learn() {
    let c = reference().classification;
    // Probabilities whose argmax is scikit-learn's predicted label.
    let probs: Vec<Vec<f32>> = c
        .y_pred
        .iter()
        .map(|&p| {
            let mut row = vec![0.4 / (c.classes - 1) as f32; c.classes];
            row[p] = 0.6;
            row
        })
        .collect();
    let names: Vec<String> = (0..c.classes).map(|i| format!("c{i}")).collect();
    let m = metrics(&probs, &c.y_true, &names);
    assert_eq!(m.confusion, c.confusion);
    for (k, s) in m.per_class.iter().enumerate() {
        assert_eq!(s.support, c.support[k], "support of class {k}");
        for (ours, theirs, what) in [
            (s.precision, c.precision[k], "precision"),
            (s.recall, c.recall[k], "recall"),
            (s.f1, c.f1[k], "f1"),
        ] {
            assert!(
                (ours - theirs).abs() < 1e-12,
                "{what} of class {k}: {ours} vs {theirs}"
            );
        }
    }
    // The cases that need scikit-learn's zero_division rule are in the data.
    assert!(c.support[5] == 0 && c.confusion.iter().all(|row| row[4] == 0));
    let hits = c
        .y_true
        .iter()
        .zip(&c.y_pred)
        .filter(|(a, b)| a == b)
        .count();
    assert!((m.top1 - hits as f64 / c.y_true.len() as f64).abs() < 1e-12);
}

fn image(rows: &[Vec<[u8; 3]>]) -> image::RgbImage {
    let (w, h) = (rows[0].len() as u32, rows.len() as u32);
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb(rows[y as usize][x as usize]))
}

fn op(name: &str, m: f64) -> Option<Op> {
    Some(match name {
        "Identity" => Op::Identity,
        "ShearX" => Op::ShearX(m),
        "ShearY" => Op::ShearY(m),
        "TranslateX" => Op::TranslateX(m),
        "TranslateY" => Op::TranslateY(m),
        "Rotate" => Op::Rotate(m),
        "Brightness" => Op::Brightness(m),
        "Color" => Op::Color(m),
        "Contrast" => Op::Contrast(m),
        "Sharpness" => Op::Sharpness(m),
        "Posterize" => Op::Posterize(m as u32),
        "Solarize" => Op::Solarize(m),
        "AutoContrast" => Op::AutoContrast,
        "Equalize" => Op::Equalize,
        _ => return None,
    })
}

#[test]
fn augmentation_operations_match_torchvision_on_pil_images() {
    let r = reference().ops;
    let inputs: Vec<image::RgbImage> = r.images.iter().map(|i| image(i)).collect();
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for case in &r.cases {
        for (input, want) in inputs.iter().zip(&case.outputs) {
            let ours = match op(&case.op, case.magnitude) {
                Some(o) => o.apply(input),
                None if case.op == "Hue" => ops::hue(input, case.magnitude),
                None => panic!("unknown operation {} in the fixture", case.op),
            };
            let want = image(want);
            let diffs: Vec<u8> = ours
                .iter()
                .zip(want.iter())
                .map(|(a, b)| a.abs_diff(*b))
                .collect();
            let worst = diffs.iter().copied().max().unwrap_or(0);
            let off = diffs.iter().filter(|d| **d > 0).count();
            report.push(format!(
                "{}({}) {}x{}: {off} values off, worst {worst}",
                case.op,
                case.magnitude,
                input.width(),
                input.height()
            ));
            // One level (1/255) is the tolerance; geometric operations must move whole
            // pixels exactly as torchvision does, so any difference there is a failure.
            let geometric = ["ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"];
            let tolerance = if geometric.contains(&case.op.as_str()) {
                0
            } else {
                1
            };
            if worst > tolerance {
                failures.push(report.last().cloned().unwrap_or_default());
            }
        }
    }
    assert_eq!(r.cases.len(), 33);
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
