//! The architecture is torchvision's: a ResNet built here loads a torchvision `state_dict`
//! through the documented remap ([`rekindle_model::remap`]) and gives PyTorch's logits, and two
//! whole training steps of ResNet-18 (train-mode forward, cross-entropy, backward, Burn's SGD
//! with momentum and weight decay, BatchNorm running statistics) give PyTorch's updated state.
//! ResNet-50's training steps are checked through rekindle-train's own optimiser, groups and
//! schedule, per element, by `train/tests/it/step_parity.rs`.
//!
//! Fixtures come from `scripts/make_fixtures.py` (run by `cargo xtask test`); their folder is
//! `$REKINDLE_FIXTURES`, or `fixtures/` at the workspace root.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::store::{
    BurnToPyTorchAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, SafetensorsStore,
    bridge,
};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use rekindle_model::file::check_applied;
use rekindle_model::remap::{REKINDLE_TO_TORCHVISION, TORCHVISION_TO_REKINDLE, remap_key};
use rekindle_model::{Arch, ResNet, ResNetConfig};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    input_shape: [usize; 4],
    input: Vec<f32>,
    logits: std::collections::HashMap<String, Vec<f32>>,
    learnable_params: std::collections::HashMap<String, usize>,
}

fn fixtures() -> PathBuf {
    let dir = std::env::var_os("REKINDLE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures"));
    assert!(
        dir.join("reference.json").exists(),
        "no PyTorch fixtures in {}: run `cargo xtask test` (or `cargo xtask fixtures`) first",
        dir.display()
    );
    dir
}

fn reference() -> Reference {
    let path = fixtures().join("reference.json");
    let text = std::fs::read_to_string(&path).expect("read reference.json");
    serde_json::from_str(&text).expect("parse reference.json")
}

fn torchvision_store(arch: Arch) -> SafetensorsStore {
    torchvision_file_store(fixtures().join(format!("{arch}.safetensors")))
}

/// A torchvision-layout safetensors file, read into this crate's module paths.
fn torchvision_file_store(path: PathBuf) -> SafetensorsStore {
    let mut store = SafetensorsStore::from_file(path)
        .with_from_adapter(PyTorchToBurnAdapter)
        .skip_enum_variants(true)
        .validate(false)
        .allow_partial(true);
    for (from, to) in TORCHVISION_TO_REKINDLE {
        store = store.with_key_remapping(*from, *to);
    }
    store
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check_logits(arch: Arch) {
    let reference = reference();
    let device = Device::flex();
    let mut model = ResNetConfig::imagenet(arch).init(&device);
    let result = model
        .load_from(&mut torchvision_store(arch))
        .expect("read safetensors");
    check_applied(&result).unwrap();
    // Only BatchNorm's step counters are left over: Burn's BatchNorm has none.
    assert!(!result.unused.is_empty());
    assert!(
        result
            .unused
            .iter()
            .all(|k| k.ends_with("num_batches_tracked")),
        "unexpected unused tensors: {:?}",
        result.unused
    );

    let input = Tensor::<4>::from_data(
        TensorData::new(reference.input.clone(), reference.input_shape),
        &device,
    );
    let logits = model
        .forward(input)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let expected = &reference.logits[arch.name()];
    let err = max_abs_diff(&logits, expected);
    let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    println!("{arch}: max |logit| {scale:.3}, max abs diff vs PyTorch {err:.2e}");
    assert!(scale > 1.0, "fixture logits should have ordinary magnitude");
    assert!(err < 1e-4, "{arch}: logits differ from PyTorch by {err:e}");
}

#[test]
fn resnet18_matches_pytorch_logits() {
    check_logits(Arch::Resnet18);
}

#[test]
fn resnet50_matches_pytorch_logits() {
    check_logits(Arch::Resnet50);
}

#[test]
fn learnable_parameter_counts_equal_torchvisions() {
    let reference = reference();
    let device = Device::flex();
    for arch in Arch::ALL {
        let model = ResNetConfig::imagenet(arch).init(&device);
        assert_eq!(
            model.num_learnable_params(),
            reference.learnable_params[arch.name()],
            "{arch}"
        );
    }
}

#[test]
fn weights_of_another_depth_are_refused_with_the_keys_at_fault() {
    let device = Device::flex();
    let mut model = ResNetConfig::imagenet(Arch::Resnet50).init(&device);
    let result = model
        .load_from(&mut torchvision_store(Arch::Resnet18))
        .unwrap();
    let err = check_applied(&result).unwrap_err();
    assert!(
        err.contains(
            "`layer1.0.conv1.weight`: the model has shape [64, 64, 1, 1], the file [64, 64, 3, 3]"
        ),
        "{err}"
    );
    assert!(err.contains("165 missing from the file:"), "{err}");
    assert!(err.contains("`layer1.0.bn3.gamma`"), "{err}");
}

/// `train_step.json`: the batch and optimiser settings of `NAME_train_step{1,2}.safetensors`.
#[derive(Deserialize)]
struct TrainStep {
    input_shape: [usize; 4],
    input: Vec<f32>,
    labels: Vec<i64>,
    steps: usize,
    lr: f64,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    weight_decay: f64,
    losses: std::collections::HashMap<String, Vec<f32>>,
    margins: std::collections::HashMap<String, Vec<f64>>,
}

/// A model's float tensors under torchvision's names and layout.
type State = BTreeMap<String, Vec<f32>>;

/// Element tolerance: `|rekindle - pytorch| <= STEP_TOL * max(1, |pytorch|)` for every element
/// (and for each step's loss). Absolute for the weights, nearly all below 1 in magnitude;
/// relative for running variances, which reach ~30. Float32 summation order alone gives ~2e-6
/// on ResNet-18's weights and <1e-6 on running statistics; every tensor moves by more than
/// 1e-3 in each step (the fixture script checks), so a missing or misscaled update fails.
/// The fixture's batch keeps ResNet-18's ReLU inputs 10 rounding errors from zero: one that
/// the two libraries round to opposite sides would move every gradient below it by percents.
const STEP_TOL: f32 = 1e-4;

fn train_step_fixture() -> TrainStep {
    let path = fixtures().join("train_step.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `cargo xtask fixtures` to regenerate the fixtures",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("parse train_step.json")
}

/// PyTorch's state after `step` training steps (0: the starting weights).
fn reference_state(arch: Arch, step: usize) -> State {
    let path = match step {
        0 => fixtures().join(format!("{arch}.safetensors")),
        s => fixtures().join(format!("{arch}_train_step{s}.safetensors")),
    };
    let mut store = SafetensorsStore::from_file(path);
    let tensors = store.get_all_tensors().expect("read safetensors");
    // The BatchNorm step counters (int64) are left out: Burn's BatchNorm keeps none.
    tensors
        .iter()
        .filter(|(_, t)| t.dtype == DType::F32)
        .map(|(name, t)| {
            let data = bridge::to_data(t).expect("tensor data");
            (name.clone(), data.try_to_vec::<f32>().expect("f32 data"))
        })
        .collect()
}

/// The model's tensors under torchvision's names and layout, as `export` writes them.
fn rekindle_state(model: &ResNet) -> State {
    // Burn's BatchNorm keeps its latest running-statistics update aside (per thread) until a
    // sync, which `valid()` performs on the state it shares with `model`: a snapshot taken
    // without it misses the last step, and a load would be overwritten by the next forward.
    let _ = model.valid();
    model
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .iter()
        .map(|t| {
            let data = bridge::to_data(t).expect("tensor data");
            let name = remap_key(REKINDLE_TO_TORCHVISION, &t.name);
            (name, data.try_to_vec::<f32>().expect("f32 data"))
        })
        .collect()
}

/// Burn's state after each of the fixture's training steps, and each step's loss.
struct Trained {
    after: Vec<State>,
    losses: Vec<f32>,
}

/// Runs the fixture's training steps with Burn's own SGD, loss and BatchNorm. Every step after
/// the first starts from PyTorch's weights and running statistics of the step before (the
/// optimiser keeps its own momentum): a ReLU input within float32 rounding of zero can switch
/// sides between the two libraries, and a step taken from weights that already differ would
/// compound that instead of measuring the step.
fn train(arch: Arch) -> Trained {
    let fixture = train_step_fixture();
    let device = Device::flex().autodiff();
    let mut model = ResNetConfig::imagenet(arch).init(&device);
    let x = Tensor::<4>::from_data(TensorData::new(fixture.input, fixture.input_shape), &device);
    let batch = fixture.labels.len();
    let y = Tensor::<1, Int>::from_data(TensorData::new(fixture.labels, [batch]), &device);
    // torch.optim.SGD's update: weight decay added to the gradient, then momentum without
    // dampening (Burn's default dampening is 0.1, PyTorch's 0).
    let mut optim = SgdConfig::new()
        .with_weight_decay(Some(WeightDecayConfig::new(fixture.weight_decay as f32)))
        .with_momentum(Some(
            MomentumConfig::new()
                .with_momentum(fixture.momentum)
                .with_dampening(fixture.dampening)
                .with_nesterov(fixture.nesterov),
        ))
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let (mut after, mut losses) = (Vec::new(), Vec::new());
    for step in 1..=fixture.steps {
        let mut start = match step {
            1 => torchvision_store(arch),
            s => torchvision_file_store(
                fixtures().join(format!("{arch}_train_step{}.safetensors", s - 1)),
            ),
        };
        // Loading keeps each parameter's id, so the optimiser's momentum stays attached; the
        // running statistics were synced by `rekindle_state` after the previous step.
        let result = model.load_from(&mut start).expect("read safetensors");
        check_applied(&result).unwrap();
        let loss = loss_fn.forward(model.forward(x.clone()), y.clone());
        losses.push(loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(fixture.lr, model, grads);
        after.push(rekindle_state(&model));
    }
    Trained { after, losses }
}

fn trained(arch: Arch) -> &'static Trained {
    static RESNET18: OnceLock<Trained> = OnceLock::new();
    let cell = match arch {
        Arch::Resnet18 => &RESNET18,
        other => panic!("no training-step fixture for {other}"),
    };
    cell.get_or_init(|| train(arch))
}

/// Which tensors of the state a test compares.
#[derive(Clone, Copy, Debug)]
enum Part {
    /// Learnable parameters: convolution and Linear weights and biases, BatchNorm weight/bias.
    Weights,
    /// BatchNorm `running_mean`.
    RunningMean,
    /// BatchNorm `running_var`.
    RunningVar,
}

impl Part {
    fn holds(self, key: &str) -> bool {
        match self {
            Part::Weights => !key.ends_with(".running_mean") && !key.ends_with(".running_var"),
            Part::RunningMean => key.ends_with(".running_mean"),
            Part::RunningVar => key.ends_with(".running_var"),
        }
    }
}

/// Compares one part of Burn's state after each training step with PyTorch's, every element
/// within [`STEP_TOL`], and names the worst element and the worst tensor update.
fn check_train_steps(arch: Arch, part: Part) {
    let trained = trained(arch);
    let fixture = train_step_fixture();
    let mut failures = Vec::new();
    let mut start = reference_state(arch, 0);
    for (i, ours) in trained.after.iter().enumerate() {
        let step = i + 1;
        let theirs = reference_state(arch, step);
        let keys: Vec<&String> = theirs.keys().filter(|k| part.holds(k)).collect();
        let our_keys: Vec<&String> = ours.keys().filter(|k| part.holds(k)).collect();
        assert_eq!(our_keys, keys, "{arch}: {part:?} keys");
        assert!(!keys.is_empty(), "{arch}: no {part:?} tensors");
        // (scaled error, key, index) of the worst element, (relative error, key) of the worst
        // tensor update, and the squared norms of all errors and all updates together
        let mut worst_elem = (-1.0f32, String::new(), 0usize);
        let mut worst_update = (-1.0f64, String::new());
        let (mut all_err2, mut all_moved2) = (0.0f64, 0.0f64);
        for key in keys {
            let (a, r, s) = (&ours[key], &theirs[key], &start[key]);
            assert_eq!(a.len(), r.len(), "{arch}: `{key}` length");
            let (mut err2, mut moved2) = (0.0f64, 0.0f64);
            for (j, ((a, r), s)) in a.iter().zip(r).zip(s).enumerate() {
                let scaled = (a - r).abs() / r.abs().max(1.0);
                // A NaN counts as the worst error.
                if scaled.is_nan() || scaled > worst_elem.0 {
                    worst_elem = (scaled, key.clone(), j);
                }
                err2 += f64::from(a - r).powi(2);
                moved2 += f64::from(r - s).powi(2);
            }
            let rel = (err2 / moved2).sqrt();
            if rel.is_nan() || rel > worst_update.0 {
                worst_update = (rel, key.clone());
            }
            (all_err2, all_moved2) = (all_err2 + err2, all_moved2 + moved2);
        }
        let (scaled, key, j) = worst_elem;
        let (a, r) = (ours[&key][j], theirs[&key][j]);
        let line = format!(
            "{arch} step {step} {part:?}: worst element `{key}`[{j}] rekindle {a} PyTorch {r} \
             (error {:.2e}, scaled {scaled:.2e}); worst update `{}` off by {:.2e} of its norm, \
             all updates by {:.2e}; loss rekindle {} PyTorch {}; decision margin {:.3}",
            (a - r).abs(),
            worst_update.1,
            worst_update.0,
            (all_err2 / all_moved2).sqrt(),
            trained.losses[i],
            fixture.losses[arch.name()][i],
            fixture.margins[arch.name()][i],
        );
        println!("{line}");
        let expected_loss = fixture.losses[arch.name()][i];
        let loss_ok =
            (trained.losses[i] - expected_loss).abs() <= STEP_TOL * expected_loss.max(1.0);
        if !(loss_ok && scaled <= STEP_TOL) {
            failures.push(line);
        }
        start = theirs;
    }
    assert!(
        failures.is_empty(),
        "{arch}: {part:?} differ from PyTorch after the training steps (elements within \
         {STEP_TOL:e} x max(1, |PyTorch|)):\n{}",
        failures.join("\n")
    );
}

#[test]
fn resnet18_train_steps_match_pytorch_weights() {
    check_train_steps(Arch::Resnet18, Part::Weights);
}

#[test]
fn resnet18_train_steps_match_pytorch_running_mean() {
    check_train_steps(Arch::Resnet18, Part::RunningMean);
}

#[test]
fn resnet18_train_steps_match_pytorch_running_var() {
    check_train_steps(Arch::Resnet18, Part::RunningVar);
}
