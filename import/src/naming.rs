//! Normalising the key names of every source to torchvision's.
//!
//! Sources differ in three ways: a prefix in front of every key (`module.` from DataParallel,
//! `state_dict.` or `model.` when a checkpoint nests the weights), Hugging Face transformers'
//! own names for the same layers, and extra entries beside the weights (optimizer state,
//! epoch counters). timm uses torchvision's names already.

use std::collections::BTreeSet;

use regex::Regex;

/// Which naming scheme a file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// torchvision / timm: `conv1`, `layer1.0.conv1`, `fc`.
    Torchvision,
    /// Hugging Face `ResNetForImageClassification`: `resnet.embedder...`, `classifier.1`.
    HuggingFace,
}

/// The result of looking at a file's keys: the scheme, the prefix stripped, and the mapping.
#[derive(Debug)]
pub struct Normalised {
    /// The scheme found.
    pub naming: Naming,
    /// The prefix every model key had (`module.`, `state_dict.module.`, ... or empty).
    pub prefix: String,
    /// (source key, torchvision key) for every key of the model.
    pub renames: Vec<(String, String)>,
    /// Keys outside the model (optimizer state and the like), left out.
    pub outside: Vec<String>,
}

/// Anchors: a key that every ResNet has, in each scheme.
const ANCHORS: [(Naming, &str); 2] = [
    (Naming::Torchvision, "layer1.0.conv1.weight"),
    (
        Naming::HuggingFace,
        "resnet.encoder.stages.0.layers.0.layer.0.convolution.weight",
    ),
];

/// Finds the scheme and prefix of a set of keys and maps them to torchvision names.
/// `None` when no key looks like a ResNet's.
pub fn normalise<'a>(keys: impl IntoIterator<Item = &'a str>) -> Option<Normalised> {
    let keys: BTreeSet<&str> = keys.into_iter().collect();
    // The shortest prefix wins: `module.layer1...` beats `ema.module.layer1...`.
    let (naming, prefix) = keys
        .iter()
        .filter_map(|k| {
            ANCHORS.iter().find_map(|(naming, anchor)| {
                k.strip_suffix(anchor)
                    .filter(|p| p.is_empty() || p.ends_with('.'))
                    .map(|p| (*naming, p.to_string()))
            })
        })
        .min_by_key(|(_, p)| p.len())?;
    let hf = HfRules::new();
    let mut renames = Vec::new();
    let mut outside = Vec::new();
    for key in keys {
        match key.strip_prefix(prefix.as_str()) {
            Some(rest) => {
                let tv = match naming {
                    Naming::Torchvision => Some(rest.to_string()),
                    Naming::HuggingFace => hf.to_torchvision(rest),
                };
                match tv {
                    Some(tv) => renames.push((key.to_string(), tv)),
                    None => outside.push(key.to_string()),
                }
            }
            None => outside.push(key.to_string()),
        }
    }
    Some(Normalised {
        naming,
        prefix,
        renames,
        outside,
    })
}

/// Hugging Face transformers ResNet names -> torchvision names. Stage and layer numbers shift
/// by one (`stages.0` is `layer1`, `layer.0` is `conv1`), which a regex alone cannot do.
struct HfRules {
    stem: Regex,
    block: Regex,
    classifier: Regex,
}

impl HfRules {
    fn new() -> Self {
        // Constant patterns: a failure here is a bug caught by every test.
        let re = |p: &str| Regex::new(p).expect("valid HF naming regex");
        Self {
            stem: re(r"^resnet\.embedder\.embedder\.(convolution|normalization)\.(.+)$"),
            block: re(
                r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(?:layer\.(\d+)|(shortcut))\.(convolution|normalization)\.(.+)$",
            ),
            classifier: re(r"^classifier\.1\.(weight|bias)$"),
        }
    }

    fn to_torchvision(&self, key: &str) -> Option<String> {
        if let Some(c) = self.stem.captures(key) {
            let layer = if &c[1] == "convolution" {
                "conv1"
            } else {
                "bn1"
            };
            return Some(format!("{layer}.{}", &c[2]));
        }
        if let Some(c) = self.classifier.captures(key) {
            return Some(format!("fc.{}", &c[1]));
        }
        let c = self.block.captures(key)?;
        let stage: usize = c[1].parse().ok()?;
        let conv = &c[5] == "convolution";
        let layer = match c.get(3) {
            Some(k) => {
                let k: usize = k.as_str().parse().ok()?;
                format!("{}{}", if conv { "conv" } else { "bn" }, k + 1)
            }
            None => format!("downsample.{}", if conv { 0 } else { 1 }),
        };
        Some(format!("layer{}.{}.{layer}.{}", stage + 1, &c[2], &c[6]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(keys: &[&str]) -> Normalised {
        normalise(keys.iter().copied()).expect("a ResNet")
    }

    #[test]
    fn torchvision_keys_pass_through_and_prefixes_go() {
        let n = map(&[
            "module.conv1.weight",
            "module.layer1.0.conv1.weight",
            "epoch_marker",
        ]);
        assert_eq!(n.naming, Naming::Torchvision);
        assert_eq!(n.prefix, "module.");
        assert!(
            n.renames
                .contains(&("module.conv1.weight".into(), "conv1.weight".into()))
        );
        assert_eq!(n.outside, ["epoch_marker"]);

        let n = map(&[
            "state_dict.module.layer1.0.conv1.weight",
            "optimizer.state.0.momentum_buffer",
        ]);
        assert_eq!(n.prefix, "state_dict.module.");
        assert_eq!(n.outside, ["optimizer.state.0.momentum_buffer"]);
    }

    #[test]
    fn hugging_face_names_map_to_torchvision() {
        let cases = [
            (
                "resnet.embedder.embedder.convolution.weight",
                "conv1.weight",
            ),
            (
                "resnet.embedder.embedder.normalization.running_var",
                "bn1.running_var",
            ),
            (
                "resnet.encoder.stages.0.layers.0.layer.0.convolution.weight",
                "layer1.0.conv1.weight",
            ),
            (
                "resnet.encoder.stages.3.layers.2.layer.2.normalization.bias",
                "layer4.2.bn3.bias",
            ),
            (
                "resnet.encoder.stages.1.layers.0.shortcut.convolution.weight",
                "layer2.0.downsample.0.weight",
            ),
            (
                "resnet.encoder.stages.1.layers.0.shortcut.normalization.num_batches_tracked",
                "layer2.0.downsample.1.num_batches_tracked",
            ),
            ("classifier.1.weight", "fc.weight"),
        ];
        let n = map(&cases.map(|(hf, _)| hf));
        assert_eq!(n.naming, Naming::HuggingFace);
        for (hf, tv) in cases {
            assert!(
                n.renames.contains(&(hf.into(), tv.into())),
                "{hf} -> {tv}: {:?}",
                n.renames
            );
        }
    }

    #[test]
    fn no_resnet_no_mapping() {
        assert!(normalise(["encoder.layers.0.weight", "decoder.bias"]).is_none());
        assert!(normalise([]).is_none());
        // A suffix match inside a longer name is not an anchor.
        assert!(normalise(["xlayer1.0.conv1.weight"]).is_none());
    }
}
