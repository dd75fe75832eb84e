//! The ResNet itself, laid out like torchvision's `resnet.py`: stem, four stages, pooling, head.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, PaddingConfig2d, conv::Conv2d};
use burn::tensor::{Device, Tensor};

use crate::Error;
use crate::arch::{Arch, BlockKind};
use crate::block::{Block, BlockConfig, bn, conv};
use crate::drop_path::block_rate;
use crate::head::{Head, HeadConfig};
use crate::norm::Norm;
use crate::params::{PathVisitor, is_running_stat, visit_with_paths};
use crate::running;
use crate::stage::Stage;

/// Configuration of a ResNet: its depth and its classifier head.
#[derive(Config, Debug, PartialEq)]
pub struct ResNetConfig {
    /// Depth: resnet18, resnet34, resnet50, resnet101 or resnet152.
    pub arch: Arch,
    /// The classifier head.
    pub head: HeadConfig,
}

/// A torchvision-exact ResNet. Field names follow torchvision's so a `state_dict` maps with the
/// few remaps in [`crate::remap`]. `N` is BatchNorm as trained, [`burn::nn::Identity`] once
/// folded into the convolutions ([`ResNet::fold_batchnorm`]).
#[derive(Module, Debug)]
pub struct ResNet<N: Norm = BatchNorm> {
    /// Stem: 7x7, stride 2, 64 channels, no bias.
    pub conv1: Conv2d,
    /// Stem BatchNorm.
    pub bn1: N,
    /// Stem 3x3 max-pool, stride 2, padding 1.
    pub maxpool: MaxPool2d,
    /// Stage 1: 64 planes, stride 1.
    pub layer1: Vec<Block<N>>,
    /// Stage 2: 128 planes, stride 2.
    pub layer2: Vec<Block<N>>,
    /// Stage 3: 256 planes, stride 2.
    pub layer3: Vec<Block<N>>,
    /// Stage 4: 512 planes, stride 2.
    pub layer4: Vec<Block<N>>,
    /// Global average pool to 1x1.
    pub avgpool: AdaptiveAvgPool2d,
    /// Classifier head (torchvision's `fc`).
    pub head: Head,
}

impl ResNetConfig {
    /// A depth with torchvision's ImageNet head (1000 classes).
    pub fn imagenet(arch: Arch) -> Self {
        Self::new(arch, HeadConfig::new(1000))
    }

    /// Checks the values a user can get wrong.
    pub fn validate(&self) -> Result<(), Error> {
        self.head.validate()
    }

    /// Builds the model with torchvision's initialisation (Kaiming-normal fan-out convs,
    /// BatchNorm gamma 1 / beta 0, PyTorch-default Linear).
    ///
    /// # Panics
    /// On a config that [`ResNetConfig::validate`] rejects.
    pub fn init(&self, device: &Device) -> ResNet {
        let kind = self.arch.block();
        let mut in_channels = 64;
        let mut stage = |planes: usize, blocks: usize, stride: usize| -> Vec<Block> {
            (0..blocks)
                .map(|i| {
                    let block = BlockConfig::new(in_channels, planes)
                        .with_stride(if i == 0 { stride } else { 1 })
                        .init(kind, device);
                    in_channels = planes * kind.expansion();
                    block
                })
                .collect()
        };
        let [n1, n2, n3, n4] = self.arch.layers();
        let (layer1, layer2, layer3, layer4) = (
            stage(64, n1, 1),
            stage(128, n2, 2),
            stage(256, n3, 2),
            stage(512, n4, 2),
        );
        ResNet {
            conv1: conv(3, 64, 7, 2).init(device),
            bn1: bn(64).init(device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            head: self.head.init(self.arch.feature_dim(), device),
        }
    }
}

impl<N: Norm> ResNet<N> {
    /// The pooled embedding `[batch, 512 or 2048]` of images `[batch, 3, height, width]`.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.bn1.after(&self.conv1, x, None, true);
        let mut x = crate::pool::max_pool(&self.maxpool, x);
        for block in self.stages().into_iter().flatten() {
            x = block.forward(x);
        }
        self.avgpool.forward(x).flatten(1, 3)
    }

    /// Logits `[batch, num_classes]` of images `[batch, 3, height, width]`.
    ///
    /// It runs on rayon's pool ([`rekindle_kernels::on_pool`]): from outside it, every parallel
    /// kernel would put this thread to sleep and wake it again (1.5x at batch 1, 64 px). In
    /// training, BatchNorm's running statistics are moved afterwards on this thread (see
    /// [`crate::running`]): Burn keeps them per thread.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let (logits, deferred) = rekindle_kernels::on_pool(|| {
            running::deferring(|| self.head.forward(self.features(x)))
        });
        deferred.apply();
        logits
    }

    /// The same backbone with a freshly initialised head for `num_classes` classes (keeping the
    /// head's hidden layer and dropout settings).
    pub fn with_classes(self, num_classes: usize, device: &Device) -> Self {
        let head = HeadConfig {
            num_classes,
            ..self.head.config()
        };
        self.with_head(&head, device)
    }

    /// The same backbone with a freshly initialised head built from `head`.
    pub fn with_head(self, head: &HeadConfig, device: &Device) -> Self {
        let in_features = self.head.in_features();
        Self {
            head: head.init(in_features, device),
            ..self
        }
    }

    /// The residual blocks of `stage` (none in the stem).
    pub fn blocks(&self, stage: Stage) -> &[Block<N>] {
        match stage {
            Stage::Stem => &[],
            Stage::Layer1 => &self.layer1,
            Stage::Layer2 => &self.layer2,
            Stage::Layer3 => &self.layer3,
            Stage::Layer4 => &self.layer4,
        }
    }

    /// The blocks of the four residual stages, in network order.
    pub fn stages(&self) -> [&[Block<N>]; 4] {
        Stage::LAYERS.map(|stage| self.blocks(stage))
    }

    /// The depth, read off the stage lengths and block type.
    pub fn arch(&self) -> Arch {
        let kind = self
            .layer1
            .first()
            .map_or(BlockKind::Bottleneck, Block::kind);
        let layers = self.stages().map(|s| s.len());
        // A ResNet can only be built through `ResNetConfig`, whose arch is one of these.
        Arch::from_layout(kind, layers).expect("ResNet built from a known Arch")
    }

    /// The configuration this model was built from, read off its layers.
    pub fn config(&self) -> ResNetConfig {
        ResNetConfig::new(self.arch(), self.head.config())
    }

    /// Number of learnable parameters, as PyTorch counts them (BatchNorm running statistics
    /// excluded; Burn's `num_params()` includes them).
    pub fn num_learnable_params(&self) -> usize {
        let mut counter = LearnableCounter::default();
        visit_with_paths(self, &mut counter);
        counter.count
    }
}

/// Counts float parameters, skipping BatchNorm's `running_mean` / `running_var` buffers.
#[derive(Default)]
struct LearnableCounter {
    count: usize,
}

impl PathVisitor for LearnableCounter {
    fn visit<const D: usize>(&mut self, path: &[String], param: &Param<Tensor<D>>) {
        if !is_running_stat(path) {
            self.count += param.shape().num_elements();
        }
    }
}

impl<N: Norm> ResNet<N> {
    /// The network with stochastic depth at `rate` for its deepest block, less for the others
    /// ([`block_rate`]); 0 turns it off. A setting of training: model files do not keep it.
    pub fn with_drop_path(mut self, rate: f64) -> Self {
        let n = self.stages().iter().map(|s| s.len()).sum();
        let blocks = [
            &mut self.layer1,
            &mut self.layer2,
            &mut self.layer3,
            &mut self.layer4,
        ];
        for (i, block) in blocks.into_iter().flatten().enumerate() {
            let r = block_rate(rate, i, n);
            match block {
                Block::Basic(b) => b.drop_path = r,
                Block::Bottleneck(b) => b.drop_path = r,
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use proptest::prelude::*;

    fn input(batch: usize, h: usize, w: usize, device: &Device) -> Tensor<4> {
        Tensor::random([batch, 3, h, w], Distribution::Normal(0.0, 1.0), device)
    }

    #[test]
    fn every_depth_gives_the_right_shapes() {
        let device = Device::flex();
        for arch in Arch::ALL {
            let model = ResNetConfig::new(arch, HeadConfig::new(7)).init(&device);
            let x = input(2, 64, 48, &device);
            assert_eq!(
                model.features(x.clone()).dims(),
                [2, arch.feature_dim()],
                "{arch}"
            );
            assert_eq!(model.forward(x).dims(), [2, 7], "{arch}");
            assert_eq!(model.arch(), arch);
        }
    }

    /// torchvision's published learnable-parameter counts with the 1000-class head (the
    /// fixture test re-measures them from torchvision itself).
    #[test]
    fn parameter_counts_equal_torchvisions() {
        let expected = [
            (Arch::Resnet18, 11_689_512),
            (Arch::Resnet34, 21_797_672),
            (Arch::Resnet50, 25_557_032),
            (Arch::Resnet101, 44_549_160),
            (Arch::Resnet152, 60_192_808),
        ];
        let device = Device::flex();
        for (arch, count) in expected {
            let model = ResNetConfig::imagenet(arch).init(&device);
            assert_eq!(model.num_learnable_params(), count, "{arch}");
        }
        // Burn's own count also includes the BatchNorm running statistics.
        let r50 = ResNetConfig::imagenet(Arch::Resnet50).init(&device);
        assert_eq!(r50.num_params(), 25_610_152);
    }

    #[test]
    fn with_classes_replaces_only_the_head() {
        let device = Device::flex();
        let head = HeadConfig::new(5).with_hidden(Some(32)).with_dropout(0.2);
        let model = ResNetConfig::new(Arch::Resnet18, head).init(&device);
        let conv_before = model.conv1.weight.val().into_data();
        let model = model.with_classes(3, &device);
        assert_eq!(
            model.head.config(),
            HeadConfig::new(3).with_hidden(Some(32)).with_dropout(0.2)
        );
        assert_eq!(model.conv1.weight.val().into_data(), conv_before);
        assert_eq!(model.forward(input(1, 32, 32, &device)).dims(), [1, 3]);
    }

    #[test]
    fn torchvision_init_statistics() {
        // Conv: kaiming_normal_(fan_out, relu): std = sqrt(2 / (out * k * k)).
        let device = Device::flex();
        device.seed(3);
        let model = ResNetConfig::imagenet(Arch::Resnet50).init(&device);
        let w = model.layer4[0].clone();
        let Block::Bottleneck(b) = w else {
            panic!("resnet50 has bottlenecks")
        };
        let data = b
            .conv2
            .weight
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap(); // 512x512x3x3
        let n = data.len() as f64;
        let mean = data.iter().map(|v| *v as f64).sum::<f64>() / n;
        let std = (data.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        let want = (2.0f64 / (512.0 * 9.0)).sqrt();
        assert!((std / want - 1.0).abs() < 0.02, "std {std} want {want}");
        assert!(mean.abs() < 0.02 * want);
        // BatchNorm starts at gamma 1, beta 0.
        assert!(
            b.bn2
                .gamma
                .val()
                .into_data()
                .try_into_vec::<f32>()
                .unwrap()
                .iter()
                .all(|g| *g == 1.0)
        );
    }

    #[test]
    fn invalid_heads_are_errors_not_panics() {
        assert!(
            ResNetConfig::new(Arch::Resnet18, HeadConfig::new(0))
                .validate()
                .is_err()
        );
        assert!(HeadConfig::new(3).with_dropout(1.0).validate().is_err());
        assert!(HeadConfig::new(3).with_dropout(-0.1).validate().is_err());
        assert!(HeadConfig::new(3).with_hidden(Some(0)).validate().is_err());
        let err = HeadConfig::new(usize::MAX)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("num_classes") && err.contains("larger than"),
            "{err}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        /// Any valid head is read back from the built module exactly as configured, and any
        /// input size the stem can take gives `[batch, classes]` logits.
        #[test]
        fn heads_round_trip_and_shapes_hold(
            classes in 1usize..50,
            hidden in proptest::option::of(1usize..40),
            dropout in prop_oneof![Just(0.0), 0.01f64..0.9],
            batch in 1usize..3,
            h in 8usize..72,
            w in 8usize..72,
        ) {
            let device = Device::flex();
            let head = HeadConfig::new(classes).with_hidden(hidden).with_dropout(dropout);
            let model = ResNetConfig::new(Arch::Resnet18, head.clone()).init(&device);
            prop_assert_eq!(model.head.config(), head);
            prop_assert_eq!(model.forward(input(batch, h, w, &device)).dims(), [batch, classes]);
        }
    }
}
