//! The five stages of a ResNet, stem first: the units a fine-tuning schedule freezes, thaws and
//! gives learning rates, named as torchvision names their modules.

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, ParamGroup};
use serde::{Deserialize, Serialize};

use crate::norm::Norm;
use crate::{Error, ResNet};

/// One stage of the backbone; the head is not a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// `conv1` + `bn1` (+ the parameterless max-pool).
    Stem,
    /// `layer1`: 64 planes, stride 1.
    Layer1,
    /// `layer2`: 128 planes, stride 2.
    Layer2,
    /// `layer3`: 256 planes, stride 2.
    Layer3,
    /// `layer4`: 512 planes, stride 2.
    Layer4,
}

impl Stage {
    /// Every stage, in network order (input first).
    pub const ALL: [Stage; 5] = [
        Stage::Stem,
        Stage::Layer1,
        Stage::Layer2,
        Stage::Layer3,
        Stage::Layer4,
    ];

    /// The four stages of residual blocks, in network order (every stage but the stem).
    pub const LAYERS: [Stage; 4] = [Stage::Layer1, Stage::Layer2, Stage::Layer3, Stage::Layer4];

    /// The name in configs and torchvision keys: `stem`, `layer1` ... `layer4`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Stem => "stem",
            Stage::Layer1 => "layer1",
            Stage::Layer2 => "layer2",
            Stage::Layer3 => "layer3",
            Stage::Layer4 => "layer4",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Stage {
    type Err = Error;

    /// Exactly the names configs use (see [`Stage::name`]), so a name parses here iff serde
    /// reads it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.name() == s)
            .ok_or_else(|| Error::UnknownStage {
                name: s.to_string(),
                valid: Stage::ALL.map(Stage::name).join(", "),
            })
    }
}

impl<N: Norm> ResNet<N> {
    /// The ids of `stage`'s parameters (BatchNorm statistics and training flags included), for
    /// per-stage learning rates and freezing.
    pub fn stage_params(&self, stage: Stage) -> ParamGroup {
        match stage {
            Stage::Stem => ParamGroup::ids_from_module((self.conv1.clone(), self.bn1.clone())),
            layer => ParamGroup::ids_from_module(self.blocks(layer).to_vec()),
        }
    }

    /// The network with the first `depth` stages of [`Stage::ALL`] frozen (0: none, 5 or more:
    /// the whole backbone). Burn's freeze also stops their BatchNorms updating running
    /// statistics, so a frozen stage computes exactly what it did before training.
    pub fn freeze_stages(self, depth: usize) -> Self {
        let group = Stage::ALL
            .iter()
            .take(depth)
            .map(|stage| self.stage_params(*stage))
            .reduce(|all, group| all.fuse(&group));
        match group {
            Some(group) => self.freeze_group(group),
            None => self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::Block;
    use crate::params::{PathVisitor, is_running_stat, visit_with_paths};
    use crate::{Arch, HeadConfig, ResNetConfig};
    use burn::module::{Flag, ModuleVisitor, Param, ParamId};
    use burn::tensor::{Device, Tensor};

    #[test]
    fn names_parse_print_and_serialize_alike() {
        let names: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["stem", "layer1", "layer2", "layer3", "layer4"]);
        for stage in Stage::ALL {
            let json = serde_json::to_string(&stage).unwrap();
            assert_eq!(json, format!("\"{stage}\""));
            assert_eq!(serde_json::from_str::<Stage>(&json).unwrap(), stage);
            assert_eq!(stage.name().parse::<Stage>().unwrap(), stage);
        }
        assert_eq!(Stage::ALL[1..], Stage::LAYERS);
    }

    #[test]
    fn unknown_stage_lists_the_valid_ones() {
        for bad in ["layer5", "Layer1", "", "head"] {
            let err = bad.parse::<Stage>().unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
            assert!(
                err.contains("stem, layer1, layer2, layer3, layer4"),
                "{err}"
            );
            assert!(serde_json::from_str::<Stage>(&format!("\"{bad}\"")).is_err());
        }
    }

    fn resnet18() -> ResNet {
        let device = Device::flex().autodiff();
        ResNetConfig::new(Arch::Resnet18, HeadConfig::new(3)).init(&device)
    }

    /// Paths (`layer1.0.Basic.conv1.weight`) of the learnable parameters that do not train.
    #[derive(Default)]
    struct Frozen(Vec<String>);

    impl PathVisitor for Frozen {
        fn visit<const D: usize>(&mut self, path: &[String], param: &Param<Tensor<D>>) {
            if !is_running_stat(path) && !param.is_require_grad() {
                self.0.push(path.join("."));
            }
        }
    }

    fn frozen(net: &ResNet) -> Vec<String> {
        let mut frozen = Frozen::default();
        visit_with_paths(net, &mut frozen);
        frozen.0
    }

    #[test]
    fn freezing_two_stages_freezes_exactly_the_stem_and_layer1() {
        let net = resnet18().freeze_stages(2);
        let frozen = frozen(&net);
        let top: Vec<&str> = frozen.iter().map(|p| &p[..p.find('.').unwrap()]).collect();
        assert!(top.contains(&"conv1") && top.contains(&"bn1") && top.contains(&"layer1"));
        assert!(
            top.iter().all(|t| ["conv1", "bn1", "layer1"].contains(t)),
            "{frozen:?}"
        );
        // Frozen with its convolution, a BatchNorm keeps its running statistics.
        let bn_training = |b: &Block| match b {
            Block::Basic(b) => b.bn2.training.is_enabled(),
            Block::Bottleneck(b) => b.bn2.training.is_enabled(),
        };
        assert!(!net.bn1.training.is_enabled());
        assert!(!bn_training(&net.layer1[1]));
        assert!(bn_training(&net.layer2[0]));
    }

    #[test]
    fn freezing_depth_counts_stages_from_the_stem() {
        assert!(frozen(&resnet18().freeze_stages(0)).is_empty());
        let backbone = frozen(&resnet18().freeze_stages(Stage::ALL.len()));
        assert!(!backbone.is_empty());
        assert!(backbone.iter().all(|p| !p.starts_with("head.")));
        assert!(backbone.iter().any(|p| p.starts_with("layer4.")));
        assert_eq!(frozen(&resnet18().freeze_stages(99)), backbone);
        let counts: Vec<usize> = (0..=5)
            .map(|d| frozen(&resnet18().freeze_stages(d)).len())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] < w[1]), "{counts:?}");
    }

    /// Every parameter id of a module, flags included (what a `ParamGroup` of ids holds).
    #[derive(Default)]
    struct Ids(Vec<ParamId>);

    impl ModuleVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.id);
        }
        fn visit_flag(&mut self, flag: &Param<Flag>) {
            self.0.push(flag.id);
        }
    }

    #[test]
    fn stage_params_and_the_head_partition_the_network() {
        for arch in [Arch::Resnet18, Arch::Resnet50] {
            let net = ResNetConfig::new(arch, HeadConfig::new(3)).init(&Device::flex());
            let mut groups: Vec<ParamGroup> = Stage::ALL
                .map(|s| net.stage_params(s))
                .into_iter()
                .collect();
            groups.push(ParamGroup::ids_from_module(net.head.clone()));
            let mut ids = Ids::default();
            net.visit(&mut ids);
            let mut sizes = vec![0; groups.len()];
            for id in &ids.0 {
                let owners: Vec<usize> = (0..groups.len())
                    .filter(|g| groups[*g].matches(id, None))
                    .collect();
                assert_eq!(owners.len(), 1, "{arch}: {id} is in groups {owners:?}");
                sizes[owners[0]] += 1;
            }
            assert!(sizes.iter().all(|n| *n > 0), "{arch}: {sizes:?}");
            // The stem is conv1's weight and bn1's gamma, beta, statistics and flag.
            assert_eq!(sizes[0], 6, "{arch}");
            assert!(groups[0].matches(&net.bn1.gamma.id, None));
            let conv1 = |b: &Block| match b {
                Block::Basic(b) => b.conv1.weight.id,
                Block::Bottleneck(b) => b.conv1.weight.id,
            };
            assert!(groups[1].matches(&conv1(&net.layer1[0]), None));
            assert!(groups[4].matches(&conv1(&net.layer4[0]), None));
        }
    }
}
