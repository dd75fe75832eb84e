//! What the end-to-end tests share: the binary, with its own cache, its output as text, a tiny
//! model file, a small image folder, and a model's tensors as bytes to compare bitwise.

// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

pub mod backends;
pub mod images;
pub mod weights;

use std::path::Path;
use std::process::{Command, Output};

use burn::store::ModuleSnapshot;
use burn::tensor::Device;
use rekindle_model::{ModelMetadata, Preprocess, ResNetConfig, load_model, save_model};

/// The `rekindle-train` binary, caching under the temporary directory.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rekindle-train"));
    c.env(
        "REKINDLE_CACHE",
        std::env::temp_dir().join("rekindle-train-tests"),
    );
    c
}

/// A random ResNet-18 saved as a model file for the classes `blue, green, red` at 16 px.
pub fn random_model(path: &Path) {
    let device = Device::flex();
    let net = ResNetConfig::new(
        rekindle_model::Arch::Resnet18,
        rekindle_model::HeadConfig::new(3),
    )
    .init(&device);
    let pre = Preprocess {
        resize: 16,
        crop: 16,
        ..Preprocess::imagenet()
    };
    let names = ["blue", "green", "red"].map(String::from).to_vec();
    save_model(path, &net, &ModelMetadata::new(net.config(), names, pre)).unwrap();
}

/// Standard output then standard error of a finished process, for messages and checks.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` (the `rekindle-train` binary) and fails the test, with its output, unless it
/// succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("start rekindle-train");
    assert!(
        out.status.success(),
        "rekindle-train failed:\n{}",
        text(&out)
    );
    out
}

/// Every tensor of the model file `path`, by name, as raw bytes.
pub fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    named_bytes(&load_model(path, &Device::flex()).unwrap().0)
}

/// Every tensor of `net`, sorted by name, as raw bytes.
pub fn named_bytes(net: &rekindle_model::ResNet) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = net
        .collect(None, None, false)
        .into_iter()
        .map(|s| (s.name.clone(), s.to_bytes().unwrap().to_vec()))
        .collect();
    v.sort();
    v
}
