//! Fine-tuning strategies: which parts of the network train, through Burn's `freeze`, which
//! also puts frozen BatchNorm layers in inference mode so their running statistics stay put.

use burn::module::{Module, ParamGroup};
use rekindle_model::ResNet;

use crate::config::{STAGES, Strategy};
use crate::trainee::Trainee;

/// Freezes what `strategy` keeps fixed. `freeze_to` is the last frozen stage for `Partial`.
pub fn apply(mut net: ResNet, strategy: Strategy, freeze_to: &str) -> ResNet {
    let last = match strategy {
        Strategy::Full => return net,
        Strategy::FeatureExtraction => STAGES.len() - 1,
        Strategy::Partial => STAGES.iter().position(|s| *s == freeze_to).unwrap_or(0),
    };
    net.conv1 = net.conv1.freeze();
    net.bn1 = net.bn1.freeze();
    let stages = [
        &mut net.layer1,
        &mut net.layer2,
        &mut net.layer3,
        &mut net.layer4,
    ];
    for (i, stage) in stages.into_iter().enumerate() {
        if i < last {
            *stage = std::mem::take(stage)
                .into_iter()
                .map(|b| b.freeze())
                .collect();
        }
    }
    net
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
        let c = count(&apply(net(), Strategy::FeatureExtraction, "layer2"));
        assert_eq!(c.trainable, head);
        let full = count(&apply(net(), Strategy::Full, "layer2"));
        // BatchNorm running statistics are never trainable; everything learnable is.
        assert_eq!(full.trainable, net().num_learnable_params());
        let partial = count(&apply(net(), Strategy::Partial, "layer2"));
        assert!(partial.trainable > head && partial.frozen > 0);
        assert!(partial.frozen < c.frozen);
    }
}
