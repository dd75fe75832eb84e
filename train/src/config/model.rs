//! `[model]`: where the starting weights come from and the head put on them.

use std::path::PathBuf;

use rekindle_model::Arch;
use serde::{Deserialize, Serialize};

use super::names;

/// Where a run's starting weights come from; written `"random"` or a path in the config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(from = "String", into = "String")]
pub enum ModelSource {
    /// torchvision's initialisation, seeded by `train.seed`.
    Random,
    /// A rekindle model file, or a `.pth`/`.pt`/`.safetensors`/`.onnx` file to import; told
    /// apart by its first bytes, not its name.
    File(PathBuf),
}

impl From<String> for ModelSource {
    fn from(s: String) -> Self {
        if s == "random" {
            Self::Random
        } else {
            Self::File(s.into())
        }
    }
}

impl From<ModelSource> for String {
    fn from(s: ModelSource) -> Self {
        match s {
            ModelSource::Random => "random".into(),
            ModelSource::File(p) => p.display().to_string(),
        }
    }
}

/// `[model]`: the starting point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// `random`, a rekindle model file (`.bpk`), or a `.pth`/`.pt`/`.safetensors` file to import.
    pub source: ModelSource,
    /// Architecture for `random` (none: resnet18), or to check a file against (none: detect).
    #[serde(with = "names::optional", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub arch: Option<Arch>,
    /// Width of an optional hidden layer in the new head.
    pub head_hidden: Option<usize>,
    /// Dropout before the new head's last layer.
    pub head_dropout: f64,
    /// timm's `drop_path_rate`: stochastic depth of the last residual block in training,
    /// rising linearly from 0 at the first (0: off).
    pub drop_path: f64,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            source: ModelSource::Random,
            arch: None,
            head_hidden: None,
            head_dropout: 0.0,
            drop_path: 0.0,
        }
    }
}
