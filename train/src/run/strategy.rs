//! Fine-tuning strategies: which parts of the network train, through Burn's `freeze`, which
//! also puts frozen BatchNorm layers in inference mode so their running statistics stay put.

use burn::module::ParamGroup;
use rekindle_model::{ResNet, Stage};

use crate::config::{Strategy, TrainSection};

/// How many of `Stage::ALL` (stem first) stay frozen during `epoch` (1-based).
pub fn frozen_depth(t: &TrainSection, epoch: usize) -> usize {
    let all = Stage::ALL.len();
    match t.strategy {
        Strategy::Full => 0,
        Strategy::FeatureExtraction => all,
        Strategy::Partial => Stage::ALL
            .iter()
            .position(|s| *s == t.freeze_to)
            .map_or(0, |i| i + 1),
        Strategy::Gradual => all - ((epoch.max(1) - 1) / t.unfreeze_every.max(1)).min(all),
    }
}

/// Consecutive epochs that one launch of Burn's learner trains: the same layers, the same
/// batch size: `first..=last` with `depth` stages frozen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase {
    /// First epoch of the phase, 1-based.
    pub first: usize,
    /// Last epoch of the phase, inclusive.
    pub last: usize,
    /// Stages frozen, counted from the stem.
    pub depth: usize,
    /// Images per batch.
    pub batch_size: usize,
}

/// The batch size of `epoch` (1-based) under `train.batch_schedule`.
pub fn batch_size(t: &TrainSection, epoch: usize) -> usize {
    t.batch_schedule
        .iter()
        .filter(|[from, _]| *from <= epoch)
        .map(|[_, size]| *size)
        .next_back()
        .unwrap_or(t.batch_size)
}

/// The run's epochs cut where the frozen depth or the batch size changes, and at every epoch
/// when `every_epoch` (a plateau schedule learns its rate between epochs).
pub fn phases(t: &TrainSection, every_epoch: bool) -> Vec<Phase> {
    let mut out: Vec<Phase> = Vec::new();
    for epoch in 1..=t.epochs {
        let depth = frozen_depth(t, epoch);
        let batch_size = batch_size(t, epoch);
        match out.last_mut() {
            Some(p) if p.depth == depth && p.batch_size == batch_size && !every_epoch => {
                p.last = epoch
            }
            _ => out.push(Phase {
                first: epoch,
                last: epoch,
                depth,
                batch_size,
            }),
        }
    }
    out
}

/// What a person reads for the phase: which stages train.
pub fn describe(depth: usize) -> String {
    match depth {
        0 => "full fine-tuning".into(),
        d if d >= Stage::ALL.len() => "feature extraction (backbone frozen)".into(),
        d => {
            let names = Stage::ALL.map(Stage::name);
            format!(
                "{} frozen, {} train",
                names[..d].join("+"),
                names[d..].join("+")
            )
        }
    }
}

/// Which parameters a learning-rate group holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupParams {
    /// One stage.
    Stage(Stage),
    /// Everything but the head.
    Backbone,
}

/// A learning-rate group: a name (for logs and `cargo xtask schedule`), its parameters and its
/// multiple of `train.lr`. The head, in no group, trains at `train.lr` itself.
#[derive(Clone, Debug, PartialEq)]
pub struct LrGroup {
    /// `layer4` .. `stem`, or `backbone`.
    pub name: String,
    /// The parameters it holds.
    pub params: GroupParams,
    /// Its rate as a multiple of `train.lr`.
    pub mult: f64,
}

/// The learning-rate groups `t` asks for, without a network: the backbone at
/// `backbone_lr_mult`, and with layer-wise decay `d` layer4 at `d`, layer3 at `d^2`, .., the
/// stem at `d^5` (times `backbone_lr_mult`).
pub fn lr_groups(t: &TrainSection) -> Vec<LrGroup> {
    if t.layer_decay != 1.0 {
        Stage::ALL
            .into_iter()
            .rev()
            .enumerate()
            .map(|(k, stage)| LrGroup {
                name: stage.name().to_string(),
                params: GroupParams::Stage(stage),
                mult: t.backbone_lr_mult * t.layer_decay.powi(k as i32 + 1),
            })
            .collect()
    } else if t.backbone_lr_mult != 1.0 {
        vec![LrGroup {
            name: "backbone".into(),
            params: GroupParams::Backbone,
            mult: t.backbone_lr_mult,
        }]
    } else {
        Vec::new()
    }
}

/// The groups as Burn parameter groups of `net`, for the scheduler.
pub fn param_groups(groups: &[LrGroup], net: &ResNet) -> Vec<(String, ParamGroup, f64)> {
    groups
        .iter()
        .map(|g| {
            let ids = match g.params {
                GroupParams::Stage(stage) => net.stage_params(stage),
                GroupParams::Backbone => {
                    ParamGroup::all().exclude(ParamGroup::ids_from_module(net.head.clone()))
                }
            };
            (g.name.clone(), ids, g.mult)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::{Device, Tensor};
    use rekindle_model::{Arch, HeadConfig, ResNetConfig};

    /// Counts trainable and frozen float parameters.
    #[derive(Default)]
    struct Counter {
        trainable: usize,
        frozen: usize,
    }

    impl ModuleVisitor for Counter {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.is_require_grad() {
                self.trainable += param.val().shape().num_elements();
            } else {
                self.frozen += param.val().shape().num_elements();
            }
        }
    }

    fn count(net: &ResNet) -> Counter {
        let mut c = Counter::default();
        net.visit(&mut c);
        c
    }

    #[test]
    fn feature_extraction_trains_only_the_head() {
        let device = Device::flex().autodiff();
        let net = || ResNetConfig::new(Arch::Resnet18, HeadConfig::new(3)).init(&device);
        let head = 512 * 3 + 3;
        let depth = |strategy| {
            let t = TrainSection {
                strategy,
                ..Default::default()
            };
            frozen_depth(&t, 1)
        };
        let c = count(&net().freeze_stages(depth(Strategy::FeatureExtraction)));
        assert_eq!(c.trainable, head);
        // Gradual unfreezing starts as feature extraction.
        assert_eq!(depth(Strategy::Gradual), depth(Strategy::FeatureExtraction));
        let full = count(&net().freeze_stages(depth(Strategy::Full)));
        // BatchNorm running statistics are never trainable; everything learnable is.
        assert_eq!(full.trainable, net().num_learnable_params());
        let partial = count(&net().freeze_stages(depth(Strategy::Partial)));
        assert!(partial.trainable > head && partial.frozen > 0);
        assert!(partial.frozen < c.frozen);
    }

    #[test]
    fn gradual_unfreezing_thaws_one_stage_every_n_epochs_from_the_top() {
        let t = TrainSection {
            strategy: Strategy::Gradual,
            unfreeze_every: 2,
            epochs: 13,
            ..Default::default()
        };
        let p = phases(&t, false);
        let spans: Vec<_> = p.iter().map(|p| (p.first, p.last, p.depth)).collect();
        assert_eq!(
            spans,
            [
                (1, 2, 5),
                (3, 4, 4),
                (5, 6, 3),
                (7, 8, 2),
                (9, 10, 1),
                (11, 13, 0)
            ]
        );
        assert_eq!(
            describe(4),
            "stem+layer1+layer2+layer3 frozen, layer4 train"
        );
        // Every other strategy is one phase over the whole run.
        for strategy in [
            Strategy::Full,
            Strategy::FeatureExtraction,
            Strategy::Partial,
        ] {
            let t = TrainSection {
                strategy,
                ..t.clone()
            };
            assert_eq!(phases(&t, false).len(), 1);
            assert_eq!(
                (phases(&t, false)[0].first, phases(&t, false)[0].last),
                (1, 13)
            );
            assert_eq!(phases(&t, true).len(), 13);
        }
        // A batch-size schedule cuts phases where the size changes.
        let t = TrainSection {
            strategy: Strategy::Full,
            batch_schedule: vec![[4, 64], [9, 128]],
            ..t
        };
        let sizes: Vec<_> = phases(&t, false)
            .iter()
            .map(|p| (p.first, p.last, p.batch_size))
            .collect();
        assert_eq!(sizes, [(1, 3, 32), (4, 8, 64), (9, 13, 128)]);
    }

    #[test]
    fn each_depth_freezes_a_prefix_of_the_network() {
        let device = Device::flex().autodiff();
        let net = || ResNetConfig::new(Arch::Resnet18, HeadConfig::new(3)).init(&device);
        let frozen: Vec<usize> = (0..=Stage::ALL.len())
            .map(|d| count(&net().freeze_stages(d)).frozen)
            .collect();
        // Each deeper freeze adds the next stage's parameters; BatchNorm running statistics
        // (never trainable) are the baseline at depth 0.
        assert!(frozen.windows(2).all(|w| w[0] < w[1]), "{frozen:?}");
        assert_eq!(
            frozen[Stage::ALL.len()] - frozen[0],
            net().num_learnable_params() - (512 * 3 + 3)
        );
    }
}
