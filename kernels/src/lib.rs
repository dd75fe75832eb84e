//! rekindle's own kernels for the operations that dominate ResNet training and inference on the
//! CPU, plugged into Burn as a backend extension (no fork of Burn).
//!
//! [`conv2d`], [`conv2d_bias`] and [`batch_norm_train`] take ordinary tensors on any device. On
//! flex they run our kernels, with their own gradients under autodiff; on every other backend,
//! and for what the kernels do not cover (groups, dilation, asymmetric padding, non-f32 data),
//! they run Burn's own operations.

pub mod allocator;
mod autodiff;
mod extension;
#[cfg(feature = "flex")]
mod flex;
pub mod parity;

use burn::backend::Dispatch;
use burn::tensor::Tensor;

pub use extension::{BnGrads, BnTrain, ConvGeom, KernelBackend};

/// `conv(x, weight)` without bias: `x [n, c, h, w]`, `weight [o, c, kh, kw]`.
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, geom: ConvGeom) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as KernelBackend>::rk_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        geom,
    ))
}

/// `conv(x, weight) + bias`, then ReLU when `relu`: a convolution with BatchNorm folded into it.
pub fn conv2d_bias(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    geom: ConvGeom,
    relu: bool,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as KernelBackend>::rk_conv2d_bias(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        geom,
        relu,
    ))
}

/// Gradient of [`conv2d`] with respect to `x`, given the output gradient.
pub fn conv2d_x_backward(
    x: Tensor<4>,
    weight: Tensor<4>,
    output_grad: Tensor<4>,
    geom: ConvGeom,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as KernelBackend>::rk_conv2d_x_backward(
        x.into_dispatch(),
        weight.into_dispatch(),
        output_grad.into_dispatch(),
        geom,
    ))
}

/// Gradient of [`conv2d`] with respect to `weight`, given the output gradient.
pub fn conv2d_weight_backward(
    x: Tensor<4>,
    weight: Tensor<4>,
    output_grad: Tensor<4>,
    geom: ConvGeom,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as KernelBackend>::rk_conv2d_weight_backward(
        x.into_dispatch(),
        weight.into_dispatch(),
        output_grad.into_dispatch(),
        geom,
    ))
}

/// A BatchNorm training forward's results as tensors.
pub struct BatchNormOutput<const D: usize> {
    /// Normalised, scaled and shifted input.
    pub output: Tensor<D>,
    /// Batch mean per channel (not differentiated).
    pub mean: Tensor<1>,
    /// Biased batch variance per channel (not differentiated).
    pub variance: Tensor<1>,
}

/// BatchNorm over the batch's own statistics: `x [n, c, ...]`, `gamma`, `beta` `[c]`.
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> BatchNormOutput<D> {
    let r = <Dispatch as KernelBackend>::rk_batch_norm_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
    );
    BatchNormOutput {
        output: Tensor::from_dispatch(r.output),
        mean: Tensor::from_dispatch(r.mean),
        variance: Tensor::from_dispatch(r.variance),
    }
}

/// Gradients of [`batch_norm_train`] for input, gamma and beta, given the output gradient.
pub fn batch_norm_train_backward<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    stats: (Tensor<1>, Tensor<1>),
    epsilon: f64,
    output_grad: Tensor<D>,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    let g = <Dispatch as KernelBackend>::rk_batch_norm_train_backward(
        x.into_dispatch(),
        gamma.into_dispatch(),
        stats.0.into_dispatch(),
        stats.1.into_dispatch(),
        epsilon,
        output_grad.into_dispatch(),
    );
    (
        Tensor::from_dispatch(g.x),
        Tensor::from_dispatch(g.gamma),
        Tensor::from_dispatch(g.beta),
    )
}
