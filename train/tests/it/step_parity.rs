//! Training steps taken through rekindle-train's own path against PyTorch's, from
//! `scripts/train_step_reference.py` (`step_parity.json` and `step_*.safetensors` in
//! `$REKINDLE_FIXTURES`, written by `cargo xtask test`): ResNet-50 at 64 x 64 px, batch 4,
//! 10 classes, on flex.
//!
//! Each case is a rekindle config (TOML, in the fixture beside the PyTorch code that means the
//! same) run the way a phase of `cargo xtask train` runs it: `TrainConfig` -> `Plan` ->
//! `phase::trainee` (the train step's rules and loss) -> `strategy::param_groups` and
//! `scheduler::module_scheduler` (two learning rates: the backbone at a tenth of the head's) ->
//! `OptimSection::optimizer` -> Burn's `Learner`, stepped as `SupervisedTraining` steps it
//! (train step, scheduler step, optimiser step), with BatchNorm in training mode. The starting
//! weights come through the importer, as a run's do (the run would then put a fresh head on,
//! which PyTorch cannot reproduce; here the file's head is kept).
//!
//! - one SGD step (momentum, weight decay) and one AdamW step (decoupled decay, none on biases
//!   and BatchNorm): the first step's gradients, every updated weight and every BatchNorm
//!   running statistic, per element;
//! - 20 steps of each with linear warmup then cosine decay and label smoothing: every step's
//!   loss and both groups' learning rates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, ModuleStore, SafetensorsStore, bridge};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use burn::train::Learner;
use rekindle_import::{ImportOptions, import};
use rekindle_model::params::is_running_stat;
use rekindle_model::remap::{REKINDLE_TO_TORCHVISION, remap_key};
use rekindle_model::{Arch, PathMapper, ResNet, map_with_paths};
use rekindle_train::TrainConfig;
use rekindle_train::catalog::scheduler::{RunShape, module_scheduler};
use rekindle_train::data::loader::Batch;
use rekindle_train::run::phase;
use rekindle_train::run::plan::Plan;
use rekindle_train::run::strategy::param_groups;
use rekindle_train::run::trainee::Trainee;
use serde::Deserialize;

/// The bar of every comparison: an element of a stepped tensor may differ from PyTorch's by
/// this fraction of the largest change the step made in the tensor (plus its own rounding and,
/// for AdamW, see [`Allowance`]); a gradient element by this fraction of the tensor's largest
/// gradient; a loss by this fraction of itself.
///
/// Why these scales: float32 summed in another order leaves PyTorch's own first-step gradients
/// 2.3e-5 of a tensor's largest gradient from float64 (the fixture measures it; rekindle's are
/// 2.6e-5 from PyTorch's), and an update inherits that, so a bar relative to each element
/// (|w| or |g|) would fail on every element near zero, while one relative to the weights would
/// pass updates off by percents (the SGD step moves a backbone convolution by 3e-3 of its
/// largest weight, median over tensors). The trajectories' losses part from float64 by 4e-6
/// in PyTorch (at the fixture's rates; see the script for why the rates are small).
const TOL: f64 = 1e-4;

/// The learning rates must be PyTorch's to rounding (they are computed in f64 on both sides).
const LR_TOL: f64 = 1e-9;

#[derive(Deserialize)]
struct Reference {
    torch: String,
    classes: usize,
    batch: usize,
    side: usize,
    relu_margin: f64,
    pool_margin: f64,
    nudged_channels: usize,
    /// PyTorch's AdamW eps.
    adamw_eps: f64,
    /// Per class of parameter, the largest error of PyTorch's float32 first-step gradients
    /// against float64 (of the tensor's largest gradient), and the tensor.
    float64_grad_spread: BTreeMap<String, (f64, String)>,
    cases: BTreeMap<String, Case>,
}

#[derive(Deserialize)]
struct Case {
    /// rekindle's config for the case.
    config: String,
    steps: usize,
    /// PyTorch's loss of every step.
    losses: Vec<f64>,
    /// PyTorch's learning rates of every step, the head's first, then the backbone's.
    lrs: Vec<Vec<f64>>,
    /// The largest relative difference between PyTorch's losses in float32 and in float64.
    float64_loss_spread: f64,
}

fn fixtures() -> PathBuf {
    std::env::var_os("REKINDLE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures"))
}

fn reference() -> Reference {
    let path = fixtures().join("step_parity.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `cargo xtask test` (or `cargo xtask fixtures`) first",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// Every tensor of a safetensors file, by name.
fn read_safetensors(path: &Path) -> BTreeMap<String, TensorData> {
    let mut store = SafetensorsStore::from_file(path.to_path_buf());
    let tensors = store
        .get_all_tensors()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    tensors
        .iter()
        .map(|(name, t)| (name.clone(), bridge::to_data(t).unwrap()))
        .collect()
}

/// Float tensors under torchvision's names and layout, as f32 values.
type State = BTreeMap<String, Vec<f32>>;

fn float_state(path: &Path) -> State {
    read_safetensors(path)
        .into_iter()
        .filter(|(_, d)| d.dtype() == DType::F32)
        .map(|(k, d)| (k, d.try_to_vec::<f32>().unwrap()))
        .collect()
}

/// The model's tensors under torchvision's names and layout, as `export` writes them.
fn torchvision_state(net: &ResNet) -> State {
    // Burn keeps a BatchNorm's latest running-statistics update aside until a sync, which
    // `valid()` performs on the state it shares with `net`.
    let _ = net.valid();
    net.collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .iter()
        .map(|t| {
            let data = bridge::to_data(t).unwrap();
            let name = remap_key(REKINDLE_TO_TORCHVISION, &t.name);
            (name, data.try_to_vec::<f32>().unwrap())
        })
        .collect()
}

/// Replaces every learnable parameter by its gradient, so that the gradients come out under
/// torchvision's names and layout like the weights.
struct GradientsInto<'a>(&'a GradientsParams);

impl PathMapper for GradientsInto<'_> {
    fn map<const D: usize>(
        &mut self,
        path: &[String],
        param: Param<Tensor<D>>,
    ) -> Param<Tensor<D>> {
        if is_running_stat(path) {
            return param;
        }
        let grad = self
            .0
            .get::<D>(param.id)
            .unwrap_or_else(|| panic!("no gradient for {}", path.join(".")));
        Param::initialized(param.id, grad)
    }
}

fn gradients(net: &ResNet, grads: &GradientsParams) -> State {
    let with_grads = map_with_paths(net.clone(), &mut GradientsInto(grads));
    torchvision_state(&with_grads)
        .into_iter()
        .filter(|(k, _)| !k.ends_with(".running_mean") && !k.ends_with(".running_var"))
        .collect()
}

/// The batches of the trajectories, `[steps, batch, 3, side, side]` and `[steps, batch]`.
struct Inputs {
    images: Vec<f32>,
    labels: Vec<i64>,
}

impl Inputs {
    fn read() -> Self {
        let mut t = read_safetensors(&fixtures().join("step_inputs.safetensors"));
        Self {
            images: t.remove("images").unwrap().try_to_vec::<f32>().unwrap(),
            labels: t.remove("labels").unwrap().try_to_vec::<i64>().unwrap(),
        }
    }

    /// Batch `step`, as the loader hands it to the train step.
    fn batch(&self, r: &Reference, step: usize, device: &Device) -> Batch {
        let n = r.batch;
        let per = 3 * r.side * r.side;
        let images = self.images[step * n * per..(step + 1) * n * per].to_vec();
        let labels = self.labels[step * n..(step + 1) * n].to_vec();
        Batch {
            images: Tensor::from_data(TensorData::new(images, [n, 3, r.side, r.side]), device),
            targets: Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), device),
            mixed: None,
        }
    }
}

/// What a case's run did: the state after its last step, its first step's gradients, and
/// every step's loss and learning rates (head, backbone).
struct Ran {
    after: State,
    grads: State,
    losses: Vec<f64>,
    lrs: Vec<[f64; 2]>,
}

/// Runs `case` as a phase of `cargo xtask train` would, from the fixture's starting weights.
fn run(r: &Reference, case: &Case, inputs: &Inputs) -> Ran {
    let cfg = TrainConfig::from_toml(&case.config).unwrap();
    cfg.validate().unwrap();
    // One epoch of `steps` optimiser steps.
    let plan = Plan::with_shape(&cfg, Arc::new(RunShape::new(&[case.steps]))).unwrap();
    assert_eq!(plan.phases.len(), 1);
    assert_eq!(plan.groups.len(), 1, "the backbone's group");
    let device = Device::flex().autodiff();
    let options = ImportOptions {
        arch: Some(Arch::Resnet50),
        num_classes: Some(r.classes),
        ..Default::default()
    };
    let imported = import(
        &fixtures().join("step_initial.safetensors"),
        &options,
        &device,
    )
    .unwrap();
    // As `start::open`: loaded weights arrive untracked.
    let net = imported.model.unfreeze();
    let loss = cfg.loss.build(&vec![1; r.classes]).unwrap();
    let trainee = phase::trainee(
        &cfg,
        &plan,
        &Trainee::new(net),
        plan.phases[0],
        (loss, None),
    );
    // As `phase::Launcher::launch`.
    let groups = param_groups(&plan.groups, &trainee.net);
    let scheduler = module_scheduler(&cfg.schedule, plan.shape.clone(), plan.lr, &groups, &[]);
    let (head_id, backbone_id) = (trainee.net.head.fc.weight.id, trainee.net.conv1.weight.id);
    let mut learner = Learner::new(trainee, cfg.optim.optimizer(), scheduler);
    let (mut losses, mut lrs, mut grads) = (Vec::new(), Vec::new(), None);
    for step in 0..case.steps {
        // The order of burn-train's single-device epoch: train step, scheduler, optimiser.
        let out = learner.train_step(inputs.batch(r, step, &device));
        losses.push(f64::from(out.item.loss.clone().into_scalar::<f32>()));
        if step == 0 {
            grads = Some(gradients(&learner.model().net, &out.grads));
        }
        learner.lr_step();
        let lr = learner.lr_current();
        lrs.push([
            lr.lr_from_param(head_id, None),
            lr.lr_from_param(backbone_id, None),
        ]);
        learner.optimizer_step(out.grads);
    }
    Ran {
        after: torchvision_state(&learner.model().net),
        grads: grads.unwrap(),
        losses,
        lrs,
    }
}

/// The kinds of tensor reported separately.
fn class_of(name: &str) -> &'static str {
    if name.ends_with(".running_mean") {
        "running_mean"
    } else if name.ends_with(".running_var") {
        "running_var"
    } else if name.starts_with("fc.") {
        "fc"
    } else if name.contains("bn") || name.contains("downsample.1") {
        "bn weight/bias"
    } else {
        "conv weight"
    }
}

/// The larger of `m` and `v`, NaN if either is (where `f64::max` returns the other).
fn worse(m: f64, v: f64) -> f64 {
    if v.is_nan() || v > m { v } else { m }
}

/// The largest of a measure over a class of tensors, and the tensor it was in.
#[derive(Default)]
struct Max(f64, String);

impl Max {
    fn add(&mut self, v: f64, name: &str) {
        if v.is_nan() || v > self.0 {
            *self = Max(v, name.to_string());
        }
    }
}

/// A class of tensors' worst: error over allowance (the assertion), error relative to the
/// tensor's largest value, error relative to the step's largest change in the tensor, how
/// many elements were allowed AdamW's sign step and the largest PyTorch gradient among them.
#[derive(Default)]
struct Worst {
    allowance: Max,
    relative: Max,
    of_update: Max,
    sign_steps: usize,
    sign_grad: f64,
}

/// What an element may differ by, besides float32's rounding of the result itself (2 ulps).
enum Allowance<'a> {
    /// `TOL` of the largest change the step made in the tensor: an update or a running
    /// statistic computed in another summation order differs by float32's error of its inputs
    /// (the gradients agree to ~3e-5 of their scale), never by a fraction of the step. The 2
    /// ulps matter where the step is small against the weight: a backbone weight of 0.05 moved
    /// by 1e-5 is rounded by 4e-4 of the step.
    Update,
    /// AdamW's first step is `lr * u(g)`, `u(g) = g / (|g| + eps)` per element: the sign of the
    /// gradient for `|g| >> eps`. Where the gradient is small, a rounding error of it moves
    /// `u(g)` by more than `TOL` and, within a rounding error of zero, flips the step: by up to
    /// `2 lr` (here 17,400 of 23.5 million elements, all with |g| < 3e-5). Each element is
    /// therefore held to PyTorch's formula applied to our gradient: `TOL` of the update plus
    /// `lr * |u(g_ours) - u(g_torch)|`, the difference the two gradients make through it, these
    /// being held to `TOL` of their scale on their own. Measured: a wrong eps (1e-5) misses by
    /// thousands of allowances, as would a wrong decay, rate or missing bias correction.
    AdamW {
        /// Our first step's gradients and PyTorch's.
        grads: (&'a State, &'a State),
        /// PyTorch's eps.
        eps: f64,
        /// PyTorch's learning rates of the head and of the backbone.
        lrs: [f64; 2],
    },
}

/// Compares `ours` with PyTorch's `theirs` after one step from `start`, per element, and
/// returns the report lines (per class of tensor) and the failures (per tensor).
fn compare(
    what: &str,
    ours: &State,
    theirs: &State,
    start: &State,
    allowance: &Allowance,
) -> (Vec<String>, Vec<String>) {
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "{what}: tensor names"
    );
    let u = |g: f32, eps: f64| f64::from(g) / (f64::from(g).abs() + eps);
    let mut classes: BTreeMap<&str, Worst> = BTreeMap::new();
    let mut failures = Vec::new();
    for (name, t) in theirs {
        let (a, s) = (&ours[name], &start[name]);
        assert_eq!(
            (a.len(), s.len()),
            (t.len(), t.len()),
            "{what}: `{name}` size"
        );
        let update = t
            .iter()
            .zip(s)
            .fold(0f64, |m, (t, s)| m.max(f64::from(t - s).abs()));
        let scale = t.iter().fold(0f64, |m, t| m.max(f64::from(*t).abs()));
        // The gradients and learning rate an AdamW step answers to, for parameters.
        let adamw = match allowance {
            Allowance::AdamW {
                grads: (go, gt),
                eps,
                lrs: [head, backbone],
            } => match (go.get(name), gt.get(name)) {
                (Some(go), Some(gt)) => {
                    let lr = if name.starts_with("fc.") {
                        head
                    } else {
                        backbone
                    };
                    Some((go, gt, *eps, *lr))
                }
                _ => None,
            },
            Allowance::Update => None,
        };
        let (mut ratio, mut worst_at, mut err_max) = (0f64, 0, 0f64);
        let (mut sign_steps, mut sign_grad) = (0, 0f64);
        for (i, (&a, &t)) in a.iter().zip(t).enumerate() {
            let err = f64::from(a - t).abs();
            err_max = worse(err_max, err);
            let ulp = f64::from(t.abs().max(f32::MIN_POSITIVE)) * f64::from(f32::EPSILON);
            let base = TOL * update + 2.0 * ulp;
            let sign_step = adamw.map_or(0.0, |(go, gt, eps, lr)| {
                lr * (u(go[i], eps) - u(gt[i], eps)).abs()
            });
            if sign_step > TOL * update
                && let Some((_, gt, _, _)) = adamw
            {
                sign_steps += 1;
                sign_grad = sign_grad.max(f64::from(gt[i]).abs());
            }
            // A NaN stays one (`f64::max` would drop it).
            let r = worse(0.0, err - sign_step) / base;
            if r.is_nan() || r > ratio {
                (ratio, worst_at) = (r, i);
            }
        }
        if ratio.is_nan() || ratio > 1.0 {
            failures.push(format!(
                "{what}: `{name}`[{worst_at}] rekindle {} PyTorch {} (start {}; the step's \
                 largest change in the tensor {update:.3e}): {ratio:.2} x its allowance",
                a[worst_at], t[worst_at], s[worst_at]
            ));
        }
        let w = classes.entry(class_of(name)).or_default();
        w.allowance.add(ratio, name);
        w.relative.add(err_max / scale, name);
        w.of_update.add(err_max / update, name);
        w.sign_steps += sign_steps;
        w.sign_grad = w.sign_grad.max(sign_grad);
    }
    let lines = classes
        .iter()
        .map(|(class, w)| {
            format!(
                "{what:<6} {class:<15} error/allowance {:.2e} (`{}`); largest error {:.2e} of \
                 the tensor's largest value (`{}`), {:.2e} of its largest change (`{}`){}",
                w.allowance.0,
                w.allowance.1,
                w.relative.0,
                w.relative.1,
                w.of_update.0,
                w.of_update.1,
                match w.sign_steps {
                    0 => String::new(),
                    n => format!(
                        "; {n} element(s) allowed their sign step (PyTorch's gradient at most \
                         {:.1e})",
                        w.sign_grad
                    ),
                }
            )
        })
        .collect();
    (lines, failures)
}

/// The first step's gradients, ours against PyTorch's, per element: within `TOL` of the
/// tensor's largest gradient.
fn compare_grads(
    what: &str,
    ours: &State,
    theirs: &State,
    spread: &BTreeMap<String, (f64, String)>,
) -> (Vec<String>, Vec<String>) {
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "{what}: gradient names"
    );
    let mut classes: BTreeMap<&str, (f64, String)> = BTreeMap::new();
    let mut failures = Vec::new();
    for (name, t) in theirs {
        let a = &ours[name];
        let scale = t.iter().fold(0f64, |m, v| m.max(f64::from(*v).abs()));
        assert!(scale > 0.0, "{what}: PyTorch's gradient of `{name}` is 0");
        let err = a
            .iter()
            .zip(t)
            .fold(0f64, |m, (a, t)| worse(m, f64::from(a - t).abs()))
            / scale;
        if err.is_nan() || err > TOL {
            failures.push(format!(
                "{what}: gradient of `{name}` off by {err:.2e} of its largest element {scale:.3e}"
            ));
        }
        let worst = classes.entry(class_of(name)).or_default();
        if err.is_nan() || err > worst.0 {
            *worst = (err, name.clone());
        }
    }
    let lines = classes
        .iter()
        .map(|(class, (err, name))| {
            let (torch, at) = &spread[*class];
            format!(
                "{what:<6} {class:<15} gradient error {err:.2e} of the largest gradient \
                 (`{name}`); PyTorch float32 against float64 {torch:.2e} (`{at}`)"
            )
        })
        .collect();
    (lines, failures)
}

#[test]
fn one_sgd_and_one_adamw_step_match_pytorch_per_element() {
    let started = std::time::Instant::now();
    let r = reference();
    let inputs = Inputs::read();
    let dir = fixtures();
    let start = float_state(&dir.join("step_initial.safetensors"));
    let torch_grads = float_state(&dir.join("step_grads.safetensors"));
    let (mut report, mut failures) = (Vec::new(), Vec::new());
    let mut ran_grads = Vec::new();
    for name in ["sgd", "adamw"] {
        let case = &r.cases[name];
        assert_eq!(case.steps, 1);
        let ran = run(&r, case, &inputs);
        let loss_err = (ran.losses[0] - case.losses[0]).abs() / case.losses[0].abs();
        report.push(format!(
            "{name:<6} loss rekindle {:.7} PyTorch {:.7} (relative error {loss_err:.2e})",
            ran.losses[0], case.losses[0]
        ));
        if loss_err.is_nan() || loss_err > TOL {
            failures.push(format!("{name}: loss off by {loss_err:.2e}"));
        }
        check_lrs(name, &ran.lrs, &case.lrs, &mut failures);
        let (lines, fails) = compare_grads(name, &ran.grads, &torch_grads, &r.float64_grad_spread);
        report.extend(lines);
        failures.extend(fails);
        let theirs = float_state(&dir.join(format!("step_{name}.safetensors")));
        let allowance = match name {
            "sgd" => Allowance::Update,
            _ => Allowance::AdamW {
                grads: (&ran.grads, &torch_grads),
                eps: r.adamw_eps,
                lrs: [case.lrs[0][0], case.lrs[0][1]],
            },
        };
        let (lines, fails) = compare(name, &ran.after, &theirs, &start, &allowance);
        report.extend(lines);
        failures.extend(fails);
        ran_grads.push(ran.grads);
    }
    eprintln!(
        "ResNet-50, 64 px, batch {}, against torch {} (decision margin {:.0} rounding errors \
         after nudging {} BatchNorm biases; stem max-pool {:.0}); allowance: {TOL:e} of the \
         tensor's largest change + 2 ulps\n{}\n({:.1} s)",
        r.batch,
        r.torch,
        r.relu_margin,
        r.nudged_channels,
        r.pool_margin,
        report.join("\n"),
        started.elapsed().as_secs_f64()
    );
    // The two runs computed the same first step: the same gradients to the bit.
    assert!(
        ran_grads[0] == ran_grads[1],
        "the first step is not deterministic"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Both groups' learning rates of every step equal PyTorch's.
fn check_lrs(name: &str, ours: &[[f64; 2]], theirs: &[Vec<f64>], failures: &mut Vec<String>) {
    assert_eq!(ours.len(), theirs.len(), "{name}: steps");
    for (step, (a, t)) in ours.iter().zip(theirs).enumerate() {
        assert_eq!(t.len(), 2, "{name}: PyTorch's rates of step {step}: {t:?}");
        for (a, t) in a.iter().zip(t) {
            if a.is_nan() || (a - t).abs() > LR_TOL * t.abs() {
                failures.push(format!(
                    "{name} step {step}: learning rates rekindle {a:e} PyTorch {t:e}"
                ));
            }
        }
    }
}

#[test]
fn twenty_steps_with_warmup_cosine_and_smoothing_lose_what_pytorch_loses() {
    let started = std::time::Instant::now();
    let r = reference();
    let inputs = Inputs::read();
    let (mut report, mut failures) = (Vec::new(), Vec::new());
    for name in ["sgd_cosine", "adamw_cosine"] {
        let case = &r.cases[name];
        assert_eq!(case.steps, 20);
        let ran = run(&r, case, &inputs);
        check_lrs(name, &ran.lrs, &case.lrs, &mut failures);
        let mut worst = (0f64, 0);
        for (step, (a, t)) in ran.losses.iter().zip(&case.losses).enumerate() {
            let err = (a - t).abs() / t.abs();
            if err.is_nan() || err > worst.0 {
                worst = (err, step);
            }
            if err.is_nan() || err > TOL {
                failures.push(format!(
                    "{name} step {step}: loss rekindle {a} PyTorch {t} (relative error {err:.2e})"
                ));
            }
        }
        report.push(format!(
            "{name:<13} losses {:.4} -> {:.4}, largest relative error {:.2e} (step {}); \
             PyTorch float32 against float64 {:.2e}",
            case.losses[0],
            case.losses[case.steps - 1],
            worst.0,
            worst.1,
            case.float64_loss_spread
        ));
    }
    eprintln!(
        "ResNet-50, 64 px, batch {}, 20 steps against torch {}:\n{}\n({:.1} s)",
        r.batch,
        r.torch,
        report.join("\n"),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
