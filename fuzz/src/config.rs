//! The `config` target: a train config parsed and validated, as `cargo xtask train --config`
//! does before anything runs.

use rekindle_train::config::TrainConfig;

/// The defaults written out (every key), and a config using each optional section.
pub fn seeds() -> Vec<Vec<u8>> {
    let full = TrainConfig::default().to_toml();
    let sections = r#"
[model]
source = "torchvision"
arch = "resnet18"
num_classes = 3
drop_path = 0.1

[data]
kind = "manifest"
root = "data/train.csv"
val_fraction = 0.2
auto_augment = "rand-m9-mstd0.5"
random_erasing = 0.25
sampler = "balanced"

[train]
epochs = 3
batch_size = 8
lr = 0.01
optimizer = "adamw"
schedule = "cosine"
warmup_epochs = 1

[loss]
label_smoothing = 0.1
class_weights = [1.0, 2.0, 0.5]

[mixup]
mixup_alpha = 0.8
cutmix_alpha = 1.0
prob = 1.0

[ema]
decay = 0.999
"#;
    vec![full.into_bytes(), sections.as_bytes().to_vec()]
}

/// Parses and validates `input` as a train config.
pub fn run(input: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(input).map_err(|e| format!("not UTF-8: {e}"))?;
    let config = TrainConfig::from_toml(text)?;
    config.validate().map_err(|e| e.to_string())
}
