//! What travels with a model's weights: its architecture, classes and preprocessing.

use serde::{Deserialize, Serialize};

use crate::resnet::ResNetConfig;
use crate::{Arch, Error, HeadConfig};

/// Version of the metadata layout written by this crate.
pub const METADATA_VERSION: u32 = 1;

/// How images are turned into the model's input at evaluation time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Shorter side is resized to this many pixels before the centre crop.
    pub resize: usize,
    /// Side of the square centre crop: the model's input size.
    pub crop: usize,
    /// Per-channel mean subtracted after scaling pixels to [0, 1] (RGB order).
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after the mean (RGB order).
    pub std: [f32; 3],
}

impl Preprocess {
    /// torchvision's ImageNet evaluation transform: resize 256, crop 224, ImageNet mean/std.
    pub fn imagenet() -> Self {
        Self {
            resize: 256,
            crop: 224,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    /// Checks the values a hand-edited file can get wrong.
    pub fn validate(&self) -> Result<(), Error> {
        if self.crop == 0 || self.resize < self.crop {
            return Err(Error::InvalidConfig(format!(
                "preprocess: need 0 < crop <= resize, got crop {} and resize {}",
                self.crop, self.resize
            )));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err(Error::InvalidConfig(format!(
                "preprocess: mean must be finite and std positive, got mean {:?} std {:?}",
                self.mean, self.std
            )));
        }
        Ok(())
    }
}

/// Metadata saved inside every rekindle model file, beside the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMetadata {
    /// Layout version ([`METADATA_VERSION`]).
    pub version: u32,
    /// Architecture and head: enough to rebuild the module before loading weights.
    pub model: ResNetConfig,
    /// One name per output class, in logit order.
    pub class_names: Vec<String>,
    /// The evaluation transform the model expects.
    pub preprocess: Preprocess,
}

impl ModelMetadata {
    /// Metadata for `model` with the given class names and preprocessing.
    pub fn new(model: ResNetConfig, class_names: Vec<String>, preprocess: Preprocess) -> Self {
        Self {
            version: METADATA_VERSION,
            model,
            class_names,
            preprocess,
        }
    }

    /// ImageNet-style metadata with placeholder class names `class_0`, `class_1`, ...
    pub fn with_default_names(model: ResNetConfig) -> Self {
        let names = Self::default_class_names(model.head.num_classes);
        Self::new(model, names, Preprocess::imagenet())
    }

    /// Placeholder names `class_0` ... for a model whose classes were never named.
    pub fn default_class_names(num_classes: usize) -> Vec<String> {
        (0..num_classes).map(|i| format!("class_{i}")).collect()
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.model.arch
    }

    /// The head configuration.
    pub fn head(&self) -> &HeadConfig {
        &self.model.head
    }

    /// Checks internal consistency: version, head, class count and preprocessing.
    pub fn validate(&self) -> Result<(), Error> {
        if self.version != METADATA_VERSION {
            return Err(Error::InvalidConfig(format!(
                "metadata version {} is not supported (this build reads version {METADATA_VERSION})",
                self.version
            )));
        }
        self.model.validate()?;
        if self.class_names.len() != self.model.head.num_classes {
            return Err(Error::InvalidConfig(format!(
                "{} class names for a head with {} classes",
                self.class_names.len(),
                self.model.head.num_classes
            )));
        }
        self.preprocess.validate()
    }
}
