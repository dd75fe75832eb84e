//! Residual blocks: torchvision's `BasicBlock` and `Bottleneck` (stride on the 3x3 conv, "v1.5").

use burn::config::Config;
use burn::module::{Initializer, Module};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use crate::arch::BlockKind;
use crate::drop_path::drop_path;
use crate::norm::Norm;
use rekindle_kernels::residual_relu;

/// torchvision initialises every convolution with `kaiming_normal_(mode="fan_out",
/// nonlinearity="relu")`: std = sqrt(2) / sqrt(fan_out).
pub(crate) fn conv_init() -> Initializer {
    Initializer::KaimingNormal {
        gain: std::f64::consts::SQRT_2,
        fan_out_only: true,
    }
}

/// A bias-free convolution as torchvision's `conv3x3` / `conv1x1` build it.
pub(crate) fn conv(cin: usize, cout: usize, kernel: usize, stride: usize) -> Conv2dConfig {
    let pad = kernel / 2;
    Conv2dConfig::new([cin, cout], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(conv_init())
}

/// BatchNorm with PyTorch's defaults (eps 1e-5, momentum 0.1); gamma 1, beta 0.
pub(crate) fn bn(channels: usize) -> BatchNormConfig {
    BatchNormConfig::new(channels)
}

/// Configuration of one residual block.
#[derive(Config, Debug)]
pub struct BlockConfig {
    /// Channels coming in.
    pub in_channels: usize,
    /// torchvision's `planes`: the block's inner width; output is `planes * expansion`.
    pub planes: usize,
    /// Stride of the block (1, or 2 at the first block of stages 2-4).
    #[config(default = 1)]
    pub stride: usize,
}

/// The 1x1 convolution + BatchNorm that reshapes the identity path (`downsample.0`, `downsample.1`).
#[derive(Module, Debug)]
pub struct Downsample<N: Norm = BatchNorm> {
    /// torchvision `downsample.0`.
    pub conv: Conv2d,
    /// torchvision `downsample.1`.
    pub bn: N,
}

impl Downsample {
    fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        Self {
            conv: conv(cin, cout, 1, stride).init(device),
            bn: bn(cout).init(device),
        }
    }

    /// torchvision adds a downsample whenever the shape of the identity path changes.
    fn needed(cin: usize, cout: usize, stride: usize) -> bool {
        stride != 1 || cin != cout
    }
}

impl<N: Norm> Downsample<N> {
    /// The identity path, brought to the shape of the block's output.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.bn.after(&self.conv, x, None, false)
    }
}

/// The path a block adds its main path to: `x` itself, or `x` reshaped by the downsample.
fn identity<N: Norm>(downsample: Option<&Downsample<N>>, x: &Tensor<4>) -> Tensor<4> {
    match downsample {
        Some(d) => d.forward(x.clone()),
        None => x.clone(),
    }
}

/// ResNet-18/34 block: 3x3 conv (stride) -> BN -> ReLU -> 3x3 conv -> BN, + identity, ReLU.
#[derive(Module, Debug)]
pub struct BasicBlock<N: Norm = BatchNorm> {
    /// 3x3, carries the stride.
    pub conv1: Conv2d,
    /// After `conv1`.
    pub bn1: N,
    /// 3x3.
    pub conv2: Conv2d,
    /// After `conv2`.
    pub bn2: N,
    /// Present when the block changes shape.
    pub downsample: Option<Downsample<N>>,
    /// Stochastic depth of the residual branch in training (0: off); see [`crate::drop_path`].
    pub drop_path: f64,
}

impl<N: Norm> BasicBlock<N> {
    /// Applies the block to `[batch, channels, height, width]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = identity(self.downsample.as_ref(), &x);
        let out = self.bn1.after(&self.conv1, x, None, true);
        last(&self.bn2, &self.conv2, out, identity, self.drop_path)
    }
}

/// The block's last convolution and norm, plus the identity, then ReLU. With stochastic depth
/// in a training block the branch is dropped before the sum, so the fused tail is split.
fn last<N: Norm>(
    norm: &N,
    conv: &Conv2d,
    x: Tensor<4>,
    identity: Tensor<4>,
    drop_rate: f64,
) -> Tensor<4> {
    if drop_rate > 0.0 && x.device().is_autodiff() && norm.training() {
        let branch = drop_path(norm.after(conv, x, None, false), drop_rate);
        return residual_relu(branch, Some(identity), true);
    }
    norm.after(conv, x, Some(identity), true)
}

/// ResNet-50/101/152 block: 1x1 -> 3x3 (stride) -> 1x1 (x4 channels), each with BN, + identity.
#[derive(Module, Debug)]
pub struct Bottleneck<N: Norm = BatchNorm> {
    /// 1x1 reduce to `planes`.
    pub conv1: Conv2d,
    /// After `conv1`.
    pub bn1: N,
    /// 3x3, carries the stride (ResNet v1.5).
    pub conv2: Conv2d,
    /// After `conv2`.
    pub bn2: N,
    /// 1x1 expand to `planes * 4`.
    pub conv3: Conv2d,
    /// After `conv3`.
    pub bn3: N,
    /// Present when the block changes shape.
    pub downsample: Option<Downsample<N>>,
    /// Stochastic depth of the residual branch in training (0: off); see [`crate::drop_path`].
    pub drop_path: f64,
}

impl<N: Norm> Bottleneck<N> {
    /// Applies the block to `[batch, channels, height, width]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = identity(self.downsample.as_ref(), &x);
        let out = self.bn1.after(&self.conv1, x, None, true);
        let out = self.bn2.after(&self.conv2, out, None, true);
        last(&self.bn3, &self.conv3, out, identity, self.drop_path)
    }
}

/// One residual block of either kind; the variant name never appears in torchvision keys.
/// `N` is BatchNorm as trained, [`burn::nn::Identity`] once folded ([`crate::fold`]).
// The variants hold tensor handles, not tensors, and a model has at most 50 blocks: boxing them
// to even out their sizes would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Block<N: Norm = BatchNorm> {
    /// ResNet-18/34.
    Basic(BasicBlock<N>),
    /// ResNet-50/101/152.
    Bottleneck(Bottleneck<N>),
}

impl BlockConfig {
    /// Builds a block of the given kind.
    pub fn init(&self, kind: BlockKind, device: &Device) -> Block {
        let (cin, p, s) = (self.in_channels, self.planes, self.stride);
        let cout = p * kind.expansion();
        let downsample =
            Downsample::needed(cin, cout, s).then(|| Downsample::new(cin, cout, s, device));
        match kind {
            BlockKind::Basic => Block::Basic(BasicBlock {
                conv1: conv(cin, p, 3, s).init(device),
                bn1: bn(p).init(device),
                conv2: conv(p, p, 3, 1).init(device),
                bn2: bn(p).init(device),
                downsample,
                drop_path: 0.0,
            }),
            BlockKind::Bottleneck => Block::Bottleneck(Bottleneck {
                conv1: conv(cin, p, 1, 1).init(device),
                bn1: bn(p).init(device),
                conv2: conv(p, p, 3, s).init(device),
                bn2: bn(p).init(device),
                conv3: conv(p, cout, 1, 1).init(device),
                bn3: bn(cout).init(device),
                downsample,
                drop_path: 0.0,
            }),
        }
    }
}

impl<N: Norm> Block<N> {
    /// Applies the block to `[batch, channels, height, width]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Block::Basic(b) => b.forward(x),
            Block::Bottleneck(b) => b.forward(x),
        }
    }

    /// Which kind of block this is.
    pub fn kind(&self) -> BlockKind {
        match self {
            Block::Basic(_) => BlockKind::Basic,
            Block::Bottleneck(_) => BlockKind::Bottleneck,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{PathVisitor, visit_with_paths};
    use burn::module::Param;

    /// Counts convolution weights (the only 4-D parameters of a block).
    #[derive(Default)]
    struct Convs(usize);

    impl PathVisitor for Convs {
        fn visit<const D: usize>(&mut self, _: &[String], _: &Param<Tensor<D>>) {
            self.0 += usize::from(D == 4);
        }
    }

    #[test]
    fn a_block_has_as_many_convolutions_as_its_kind_says() {
        let device = Device::flex();
        for kind in BlockKind::ALL {
            // Same width in and out, stride 1: no downsample.
            let planes = 8;
            let block = BlockConfig::new(planes * kind.expansion(), planes).init(kind, &device);
            let mut convs = Convs::default();
            visit_with_paths(&block, &mut convs);
            assert_eq!(convs.0, kind.convs(), "{kind:?}");
            assert_eq!(block.kind(), kind);
        }
    }
}
