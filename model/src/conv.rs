//! The network's convolutions through rekindle's kernels ([`rekindle_kernels`]), which run our own
//! CPU code on flex and Burn's operations elsewhere; layers the kernels do not cover (groups,
//! dilation, asymmetric padding) keep Burn's `Conv2d::forward`.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use rekindle_kernels::{ConvGeom, residual_relu};

/// The kernels' geometry for `conv`, if they cover it (`Same` padding is left to Burn, which
/// works out its possibly uneven split).
fn geom(conv: &Conv2d) -> Option<ConvGeom> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            [top, left]
        }
        _ => return None,
    };
    (conv.groups == 1 && conv.dilation == [1, 1]).then_some(ConvGeom {
        stride: conv.stride,
        padding,
    })
}

/// `conv.forward(x)`, then `residual` added when given, then ReLU when `activate`; with a bias,
/// all of it in the kernel's epilogue.
pub fn forward(
    conv: &Conv2d,
    x: Tensor<4>,
    residual: Option<Tensor<4>>,
    activate: bool,
) -> Tensor<4> {
    match (geom(conv), &conv.bias) {
        (Some(g), Some(b)) => {
            rekindle_kernels::conv2d_bias(x, conv.weight.val(), b.val(), residual, g, activate)
        }
        (Some(g), None) => residual_relu(
            rekindle_kernels::conv2d(x, conv.weight.val(), g),
            residual,
            activate,
        ),
        (None, _) => residual_relu(conv.forward(x), residual, activate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::activation::relu;
    use burn::tensor::{Device, Distribution, Tolerance};

    /// Every configuration Burn's `Conv2d` allows gives Burn's own result, covered or not.
    #[test]
    fn equals_burns_conv2d_for_covered_and_uncovered_layers() {
        let device = Device::flex();
        let configs = [
            Conv2dConfig::new([4, 6], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
            Conv2dConfig::new([4, 6], [3, 3])
                .with_stride([2, 2])
                .with_bias(false),
            Conv2dConfig::new([4, 6], [1, 1]).with_padding(PaddingConfig2d::Same),
            Conv2dConfig::new([4, 6], [3, 3]).with_dilation([2, 2]),
            Conv2dConfig::new([4, 6], [3, 3]).with_groups(2),
            Conv2dConfig::new([4, 6], [2, 3]).with_padding(PaddingConfig2d::Explicit(0, 1, 1, 1)),
        ];
        for config in configs {
            let conv = config.init(&device);
            let x = Tensor::<4>::random([2, 4, 9, 7], Distribution::Normal(0.0, 1.0), &device);
            let want = conv.forward(x.clone());
            let r = Tensor::<4>::random(want.dims(), Distribution::Normal(0.0, 1.0), &device);
            for (add, activate) in [(false, false), (false, true), (true, false), (true, true)] {
                let residual = add.then(|| r.clone());
                let want = if add {
                    want.clone() + r.clone()
                } else {
                    want.clone()
                };
                let want = if activate { relu(want) } else { want };
                forward(&conv, x.clone(), residual, activate)
                    .into_data()
                    .assert_approx_eq::<f32>(&want.into_data(), Tolerance::rel_abs(1e-4, 1e-5));
            }
        }
    }
}
