//! Stochastic depth (Huang et al. 2016) as timm's `DropPath` in its ResNets: in training, each
//! image's residual branch is dropped with probability `rate` and the kept ones are scaled by
//! 1 / (1 - rate), so the expectation is unchanged; in evaluation it is the identity. Rates
//! grow linearly with depth, timm's rule: block i of n gets `rate * i / (n - 1)`
//! ([`crate::ResNet::with_drop_path`] sets them).

use burn::tensor::{Distribution, Tensor};

/// `x` `[batch, ..]` with each image's values zeroed with probability `rate`, the others
/// divided by `1 - rate`. Draws from the device's random stream (seeded by the run).
pub fn drop_path(x: Tensor<4>, rate: f64) -> Tensor<4> {
    if rate <= 0.0 {
        return x;
    }
    let keep = 1.0 - rate;
    let n = x.dims()[0];
    let mask = Tensor::<4>::random([n, 1, 1, 1], Distribution::Bernoulli(keep), &x.device());
    x * mask.div_scalar(keep)
}

/// Block `i` of `n`'s rate under timm's linear rule for a network-wide `rate`.
pub fn block_rate(rate: f64, i: usize, n: usize) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    rate * i as f64 / (n - 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResNet;
    use crate::block::Block;
    use crate::{Arch, ResNetConfig};
    use burn::tensor::{Device, TensorData};

    #[test]
    fn dropping_keeps_the_expectation() {
        let device = Device::flex();
        device.seed(3);
        let (n, rate) = (20_000, 0.3);
        let x = Tensor::<4>::ones([n, 2, 1, 1], &device);
        let out: Vec<f32> = drop_path(x, rate)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        // Each image is all kept (1 / 0.7) or all dropped (0), both channels alike.
        let kept = 1.0 / 0.7f32;
        for img in out.chunks(2) {
            assert!(img[0] == img[1] && (img[0] == 0.0 || (img[0] - kept).abs() < 1e-6));
        }
        let dropped = out.chunks(2).filter(|c| c[0] == 0.0).count() as f64 / n as f64;
        let mean = out.iter().map(|v| f64::from(*v)).sum::<f64>() / (2 * n) as f64;
        // Binomial standard deviation at n = 20000: 0.0032 for the fraction; 4 of them.
        assert!((dropped - rate).abs() < 0.013, "{dropped}");
        assert!((mean - 1.0).abs() < 0.02, "{mean}");
    }

    #[test]
    fn rates_grow_linearly_to_the_last_block() {
        let net = ResNetConfig::imagenet(Arch::Resnet18)
            .init(&Device::flex())
            .with_drop_path(0.1);
        let rates: Vec<f64> = net
            .stages()
            .into_iter()
            .flatten()
            .map(|b| match b {
                Block::Basic(b) => b.drop_path,
                Block::Bottleneck(b) => b.drop_path,
            })
            .collect();
        assert_eq!(rates.len(), 8);
        for (i, r) in rates.iter().enumerate() {
            assert!((r - 0.1 * i as f64 / 7.0).abs() < 1e-15);
        }
        assert_eq!(block_rate(0.2, 0, 1), 0.0);
    }

    /// Logits of `net` for a fixed batch of four 32x32 images.
    fn logits(net: &ResNet, device: &Device) -> Vec<f32> {
        let x = Tensor::<4>::from_data(
            TensorData::new(
                (0..4 * 3 * 32 * 32)
                    .map(|i| (i as f32 * 0.013).cos())
                    .collect(),
                [4, 3, 32, 32],
            ),
            device,
        );
        net.forward(x).into_data().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn training_without_it_draws_nothing_and_with_it_changes_the_output() {
        // Tests share the process's random stream, so nothing here depends on what it draws;
        // that a seed reproduces the masks is checked alone in tests/drop_path.rs.
        let device = Device::flex().autodiff();
        let net = ResNetConfig::imagenet(Arch::Resnet18).init(&device);
        // Burn draws parameters at their first use: a first forward, before comparing.
        logits(&net, &device);
        device.seed(5);
        let plain = logits(&net, &device);
        device.seed(6);
        assert_eq!(plain, logits(&net, &device));
        // At 0.5 the deepest blocks drop or double their branch: never the plain output.
        assert_ne!(plain, logits(&net.clone().with_drop_path(0.5), &device));
    }

    #[test]
    fn evaluation_is_untouched() {
        // Off the autodiff device (inference), a network with drop path computes what it did.
        let device = Device::flex();
        let net = ResNetConfig::imagenet(Arch::Resnet18).init(&device);
        let x = Tensor::<4>::from_data(
            TensorData::new(
                (0..2 * 3 * 32 * 32)
                    .map(|i| (i as f32 * 0.01).sin())
                    .collect(),
                [2, 3, 32, 32],
            ),
            &device,
        );
        let before: Vec<f32> = net
            .forward(x.clone())
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let after: Vec<f32> = net
            .with_drop_path(0.9)
            .forward(x)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert_eq!(before, after);
    }
}
