//! Turning a weights file into a rekindle model: read, normalise names, detect, apply, report.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use rekindle_model::burn::store::{
    ApplyError, FloatCastAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter,
};
use rekindle_model::burn::tensor::{DType, Device};
use rekindle_model::file::check_applied;
use rekindle_model::remap::{TORCHVISION_TO_REKINDLE, remap_key};
use rekindle_model::{Arch, HeadConfig, ModelMetadata, Preprocess, ResNet, ResNetConfig};

use crate::detect::{Detected, detect};
use crate::error::Error;
use crate::naming::{Naming, normalise};
use crate::source::{Format, read_tensors, sniff};

/// What the user may say about the file; everything else is read from it.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Expected depth; an error if the file holds another (unless `allow_partial`).
    pub arch: Option<Arch>,
    /// Classes of the head; an error if the file's classifier has another count, unless
    /// `allow_partial`, which then starts a fresh head of this size.
    pub num_classes: Option<usize>,
    /// Names of the classes, in logit order.
    pub class_names: Option<Vec<String>>,
    /// Load what fits and list what was skipped instead of failing.
    pub allow_partial: bool,
}

/// A model built from a weights file, with its metadata and what happened on the way.
pub struct Imported {
    /// The model, weights applied.
    pub model: ResNet,
    /// Metadata for the rekindle model file.
    pub metadata: ModelMetadata,
    /// What was read, applied, skipped and left over.
    pub report: Report,
}

/// What an import read, applied, skipped and left over.
#[derive(Debug)]
pub struct Report {
    /// The file.
    pub path: PathBuf,
    /// Its container format.
    pub format: Format,
    /// Its naming scheme.
    pub naming: Naming,
    /// The prefix stripped from its keys.
    pub prefix: String,
    /// What the tensors say the model is.
    pub detected: Detected,
    /// The model built.
    pub config: ResNetConfig,
    /// Number of tensors applied.
    pub applied: usize,
    /// Float tensors stored in another precision, by dtype, widened to float32 on load.
    pub cast: BTreeMap<String, usize>,
    /// Model tensors in the file that the model has no place for (BatchNorm step counters).
    pub unused: Vec<String>,
    /// Tensors outside the model's keys (optimizer state and the like).
    pub outside: Vec<String>,
    /// An ONNX graph whose exporter folded BatchNorm into the convolutions: the BatchNorm
    /// layers are identities carrying the folded bias, and the running statistics are gone.
    pub folded_batchnorm: bool,
    /// Tensors whose shape did not fit, skipped (only with `allow_partial`).
    pub skipped: Vec<String>,
    /// Model tensors the file lacks, left at their initial values (only with `allow_partial`).
    pub missing: Vec<String>,
}

/// Imports the weights file at `path` onto `device`.
pub fn import(path: &Path, options: &ImportOptions, device: &Device) -> Result<Imported, Error> {
    import_as(path, sniff(path)?, options, device)
}

/// Imports `path`, whose format the caller has already sniffed (see [`crate::source::sniff`]).
pub fn import_as(
    path: &Path,
    format: Format,
    options: &ImportOptions,
    device: &Device,
) -> Result<Imported, Error> {
    let (mut tensors, folded_batchnorm, written) = match format {
        Format::Onnx => {
            let w = crate::onnx::read_onnx(path)?;
            (w.tensors, w.folded, w.metadata)
        }
        _ => (read_tensors(path, format)?, false, None),
    };
    let norm = normalise(tensors.iter().map(|t| t.name.as_str())).ok_or_else(|| {
        let mut sample: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).take(5).collect();
        sample.sort();
        Error::NotAResNet {
            path: path.to_path_buf(),
            message: format!(
                "no key looks like a ResNet layer (`layer1.0.conv1.weight`, or Hugging Face's \
                 `resnet.encoder.stages.0...`); its {} tensors include {}",
                tensors.len(),
                sample.join(", ")
            ),
        }
    })?;
    let renames: HashMap<&str, &str> = norm
        .renames
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    tensors.retain_mut(|t| match renames.get(t.name.as_str()) {
        Some(tv) => {
            t.name = tv.to_string();
            true
        }
        None => false,
    });
    let shapes: BTreeMap<String, Vec<usize>> = tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect();
    let detected = detect(&shapes).map_err(|message| Error::NotAResNet {
        path: path.to_path_buf(),
        message,
    })?;

    let arch = options.arch.unwrap_or(detected.arch);
    let num_classes = options.num_classes.unwrap_or(detected.num_classes);
    let config = ResNetConfig::new(arch, HeadConfig::new(num_classes));
    config.validate()?;
    let class_names = match &options.class_names {
        Some(names) if names.len() != num_classes => {
            return Err(Error::Usage(format!(
                "{} class names given for a model with {num_classes} classes",
                names.len()
            )));
        }
        Some(names) => names.clone(),
        // A graph rekindle exported carries its classes (when the head kept its size).
        None => match &written {
            Some(m) if m.class_names.len() == num_classes => m.class_names.clone(),
            _ => ModelMetadata::default_class_names(num_classes),
        },
    };
    let preprocess = written
        .map(|m| m.preprocess)
        .unwrap_or_else(Preprocess::imagenet);

    let mut model = config.init(device);
    for t in &mut tensors {
        t.name = remap_key(TORCHVISION_TO_REKINDLE, &t.name);
    }
    let mut cast = BTreeMap::new();
    for t in tensors
        .iter()
        .filter(|t| t.dtype.is_float() && t.dtype != DType::F32)
    {
        *cast.entry(format!("{:?}", t.dtype)).or_insert(0) += 1;
    }
    // Half-precision checkpoints (common on the Hub) load into the float32 model.
    let adapter = PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32));
    let result = model.apply(tensors, None, Some(Box::new(adapter)), true);
    if !options.allow_partial
        && let Err(problems) = check_applied(&result)
    {
        let mut headline = Vec::new();
        if arch != detected.arch {
            headline.push(format!(
                "the file holds a {}, but {arch} was asked for",
                detected.arch
            ));
        }
        if num_classes != detected.num_classes {
            headline.push(format!(
                "the file's classifier has {} classes, but {num_classes} were asked for",
                detected.num_classes
            ));
        }
        headline.push(problems);
        headline.push("pass --allow-partial to load what fits and start the rest fresh".into());
        return Err(Error::Mismatch {
            path: path.to_path_buf(),
            message: headline.join("\n"),
        });
    }
    let skipped = result
        .errors
        .iter()
        .map(|e| match e {
            ApplyError::ShapeMismatch { path, .. }
            | ApplyError::DTypeMismatch { path, .. }
            | ApplyError::AdapterError { path, .. }
            | ApplyError::LoadError { path, .. } => path.clone(),
        })
        .collect();
    let report = Report {
        path: path.to_path_buf(),
        format,
        naming: norm.naming,
        prefix: norm.prefix,
        detected,
        config: config.clone(),
        applied: result.applied.len(),
        cast,
        folded_batchnorm,
        unused: result.unused,
        outside: norm.outside,
        skipped,
        missing: result.missing.into_iter().map(|(p, _)| p).collect(),
    };
    let metadata = ModelMetadata::new(config, class_names, preprocess);
    Ok(Imported {
        model,
        metadata,
        report,
    })
}

/// Lists at most a few names, then a count.
fn some(names: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(", ... ({} more)", names.len() - SHOWN));
    }
    s
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let naming = match (self.format, self.naming) {
            (Format::Onnx, _) if self.folded_batchnorm => {
                "mapped by graph structure, BatchNorm folded"
            }
            (Format::Onnx, _) => "mapped by graph structure",
            (_, Naming::Torchvision) => "torchvision/timm names",
            (_, Naming::HuggingFace) => "Hugging Face transformers names",
        };
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!(", keys prefixed `{}`", self.prefix)
        };
        writeln!(
            f,
            "source:       {} ({}, {naming}{prefix})",
            self.path.display(),
            self.format
        )?;
        writeln!(
            f,
            "architecture: {} (detected {} with {} classes)",
            self.config.arch, self.detected.arch, self.detected.num_classes
        )?;
        writeln!(f, "classes:      {}", self.config.head.num_classes)?;
        writeln!(f, "applied:      {} tensors", self.applied)?;
        if self.folded_batchnorm {
            writeln!(
                f,
                "note:         BatchNorm was folded into the convolutions by the exporter: \
                 inference is exact, but the running statistics are gone (each BatchNorm is \
                 an identity plus the folded bias). Fine-tuning with BatchNorm in training \
                 mode normalises with batch statistics the original weights never saw; prefer \
                 feature extraction, or the unfolded checkpoint"
            )?;
        }
        for (dtype, n) in &self.cast {
            writeln!(f, "precision:    {n} {dtype} tensors widened to F32")?;
        }
        let (counters, other): (Vec<String>, Vec<String>) = self
            .unused
            .iter()
            .cloned()
            .partition(|n| n.ends_with("num_batches_tracked"));
        if !counters.is_empty() {
            writeln!(
                f,
                "unused:       {} BatchNorm `num_batches_tracked` counters (Burn's BatchNorm keeps none)",
                counters.len()
            )?;
        }
        if !other.is_empty() {
            writeln!(f, "unused:       {} other: {}", other.len(), some(&other))?;
        }
        if !self.outside.is_empty() {
            writeln!(
                f,
                "ignored:      {} tensors outside the model's weights: {}",
                self.outside.len(),
                some(&self.outside)
            )?;
        }
        if !self.skipped.is_empty() {
            writeln!(
                f,
                "skipped:      {} tensors of another shape: {}",
                self.skipped.len(),
                some(&self.skipped)
            )?;
        }
        if !self.missing.is_empty() {
            writeln!(
                f,
                "fresh:        {} tensors not in the file: {}",
                self.missing.len(),
                some(&self.missing)
            )?;
        }
        Ok(())
    }
}
