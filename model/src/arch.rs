//! The five torchvision ResNet depths and the table that defines each.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::stage::Stage;

/// A ResNet depth, as torchvision names it (`resnet18` ... `resnet152`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// ResNet-18: basic blocks [2, 2, 2, 2].
    Resnet18,
    /// ResNet-34: basic blocks [3, 4, 6, 3].
    Resnet34,
    /// ResNet-50: bottleneck blocks [3, 4, 6, 3].
    Resnet50,
    /// ResNet-101: bottleneck blocks [3, 4, 23, 3].
    Resnet101,
    /// ResNet-152: bottleneck blocks [3, 8, 36, 3].
    Resnet152,
}

/// Which residual block a depth is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convolutions (ResNet-18/34); expansion 1.
    Basic,
    /// 1x1 reduce, 3x3 (carrying the stride, "v1.5"), 1x1 expand (ResNet-50/101/152); expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// Both kinds.
    pub const ALL: [BlockKind; 2] = [BlockKind::Basic, BlockKind::Bottleneck];

    /// Convolutions on a block's main path (its downsample aside): 2 or 3.
    pub fn convs(self) -> usize {
        match self {
            BlockKind::Basic => 2,
            BlockKind::Bottleneck => 3,
        }
    }

    /// Output channels of a block divided by its `planes` (torchvision's `expansion`).
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

impl Arch {
    /// Every depth, shallowest first.
    pub const ALL: [Arch; 5] = [
        Arch::Resnet18,
        Arch::Resnet34,
        Arch::Resnet50,
        Arch::Resnet101,
        Arch::Resnet152,
    ];

    /// The block type of this depth.
    pub fn block(self) -> BlockKind {
        match self {
            Arch::Resnet18 | Arch::Resnet34 => BlockKind::Basic,
            _ => BlockKind::Bottleneck,
        }
    }

    /// Number of blocks in each of the four stages (`layer1` ... `layer4`).
    pub fn layers(self) -> [usize; 4] {
        match self {
            Arch::Resnet18 => [2, 2, 2, 2],
            Arch::Resnet34 | Arch::Resnet50 => [3, 4, 6, 3],
            Arch::Resnet101 => [3, 4, 23, 3],
            Arch::Resnet152 => [3, 8, 36, 3],
        }
    }

    /// Number of residual blocks in `stage` (none in the stem).
    pub fn blocks(self, stage: Stage) -> usize {
        Stage::LAYERS
            .iter()
            .position(|s| *s == stage)
            .map_or(0, |i| self.layers()[i])
    }

    /// Width of the pooled embedding that feeds the classifier (512 or 2048).
    pub fn feature_dim(self) -> usize {
        512 * self.block().expansion()
    }

    /// The torchvision name, e.g. `resnet50`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Resnet18 => "resnet18",
            Arch::Resnet34 => "resnet34",
            Arch::Resnet50 => "resnet50",
            Arch::Resnet101 => "resnet101",
            Arch::Resnet152 => "resnet152",
        }
    }

    /// The depth whose stage layout and block type are these, if any.
    pub fn from_layout(block: BlockKind, layers: [usize; 4]) -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.block() == block && a.layers() == layers)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = Error;

    /// Accepts `resnet50`, `ResNet-50`, `resnet_50` or just `50`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .collect::<String>()
            .to_ascii_lowercase();
        let digits = norm.strip_prefix("resnet").unwrap_or(&norm);
        Arch::ALL
            .into_iter()
            .find(|a| &a.name()["resnet".len()..] == digits)
            .ok_or_else(|| Error::UnknownArch {
                name: s.to_string(),
                valid: Arch::ALL
                    .iter()
                    .map(|a| a.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_spellings() {
        for s in ["resnet50", "ResNet-50", "resnet_50", "50", "RESNET50"] {
            assert_eq!(s.parse::<Arch>().unwrap(), Arch::Resnet50, "{s}");
        }
        for a in Arch::ALL {
            assert_eq!(a.name().parse::<Arch>().unwrap(), a);
            assert_eq!(Arch::from_layout(a.block(), a.layers()), Some(a));
        }
    }

    #[test]
    fn blocks_per_stage_follow_the_layer_table() {
        assert_eq!(Arch::Resnet152.blocks(Stage::Layer2), 8);
        for a in Arch::ALL {
            assert_eq!(Stage::LAYERS.map(|s| a.blocks(s)), a.layers(), "{a}");
            assert_eq!(a.blocks(Stage::Stem), 0);
        }
    }

    #[test]
    fn unknown_name_lists_the_valid_ones() {
        let err = "resnet51".parse::<Arch>().unwrap_err().to_string();
        assert!(err.contains("resnet51"), "{err}");
        assert!(
            err.contains("resnet18, resnet34, resnet50, resnet101, resnet152"),
            "{err}"
        );
        assert!("".parse::<Arch>().is_err());
        assert!("vgg16".parse::<Arch>().is_err());
    }
}
