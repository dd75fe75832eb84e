//! The same weights give the same logits on every backend compiled into this test binary.
//!
//! `cargo xtask test` builds flex, ndarray, wgpu (lavapipe here) and tch, and sets
//! `REKINDLE_REQUIRE_BACKENDS` so a backend that silently went missing fails the test.

use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use rekindle_model::{Arch, Backend, HeadConfig, ResNet, ResNetConfig};

fn required() -> Vec<Backend> {
    std::env::var("REKINDLE_REQUIRE_BACKENDS")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.parse()
                .expect("backend name in REKINDLE_REQUIRE_BACKENDS")
        })
        .collect()
}

/// Moves a model between backends the way a user would: through its serialised weights.
fn to_backend(model: &ResNet, device: &Device) -> ResNet {
    let mut out = BurnpackStore::from_bytes(None);
    model.save_into(&mut out).unwrap();
    let bytes = out.get_bytes().unwrap();
    let mut copy = model.config().init(device);
    copy.load_from(&mut BurnpackStore::from_bytes(Some(bytes)))
        .unwrap();
    copy
}

fn logits(model: &ResNet, input: &TensorData, device: &Device) -> Vec<f32> {
    let x = Tensor::<4>::from_data(input.clone(), device);
    model.forward(x).into_data().try_into_vec::<f32>().unwrap()
}

fn check(arch: Arch) {
    let compiled = Backend::compiled();
    for b in required() {
        assert!(
            compiled.contains(&b),
            "backend {b} is required but not compiled in"
        );
    }
    let flex = Device::flex();
    flex.seed(7);
    let model = ResNetConfig::new(arch, HeadConfig::new(10)).init(&flex);
    let input =
        Tensor::<4>::random([2, 3, 40, 36], Distribution::Normal(0.0, 1.0), &flex).into_data();
    let expected = logits(&model, &input, &flex);

    for backend in compiled.into_iter().filter(|b| *b != Backend::Flex) {
        let device = match backend.device() {
            Ok(d) => d,
            Err(e) => panic!("{backend}: {e}"),
        };
        let got = logits(&to_backend(&model, &device), &input, &device);
        let err = expected
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        println!("{arch} on {backend}: max |logit| {scale:.3}, max abs diff vs flex {err:.2e}");
        assert!(
            (0.1..1000.0).contains(&scale),
            "logits of ordinary magnitude, got {scale}"
        );
        assert!(
            err < 1e-4,
            "{arch} on {backend}: logits differ from flex by {err:e}"
        );
    }
}

#[test]
fn resnet18_logits_agree_across_backends() {
    check(Arch::Resnet18);
}

#[test]
fn resnet50_logits_agree_across_backends() {
    check(Arch::Resnet50);
}
