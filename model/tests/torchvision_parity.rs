//! The architecture is torchvision's: a ResNet built here loads a torchvision `state_dict`
//! through the documented remap ([`rekindle_model::remap`]) and gives PyTorch's logits.
//!
//! Fixtures come from `scripts/make_fixtures.py` (run by `cargo xtask test`); their folder is
//! `$REKINDLE_FIXTURES`, or `fixtures/` at the workspace root.

use std::path::PathBuf;

use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::{Device, Tensor, TensorData};
use rekindle_model::file::check_applied;
use rekindle_model::remap::TORCHVISION_TO_REKINDLE;
use rekindle_model::{Arch, ResNetConfig};
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
    let path = fixtures().join(format!("{arch}.safetensors"));
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
