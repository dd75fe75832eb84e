//! The tuning catalog against PyTorch: every optimiser configuration's parameters after 20
//! steps, and every schedule's learning rate per step, from `scripts/tuning_reference.py`
//! (`tuning.json` in `$REKINDLE_FIXTURES`, written by `cargo xtask test`).

use std::path::PathBuf;
use std::sync::Arc;

use burn::lr_scheduler::LrScheduler;
use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Tensor, TensorData};
use rekindle_train::catalog::optim::OptimSection;
use rekindle_train::catalog::schedule::ScheduleSection;
use rekindle_train::catalog::scheduler::{RunShape, Scheduler};
use rekindle_train::run::trainee::clip_grad_norm;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    torch: String,
    steps: usize,
    base_lr: f64,
    problem: Problem,
    optimizers: Vec<OptimCase>,
    schedules: Vec<ScheduleCase>,
}

#[derive(Deserialize)]
struct Problem {
    x: Vec<Vec<f64>>,
    y: Vec<Vec<f64>>,
    weight: Vec<Vec<f64>>,
    bias: Vec<f64>,
}

#[derive(Deserialize)]
struct OptimCase {
    name: String,
    optim: serde_json::Value,
    lr: f64,
    weight: Vec<Vec<f64>>,
    bias: Vec<f64>,
}

#[derive(Deserialize)]
struct ScheduleCase {
    name: String,
    schedule: serde_json::Value,
    steps: usize,
    steps_per_epoch: usize,
    metric: Option<Vec<f64>>,
    lrs: Vec<f64>,
}

fn reference() -> Reference {
    let dir = std::env::var_os("REKINDLE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures"));
    let path = dir.join("tuning.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `cargo xtask test` (or `cargo xtask fixtures`) first",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// The fixed problem's parameters: `weight` [5, 3] and `bias` [3], as in the Python script
/// (same names, so the no-decay group finds `bias`).
#[derive(Module, Debug)]
struct Tiny {
    weight: Param<Tensor<2>>,
    bias: Param<Tensor<1>>,
}

/// A float64 tensor (see the script: the comparison runs in double precision).
fn matrix(rows: &[Vec<f64>], device: &Device) -> Tensor<2> {
    let (r, c) = (rows.len(), rows[0].len());
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [r, c]), (device, DType::F64))
}

fn flat<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    let data = t.into_data();
    assert_eq!(
        data.dtype(),
        DType::F64,
        "the comparison must run in float64"
    );
    data.try_into_vec::<f64>().unwrap()
}

/// `max |ours - torch| / max |torch|` over both parameters.
fn rel_error(ours: &[f64], torch: &[f64]) -> f64 {
    let scale = torch.iter().fold(0f64, |m, v| m.max(v.abs()));
    ours.iter()
        .zip(torch)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

#[test]
fn optimisers_match_torch_optim_after_20_steps() {
    let r = reference();
    let device = Device::flex().autodiff();
    let p = &r.problem;
    let (x, y) = (matrix(&p.x, &device), matrix(&p.y, &device));
    let (mut report, mut failed) = (Vec::new(), Vec::new());
    for case in &r.optimizers {
        let cfg: OptimSection = serde_json::from_value(case.optim.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        cfg.validate().unwrap();
        let mut optim = cfg.optimizer();
        let mut m = Tiny {
            weight: Param::from_tensor(matrix(&p.weight, &device)),
            bias: Param::from_tensor(Tensor::from_data(
                TensorData::new(p.bias.clone(), [p.bias.len()]),
                (&device, DType::F64),
            )),
        };
        for _ in 0..r.steps {
            let out = (x.clone().matmul(m.weight.val()) + m.bias.val().unsqueeze()).tanh();
            let loss = (out - y.clone()).square().mean();
            let mut grads = GradientsParams::from_grads(loss.backward(), &m);
            if let Some(max) = cfg.clip_grad_norm {
                clip_grad_norm(&m, &mut grads, max);
            }
            m = optim.step(case.lr, m, grads);
        }
        let ours: Vec<f64> = [flat(m.weight.val()), flat(m.bias.val())].concat();
        let torch: Vec<f64> = case
            .weight
            .iter()
            .flatten()
            .chain(&case.bias)
            .copied()
            .collect();
        // Something moved: a case whose parameters stay put would prove nothing.
        let start: Vec<f64> = p.weight.iter().flatten().chain(&p.bias).copied().collect();
        assert!(
            rel_error(&start, &torch) > 1e-3,
            "{}: torch barely moved",
            case.name
        );
        let err = rel_error(&ours, &torch);
        report.push(format!("{:<28} {err:.2e}", case.name));
        if err > 1e-6 {
            failed.push(format!(
                "{}: relative error {err:.3e} after {} steps (torch {})\nours  {ours:?}\ntorch {torch:?}",
                case.name, r.steps, r.torch
            ));
        }
    }
    eprintln!("max relative error vs torch.optim:\n{}", report.join("\n"));
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert_eq!(report.len(), r.optimizers.len());
}

#[test]
fn schedules_match_torch_lr_scheduler() {
    let r = reference();
    let mut report = Vec::new();
    for case in &r.schedules {
        let s: ScheduleSection = serde_json::from_value(case.schedule.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let epochs = case.steps / case.steps_per_epoch;
        let shape = Arc::new(RunShape::new(&vec![case.steps_per_epoch; epochs]));
        let units = match s.per {
            rekindle_train::catalog::schedule::Per::Iteration => case.steps,
            rekindle_train::catalog::schedule::Per::Epoch => epochs,
        };
        s.validate(units)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let sched = Arc::new(s.clone());
        let ours: Vec<f64> = match &case.metric {
            // A plateau schedule's rate in epoch e comes from the metrics of epochs before it.
            Some(metric) => (0..case.steps)
                .map(|step| {
                    let e = shape.epoch_of(step);
                    let lr = s.plateau_lr(r.base_lr, &metric[..e]);
                    Scheduler::new(sched.clone(), shape.clone(), r.base_lr, lr).lr(step)
                })
                .collect(),
            None => {
                let mut sch = Scheduler::new(sched.clone(), shape.clone(), r.base_lr, r.base_lr);
                (0..case.steps).map(|_| sch.step()).collect()
            }
        };
        assert_eq!(ours.len(), case.lrs.len(), "{}", case.name);
        let mut worst = 0f64;
        for (i, (a, b)) in ours.iter().zip(&case.lrs).enumerate() {
            let err = (a - b).abs() / b.abs().max(1e-12);
            worst = worst.max(err);
            assert!(
                err <= 1e-9,
                "{}: step {i}: ours {a:e}, torch {b:e} (relative error {err:.2e})",
                case.name
            );
        }
        // A schedule that never changes the rate must be `constant`.
        let varies = case.lrs.iter().any(|v| (v - case.lrs[0]).abs() > 1e-12);
        assert_eq!(varies, case.name != "constant", "{}", case.name);
        report.push(format!("{:<30} {worst:.2e}", case.name));
    }
    eprintln!(
        "max relative error vs torch.optim.lr_scheduler:\n{}",
        report.join("\n")
    );
}
