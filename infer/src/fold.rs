//! BatchNorm folded into the convolutions, for inference: each conv -> BN pair becomes one
//! conv with a bias (w' = w * g / sqrt(var + eps), b' = beta - mean * g / sqrt(var + eps)),
//! saving the BatchNorm passes over every activation. Burn has no graph pass that fuses a
//! module's layers, so the folded network is built here; it mirrors `ResNet::forward`'s topology
//! and is checked against it to 1e-4.

use burn::module::Param;
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AdaptiveAvgPool2d, MaxPool2d};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use rekindle_model::block::Block;
use rekindle_model::{Head, ResNet};

/// `conv` followed by `bn` (inference statistics) as a single convolution with a bias.
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

/// One residual block with its BatchNorms folded: 2 (basic) or 3 (bottleneck) convolutions.
struct FoldedBlock {
    convs: Vec<Conv2d>,
    downsample: Option<Conv2d>,
}

impl FoldedBlock {
    fn new(block: &Block) -> Self {
        let (convs, downsample) = match block {
            Block::Basic(b) => (
                vec![
                    fold_conv_bn(&b.conv1, &b.bn1),
                    fold_conv_bn(&b.conv2, &b.bn2),
                ],
                &b.downsample,
            ),
            Block::Bottleneck(b) => (
                vec![
                    fold_conv_bn(&b.conv1, &b.bn1),
                    fold_conv_bn(&b.conv2, &b.bn2),
                    fold_conv_bn(&b.conv3, &b.bn3),
                ],
                &b.downsample,
            ),
        };
        Self {
            convs,
            downsample: downsample.as_ref().map(|d| fold_conv_bn(&d.conv, &d.bn)),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(d) => d.forward(x.clone()),
            None => x.clone(),
        };
        let last = self.convs.len() - 1;
        let mut out = x;
        for (i, conv) in self.convs.iter().enumerate() {
            out = conv.forward(out);
            if i < last {
                out = relu(out);
            }
        }
        relu(out + identity)
    }
}

/// A ResNet for inference with every BatchNorm folded into the convolution before it.
pub struct FoldedResNet {
    stem: Conv2d,
    maxpool: MaxPool2d,
    blocks: Vec<FoldedBlock>,
    avgpool: AdaptiveAvgPool2d,
    head: Head,
}

impl FoldedResNet {
    /// Folds `net`'s BatchNorms (its running statistics) into its convolutions.
    pub fn new(net: &ResNet) -> Self {
        Self {
            stem: fold_conv_bn(&net.conv1, &net.bn1),
            maxpool: net.maxpool.clone(),
            blocks: net
                .stages()
                .into_iter()
                .flatten()
                .map(FoldedBlock::new)
                .collect(),
            avgpool: net.avgpool.clone(),
            head: net.head.clone(),
        }
    }

    /// Logits `[batch, num_classes]`, as `ResNet::forward` in inference mode.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = self.maxpool.forward(relu(self.stem.forward(x)));
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.head.forward(self.avgpool.forward(x).flatten(1, 3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::tensor::{Device, Distribution};
    use rekindle_model::{Arch, HeadConfig, ResNetConfig};

    /// Random running statistics and affine parameters, so that folding has work to do.
    fn randomise_bn(net: ResNet, device: &Device) -> ResNet {
        struct Mapper<'a>(&'a Device);
        impl burn::module::ModuleMapper for Mapper<'_> {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let t = param.val();
                if D == 1 {
                    // gamma, beta, running mean and variance alike: positive, away from 1 and 0
                    let r = Tensor::random(t.shape(), Distribution::Uniform(0.5, 1.5), self.0);
                    return Param::from_tensor(r);
                }
                param
            }
        }
        net.map(&mut Mapper(device))
    }

    #[test]
    fn folded_logits_match_the_batchnorm_network() {
        let device = Device::flex();
        device.seed(3);
        for arch in [Arch::Resnet18, Arch::Resnet50] {
            let net = ResNetConfig::new(arch, HeadConfig::new(7)).init(&device);
            let net = randomise_bn(net, &device);
            let x = Tensor::<4>::random([2, 3, 40, 36], Distribution::Normal(0.0, 1.0), &device);
            let want = net
                .forward(x.clone())
                .into_data()
                .try_into_vec::<f32>()
                .unwrap();
            let got = FoldedResNet::new(&net)
                .forward(x)
                .into_data()
                .try_into_vec::<f32>()
                .unwrap();
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = want
                .iter()
                .zip(&got)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(scale > 0.1, "{arch}: logits too small to compare ({scale})");
            assert!(
                worst <= 1e-4 * scale.max(1.0),
                "{arch}: folded logits differ by {worst}"
            );
        }
    }
}
