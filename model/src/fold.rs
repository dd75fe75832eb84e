//! BatchNorm folded into the convolutions, for inference: each conv -> BN pair becomes one
//! conv with a bias (w' = w * g / sqrt(var + eps), b' = beta - mean * g / sqrt(var + eps)),
//! saving the BatchNorm passes over every activation.
//!
//! Burn has no graph pass that fuses a module's layers, so the folding is done here, module by
//! module. The folded network is the same [`ResNet`] with [`Identity`] in place of each
//! BatchNorm: it runs the very forward code it was folded from.

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Identity};

use crate::ResNet;
use crate::block::{BasicBlock, Block, Bottleneck, Downsample};

/// A ResNet for inference, with every BatchNorm folded into the convolution before it.
pub type FoldedResNet = ResNet<Identity>;

/// `conv` followed by `bn` (its running statistics, as in inference) as one convolution with a
/// bias.
pub fn fold_conv_bn(conv: &Conv2d, bn: &BatchNorm) -> Conv2d {
    let scale = bn.gamma.val() / (bn.running_var.value() + bn.epsilon).sqrt();
    let out = scale.dims()[0];
    let weight = conv.weight.val() * scale.clone().reshape([out, 1, 1, 1]);
    let shift = bn.beta.val() - bn.running_mean.value() * scale.clone();
    let bias = match &conv.bias {
        Some(b) => b.val() * scale + shift,
        None => shift,
    };
    let mut folded = conv.clone();
    folded.weight = Param::from_tensor(weight);
    folded.bias = Some(Param::from_tensor(bias));
    folded
}

/// A conv -> BN pair as its folded convolution and the no-op left where the BatchNorm was.
fn fold(conv: &Conv2d, bn: &BatchNorm) -> (Conv2d, Identity) {
    (fold_conv_bn(conv, bn), Identity::new())
}

impl ResNet {
    /// The same network with every BatchNorm folded into its convolution: the logits of
    /// [`ResNet::forward`] in inference mode (within float rounding) with fewer passes over the
    /// activations.
    pub fn fold_batchnorm(&self) -> FoldedResNet {
        let (conv1, bn1) = fold(&self.conv1, &self.bn1);
        let stage = |blocks: &[Block]| -> Vec<Block<Identity>> {
            blocks.iter().map(Block::folded).collect()
        };
        ResNet {
            conv1,
            bn1,
            maxpool: self.maxpool.clone(),
            layer1: stage(&self.layer1),
            layer2: stage(&self.layer2),
            layer3: stage(&self.layer3),
            layer4: stage(&self.layer4),
            avgpool: self.avgpool.clone(),
            head: self.head.clone(),
        }
    }
}

impl Block {
    fn folded(&self) -> Block<Identity> {
        match self {
            Block::Basic(b) => Block::Basic(b.folded()),
            Block::Bottleneck(b) => Block::Bottleneck(b.folded()),
        }
    }
}

impl BasicBlock {
    fn folded(&self) -> BasicBlock<Identity> {
        let (conv1, bn1) = fold(&self.conv1, &self.bn1);
        let (conv2, bn2) = fold(&self.conv2, &self.bn2);
        BasicBlock {
            conv1,
            bn1,
            conv2,
            bn2,
            downsample: self.downsample.as_ref().map(Downsample::folded),
            drop_path: 0.0,
        }
    }
}

impl Bottleneck {
    fn folded(&self) -> Bottleneck<Identity> {
        let (conv1, bn1) = fold(&self.conv1, &self.bn1);
        let (conv2, bn2) = fold(&self.conv2, &self.bn2);
        let (conv3, bn3) = fold(&self.conv3, &self.bn3);
        Bottleneck {
            conv1,
            bn1,
            conv2,
            bn2,
            conv3,
            bn3,
            downsample: self.downsample.as_ref().map(Downsample::folded),
            drop_path: 0.0,
        }
    }
}

impl Downsample {
    fn folded(&self) -> Downsample<Identity> {
        let (conv, bn) = fold(&self.conv, &self.bn);
        Downsample { conv, bn }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{PathMapper, map_with_paths};
    use crate::{Arch, HeadConfig, ResNetConfig};
    use burn::tensor::{Device, Distribution, Tensor};

    /// Draws every BatchNorm's gamma, beta and running statistics from U(0.5, 1.5): away from
    /// the initial 1 and 0, so that each term of the folding is exercised.
    struct PerturbBatchNorm<'a>(&'a Device);

    impl PathMapper for PerturbBatchNorm<'_> {
        fn map<const D: usize>(
            &mut self,
            path: &[String],
            param: Param<Tensor<D>>,
        ) -> Param<Tensor<D>> {
            let stat = ["gamma", "beta", "running_mean", "running_var"];
            match path.last() {
                Some(name) if stat.contains(&name.as_str()) => param
                    .map(|t| Tensor::random(t.shape(), Distribution::Uniform(0.5, 1.5), self.0)),
                _ => param,
            }
        }
    }

    fn logits(x: Tensor<2>) -> Vec<f32> {
        x.into_data().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn folded_logits_match_the_batchnorm_network() {
        let device = Device::flex();
        for arch in [Arch::Resnet18, Arch::Resnet50] {
            let net = ResNetConfig::new(arch, HeadConfig::new(7)).init(&device);
            let net = map_with_paths(net, &mut PerturbBatchNorm(&device));
            let x = Tensor::<4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
            let folded = net.fold_batchnorm();
            assert_eq!(folded.arch(), arch);
            let want = logits(net.forward(x.clone()));
            let got = logits(folded.forward(x));
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = want
                .iter()
                .zip(&got)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(scale > 0.1, "{arch}: logits too small to compare ({scale})");
            assert!(
                worst <= 1e-4 * scale.max(1.0),
                "{arch}: folded logits differ by {worst} (largest logit {scale})"
            );
        }
    }

    #[test]
    fn a_folded_convolution_carries_the_batchnorm_as_its_bias() {
        let device = Device::flex();
        let net = ResNetConfig::new(Arch::Resnet18, HeadConfig::new(2)).init(&device);
        let net = map_with_paths(net, &mut PerturbBatchNorm(&device));
        let folded = fold_conv_bn(&net.conv1, &net.bn1);
        assert!(net.conv1.bias.is_none());
        let x = Tensor::<4>::random([1, 3, 9, 9], Distribution::Normal(0.0, 1.0), &device);
        let want = net.bn1.forward(net.conv1.forward(x.clone()));
        let got = folded.forward(x);
        let diff: f32 = (want - got).abs().max().into_scalar();
        assert!(diff < 1e-4, "{diff}");
    }
}
