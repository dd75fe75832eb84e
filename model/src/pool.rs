//! The stem's max pooling through rekindle's kernels ([`rekindle_kernels::max_pool2d`]): our own
//! kernel for inference on flex, Burn's operation elsewhere and under autodiff.

use burn::nn::PaddingConfig2d;
use burn::nn::pool::MaxPool2d;
use burn::tensor::Tensor;
use rekindle_kernels::PoolGeom;

/// `pool.forward(x)`; configurations the kernel does not cover (dilation, ceil mode, uneven
/// padding) keep Burn's `MaxPool2d::forward`.
pub fn max_pool(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let padding = match pool.padding {
        PaddingConfig2d::Valid => Some([0, 0]),
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            Some([top, left])
        }
        _ => None,
    };
    match padding {
        Some(padding) if pool.dilation == [1, 1] && !pool.ceil_mode => {
            let geom = PoolGeom {
                kernel: pool.kernel_size,
                stride: pool.stride,
                padding,
            };
            rekindle_kernels::max_pool2d(x, geom)
        }
        _ => pool.forward(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::{Device, Distribution, Tolerance};

    /// Every configuration Burn's `MaxPool2d` allows gives Burn's own result, covered or not.
    #[test]
    fn equals_burns_max_pool_for_covered_and_uncovered_configurations() {
        let device = Device::flex();
        let configs = [
            MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
            MaxPool2dConfig::new([2, 3]).with_strides([1, 2]),
            MaxPool2dConfig::new([3, 3]).with_ceil_mode(true),
            MaxPool2dConfig::new([3, 3]).with_dilation([2, 2]),
            MaxPool2dConfig::new([2, 2]).with_padding(PaddingConfig2d::Same),
        ];
        for config in configs {
            let pool = config.init();
            let x = Tensor::<4>::random([2, 3, 9, 7], Distribution::Normal(0.0, 1.0), &device);
            max_pool(&pool, x.clone())
                .into_data()
                .assert_approx_eq::<f32>(
                    &pool.forward(x).into_data(),
                    Tolerance::rel_abs(0.0, 0.0),
                );
        }
    }
}
