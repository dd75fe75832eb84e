//! The small model the fuzz targets and the fuzzed service start from, and the device it runs
//! on: a leaf of its own so that the targets and the service's requests both use it.

use std::path::Path;

use rekindle_model::burn::tensor::Device;
use rekindle_model::{Arch, HeadConfig, ModelMetadata, Preprocess, ResNetConfig};

/// The device fuzzing runs on: the backend this binary was built with (flex by default). A
/// binary whose backend has no device here cannot fuzz at all, hence the panic.
pub fn device() -> Device {
    rekindle_model::Backend::default_compiled()
        .device()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A small, valid model file (its bytes, written in `dir` first): a ResNet-18 with two classes for 24x24 inputs.
pub fn model_file_bytes(dir: &Path) -> Vec<u8> {
    let device = device();
    device.seed(5);
    let config = ResNetConfig::new(Arch::Resnet18, HeadConfig::new(2));
    let net = config.init(&device);
    let pre = Preprocess {
        resize: 28,
        crop: 24,
        ..Preprocess::imagenet()
    };
    let path = dir.join("seed.bpk");
    let metadata = ModelMetadata::new(config, vec!["a".into(), "b".into()], pre);
    match rekindle_model::save_model(&path, &net, &metadata).and_then(|_| {
        std::fs::read(&path).map_err(|e| rekindle_model::Error::Io { path, source: e })
    }) {
        Ok(bytes) => bytes,
        Err(e) => panic!("cannot make the model-file seed: {e}"),
    }
}
