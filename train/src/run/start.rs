//! The starting network of a run: random, a rekindle model file, or pretrained weights to
//! import; its file format sniffed once from the first bytes. Then the run's own head and
//! initialisation, and the input size the data will be prepared at.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use rekindle_import::{Format, ImportOptions};
use rekindle_model::{Arch, HeadConfig, ModelMetadata, Preprocess, ResNet, ResNetConfig};

use crate::catalog::reinit;
use crate::config::{ModelSource, TrainConfig};
use crate::error::TrainError;

/// The network a run starts from, with its head for `classes` classes, and its preprocessing.
pub fn open(
    cfg: &TrainConfig,
    classes: usize,
    device: &Device,
) -> Result<(ResNet, Preprocess), TrainError> {
    let head = HeadConfig {
        num_classes: classes,
        hidden: cfg.model.head_hidden,
        dropout: cfg.model.head_dropout,
    };
    device.seed(cfg.train.seed);
    let (net, pre) = match &cfg.model.source {
        ModelSource::Random => {
            let config = ResNetConfig {
                arch: cfg.model.arch.unwrap_or(Arch::Resnet18),
                head: head.clone(),
            };
            config.validate()?;
            (config.init(device), Preprocess::imagenet())
        }
        ModelSource::File(path) => {
            let (net, meta) = load(path, cfg.model.arch, device)?;
            (net, meta.preprocess)
        }
    };
    // Loaded weights arrive untracked; every parameter trains until the strategy freezes some.
    // Fine-tuning replaces the classifier: a fresh head, sized for this dataset, seeded.
    let net = net
        .unfreeze()
        .with_head(&head, device)
        .with_drop_path(cfg.model.drop_path);
    let net = initialise(net, cfg)?;
    Ok((net, cfg.data.preprocess(&pre)?))
}

/// A model file as it is, or any other weights file through the importer; `arch`, when given,
/// must match what the file holds.
fn load(
    path: &Path,
    arch: Option<Arch>,
    device: &Device,
) -> Result<(ResNet, ModelMetadata), TrainError> {
    let (net, meta) = match rekindle_import::sniff(path)? {
        Format::Burnpack => rekindle_model::load_model(path, device)?,
        format => {
            let options = ImportOptions {
                arch,
                ..Default::default()
            };
            let imported = rekindle_import::import_as(path, format, &options, device)?;
            (imported.model, imported.metadata)
        }
    };
    if let Some(a) = arch
        && a != net.arch()
    {
        return Err(TrainError::Config(format!(
            "model.arch is {a} but {} holds a {}",
            path.display(),
            net.arch()
        )));
    }
    Ok((net, meta))
}

/// `[init]` applied to the parameters in its scope; the default leaves the fresh head with
/// PyTorch's default initialisation, which it already has.
fn initialise(net: ResNet, cfg: &TrainConfig) -> Result<ResNet, TrainError> {
    if cfg.init.is_fresh_head_default() {
        return Ok(net);
    }
    let (net, n) = reinit::apply(net, &cfg.init, cfg.train.seed).map_err(TrainError::Config)?;
    eprintln!(
        "initialised {n} parameter tensor(s) ({:?} scope) with {:?}",
        cfg.init.scope, cfg.init.scheme
    );
    Ok(net)
}
