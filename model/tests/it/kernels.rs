//! rekindle's kernels against Burn's operations on every convolution and BatchNorm shape of
//! ResNet-18 and ResNet-50 (at 1/8 of ImageNet's resolution, batch 2, to stay fast on 2 cores:
//! maps from 14x14 down to layer4's 1x1), forward and both gradients.

use rekindle_kernels::ConvGeom;
use rekindle_kernels::parity::{Case, check_batch_norm};
use rekindle_model::Arch;
use rekindle_model::shapes::{ConvLayer, distinct_conv_layers};

fn layers() -> Vec<ConvLayer> {
    let mut layers: Vec<ConvLayer> = [Arch::Resnet18, Arch::Resnet50]
        .into_iter()
        .flat_map(|arch| distinct_conv_layers(arch, 28))
        .map(|(layer, _)| layer)
        .collect();
    layers.sort();
    layers.dedup();
    layers
}

#[test]
fn every_resnet_convolution_matches_burn() {
    for l in layers() {
        let (k, p, s) = (l.kernel, l.padding(), l.stride);
        Case {
            x: [2, l.in_channels, l.size, l.size],
            w: [l.out_channels, l.in_channels, k, k],
            geom: ConvGeom {
                stride: [s, s],
                padding: [p, p],
            },
        }
        .check();
    }
}

#[test]
fn every_resnet_batch_norm_matches_burn() {
    let mut norms: Vec<[usize; 2]> = layers()
        .iter()
        .map(|l| [l.out_channels, l.out_size()])
        .collect();
    norms.sort();
    norms.dedup();
    for [c, size] in norms {
        check_batch_norm([2, c, size, size]);
    }
}
