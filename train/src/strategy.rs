//! Fine-tuning strategies: which parts of the network train, through Burn's `freeze`, which
//! also puts frozen BatchNorm layers in inference mode so their running statistics stay put.

use burn::module::{Module, ParamGroup};
use rekindle_model::ResNet;

use crate::config::{STAGES, Strategy, TrainSection};
use crate::trainee::Trainee;

/// How many of `STAGES` (stem first) stay frozen during `epoch` (1-based).
pub fn frozen_depth(t: &TrainSection, epoch: usize) -> usize {
    let all = STAGES.len();
    match t.strategy {
        Strategy::Full => 0,
        Strategy::FeatureExtraction => all,
        Strategy::Partial => STAGES.iter().position(|s| *s == t.freeze_to).unwrap_or(0) + 1,
        Strategy::Gradual => all - ((epoch.max(1) - 1) / t.unfreeze_every.max(1)).min(all),
    }
}

/// Consecutive epochs that train the same layers: `first..=last` with `depth` stages frozen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase {
    /// First epoch of the phase, 1-based.
    pub first: usize,
    /// Last epoch of the phase, inclusive.
    pub last: usize,
    /// Stages frozen, counted from the stem.
    pub depth: usize,
}

/// The run's epochs cut where the frozen depth changes (one phase unless `gradual`).
pub fn phases(t: &TrainSection) -> Vec<Phase> {
    let mut out: Vec<Phase> = Vec::new();
    for epoch in 1..=t.epochs {
        let depth = frozen_depth(t, epoch);
        match out.last_mut() {
            Some(p) if p.depth == depth => p.last = epoch,
            _ => out.push(Phase {
                first: epoch,
                last: epoch,
                depth,
            }),
        }
    }
    out
}

/// Freezes the first `depth` of `STAGES` (0: nothing, 5: the whole backbone).
pub fn apply(mut net: ResNet, depth: usize) -> ResNet {
    if depth == 0 {
        return net;
    }
    net.conv1 = net.conv1.freeze();
    net.bn1 = net.bn1.freeze();
    let stages = [
        &mut net.layer1,
        &mut net.layer2,
        &mut net.layer3,
        &mut net.layer4,
    ];
    for (i, stage) in stages.into_iter().enumerate() {
        if i + 1 < depth {
            *stage = std::mem::take(stage)
                .into_iter()
                .map(|b| b.freeze())
                .collect();
        }
    }
    net
}

/// What a person reads for the phase: which stages train.
pub fn describe(depth: usize) -> String {
    match depth {
        0 => "full fine-tuning".into(),
        d if d >= STAGES.len() => "feature extraction (backbone frozen)".into(),
        d => format!(
            "{} frozen, {} train",
            STAGES[..d].join("+"),
            STAGES[d..].join("+")
        ),
    }
}

/// Every parameter but the head's: the group the backbone learning rate applies to.
pub fn backbone_group(model: &Trainee) -> ParamGroup {
    ParamGroup::all().exclude(ParamGroup::ids_from_module(model.net.head.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{ModuleVisitor, Param};
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
        let c = count(&apply(net(), depth(Strategy::FeatureExtraction)));
        assert_eq!(c.trainable, head);
        // Gradual unfreezing starts as feature extraction.
        assert_eq!(depth(Strategy::Gradual), depth(Strategy::FeatureExtraction));
        let full = count(&apply(net(), depth(Strategy::Full)));
        // BatchNorm running statistics are never trainable; everything learnable is.
        assert_eq!(full.trainable, net().num_learnable_params());
        let partial = count(&apply(net(), depth(Strategy::Partial)));
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
        let p = phases(&t);
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
            assert_eq!(phases(&t).len(), 1);
            assert_eq!((phases(&t)[0].first, phases(&t)[0].last), (1, 13));
        }
    }

    #[test]
    fn each_depth_freezes_a_prefix_of_the_network() {
        let device = Device::flex().autodiff();
        let net = || ResNetConfig::new(Arch::Resnet18, HeadConfig::new(3)).init(&device);
        let frozen: Vec<usize> = (0..=STAGES.len())
            .map(|d| count(&apply(net(), d)).frozen)
            .collect();
        // Each deeper freeze adds the next stage's parameters; BatchNorm running statistics
        // (never trainable) are the baseline at depth 0.
        assert!(frozen.windows(2).all(|w| w[0] < w[1]), "{frozen:?}");
        assert_eq!(
            frozen[STAGES.len()] - frozen[0],
            net().num_learnable_params() - (512 * 3 + 3)
        );
    }
}
