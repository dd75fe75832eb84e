//! The convolutions and BatchNorms a ResNet runs at a given input size, layer by layer: what the
//! kernel tests check one by one and `cargo xtask bench --ops` measures.

use crate::arch::{Arch, BlockKind};

/// One convolution of the network (square kernel, padding `kernel / 2`, as torchvision's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConvLayer {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Height and width of its (square) input.
    pub size: usize,
}

impl ConvLayer {
    /// Zero padding on each side.
    pub fn padding(&self) -> usize {
        self.kernel / 2
    }

    /// Height and width of its output: also the size of the BatchNorm after it.
    pub fn out_size(&self) -> usize {
        (self.size + 2 * self.padding() - self.kernel) / self.stride + 1
    }

    /// Multiply-adds per image.
    pub fn macs(&self) -> usize {
        self.out_channels * self.in_channels * self.kernel.pow(2) * self.out_size().pow(2)
    }
}

/// Every convolution of `arch` on a `res` x `res` input, in network order (repeats included).
pub fn conv_layers(arch: Arch, res: usize) -> Vec<ConvLayer> {
    let layer = |in_channels, out_channels, kernel, stride, size| ConvLayer {
        in_channels,
        out_channels,
        kernel,
        stride,
        size,
    };
    let stem = layer(3, 64, 7, 2, res);
    let mut convs = vec![stem];
    // The stem's 3x3 stride-2 max pool, padding 1.
    let mut size = (stem.out_size() + 2 - 3) / 2 + 1;
    let mut cin = 64;
    let kind = arch.block();
    for (stage, blocks) in arch.layers().into_iter().enumerate() {
        let planes = 64 << stage;
        let out = planes * kind.expansion();
        for block in 0..blocks {
            let s = if block == 0 && stage > 0 { 2 } else { 1 };
            let strided = layer(planes, planes, 3, s, size);
            match kind {
                BlockKind::Bottleneck => {
                    convs.push(layer(cin, planes, 1, 1, size));
                    convs.push(strided);
                    convs.push(layer(planes, out, 1, 1, strided.out_size()));
                }
                BlockKind::Basic => {
                    convs.push(layer(cin, planes, 3, s, size));
                    convs.push(layer(planes, planes, 3, 1, strided.out_size()));
                }
            }
            // torchvision's downsample: whenever the identity path changes shape.
            if s != 1 || cin != out {
                convs.push(layer(cin, out, 1, s, size));
            }
            (cin, size) = (out, strided.out_size());
        }
    }
    convs
}

/// The distinct convolutions of `arch` at `res`, each with how many times the network runs it.
pub fn distinct_conv_layers(arch: Arch, res: usize) -> Vec<(ConvLayer, usize)> {
    let mut counted: Vec<(ConvLayer, usize)> = Vec::new();
    for conv in conv_layers(arch, res) {
        match counted.iter_mut().find(|(c, _)| *c == conv) {
            Some((_, n)) => *n += 1,
            None => counted.push((conv, 1)),
        }
    }
    counted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResNetConfig;
    use burn::tensor::{Device, Tensor};

    /// The list has one entry per convolution weight of the real network, with its shape.
    #[test]
    fn conv_layers_are_the_networks_convolutions() {
        let device = Device::flex();
        for arch in Arch::ALL {
            let model = ResNetConfig::imagenet(arch).init(&device);
            let mut weights: Vec<[usize; 4]> = Vec::new();
            crate::params::visit_with_paths(&model, &mut Weights(&mut weights));
            let mut ours: Vec<[usize; 4]> = conv_layers(arch, 224)
                .iter()
                .map(|c| [c.out_channels, c.in_channels, c.kernel, c.kernel])
                .collect();
            weights.sort();
            ours.sort();
            assert_eq!(ours, weights, "{arch}");
        }
    }

    /// The sizes chain: ResNet-50 at 224 ends on 7x7 maps, at 64 on 2x2.
    #[test]
    fn sizes_follow_the_strides() {
        let last = |res| {
            conv_layers(Arch::Resnet50, res)
                .last()
                .map(ConvLayer::out_size)
        };
        assert_eq!(last(224), Some(7));
        assert_eq!(last(64), Some(2));
        assert_eq!(distinct_conv_layers(Arch::Resnet50, 224).len(), 23);
    }

    struct Weights<'a>(&'a mut Vec<[usize; 4]>);

    impl crate::params::PathVisitor for Weights<'_> {
        fn visit<const D: usize>(&mut self, _: &[String], p: &burn::module::Param<Tensor<D>>) {
            if D == 4 {
                let dims = p.shape().dims::<D>().to_vec();
                self.0.push([dims[0], dims[1], dims[2], dims[3]]);
            }
        }
    }
}
