//! What the end-to-end tests share: the binary, with its own cache, and a tiny model file.

use std::path::Path;
use std::process::Command;

use burn::tensor::Device;
use rekindle_model::{ModelMetadata, Preprocess, ResNetConfig, save_model};

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
