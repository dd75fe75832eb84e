//! Reading a ResNet's depth and class count off its torchvision-named tensors.

use std::collections::BTreeMap;

use rekindle_model::{Arch, BlockKind};

/// What the tensors say about the model they came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    /// The depth.
    pub arch: Arch,
    /// Rows of `fc.weight`.
    pub num_classes: usize,
}

/// Detects depth and classes from torchvision key names and shapes.
pub fn detect(shapes: &BTreeMap<String, Vec<usize>>) -> Result<Detected, String> {
    if !shapes.contains_key("conv1.weight") {
        return Err("no `conv1.weight` (the stem convolution)".into());
    }
    let kind = if shapes.contains_key("layer1.0.conv3.weight") {
        BlockKind::Bottleneck
    } else {
        BlockKind::Basic
    };
    let mut layers = [0usize; 4];
    for key in shapes.keys() {
        let Some(rest) = key.strip_prefix("layer") else {
            continue;
        };
        let mut parts = rest.splitn(3, '.');
        let (Some(stage), Some(block)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(stage), Ok(block)) = (stage.parse::<usize>(), block.parse::<usize>()) else {
            continue;
        };
        if (1..=4).contains(&stage) {
            layers[stage - 1] = layers[stage - 1].max(block + 1);
        }
    }
    let arch = Arch::from_layout(kind, layers).ok_or_else(|| {
        format!(
            "{kind:?} blocks in stages of {layers:?} match no torchvision depth \
             (resnet18/34: basic [2,2,2,2]/[3,4,6,3]; resnet50/101/152: bottleneck [3,4,6,3]/[3,4,23,3]/[3,8,36,3])"
        )
    })?;
    let fc = shapes
        .get("fc.weight")
        .ok_or_else(|| format!("a {arch} backbone without a classifier (`fc.weight`)"))?;
    let [classes, features] = fc[..] else {
        return Err(format!(
            "`fc.weight` has shape {fc:?}, expected [classes, features]"
        ));
    };
    if features != arch.feature_dim() {
        return Err(format!(
            "`fc.weight` takes {features} features, but a {arch} produces {}",
            arch.feature_dim()
        ));
    }
    Ok(Detected {
        arch,
        num_classes: classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rekindle_model::ResNetConfig;
    use rekindle_model::burn::store::{BurnToPyTorchAdapter, ModuleSnapshot};
    use rekindle_model::burn::tensor::Device;
    use rekindle_model::remap::{REKINDLE_TO_TORCHVISION, remap_key};

    /// torchvision-named shapes of a model built here.
    fn shapes_of(arch: Arch, classes: usize) -> BTreeMap<String, Vec<usize>> {
        let model =
            ResNetConfig::new(arch, rekindle_model::HeadConfig::new(classes)).init(&Device::flex());
        model
            .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
            .into_iter()
            .map(|t| {
                (
                    remap_key(REKINDLE_TO_TORCHVISION, &t.name),
                    t.shape.to_vec(),
                )
            })
            .collect()
    }

    #[test]
    fn detects_every_depth_and_class_count() {
        for (arch, classes) in [
            (Arch::Resnet18, 10),
            (Arch::Resnet34, 3),
            (Arch::Resnet50, 1000),
            (Arch::Resnet101, 7),
            (Arch::Resnet152, 2),
        ] {
            assert_eq!(
                detect(&shapes_of(arch, classes)),
                Ok(Detected {
                    arch,
                    num_classes: classes
                })
            );
        }
    }

    #[test]
    fn explains_what_is_not_a_resnet() {
        let mut s = shapes_of(Arch::Resnet18, 5);
        s.retain(|k, _| !k.starts_with("layer4.1"));
        let err = detect(&s).unwrap_err();
        assert!(err.contains("[2, 2, 2, 1]"), "{err}");
        let mut s = shapes_of(Arch::Resnet50, 5);
        s.remove("fc.weight");
        assert!(detect(&s).unwrap_err().contains("without a classifier"));
        assert!(
            detect(&BTreeMap::new())
                .unwrap_err()
                .contains("conv1.weight")
        );
    }
}
