//! Stochastic depth draws its masks from the device's random stream, which a run seeds each
//! epoch: the same seed gives the same masks. The stream is the process's, so this check has
//! a test binary to itself (the unit tests next to `drop_path.rs` run side by side).

use burn::tensor::{Device, Tensor, TensorData};
use rekindle_model::{Arch, ResNet, ResNetConfig};

/// Training-mode logits of `net` for a fixed batch, after seeding the device with `seed`.
fn logits(net: &ResNet, device: &Device, seed: u64) -> Vec<f32> {
    device.seed(seed);
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
fn the_seed_decides_which_branches_drop() {
    let device = Device::flex().autodiff();
    device.seed(1);
    let net = ResNetConfig::imagenet(Arch::Resnet18)
        .init(&device)
        .with_drop_path(0.5);
    // Burn draws a parameter's initial values at its first use: one forward first, so that
    // the draws below are the masks alone.
    logits(&net, &device, 0);
    let first = logits(&net, &device, 5);
    assert_eq!(first, logits(&net, &device, 5), "same seed, same masks");
    assert_ne!(first, logits(&net, &device, 6), "another seed, other masks");
}
