//! rekindle's own kernels for the operations that dominate ResNet training and inference on the
//! CPU, plugged into Burn as a backend extension (no fork of Burn).
//!
//! [`conv2d`], [`conv2d_bias`] and [`batch_norm_train`] take ordinary tensors on any device. On
//! flex they run our kernels, with their own gradients under autodiff; on every other backend,
//! and for what the kernels do not cover (groups, dilation, asymmetric padding, non-f32 data),
//! they run Burn's own operations.

pub mod allocator;
mod autodiff;
pub mod denormals;
mod extension;
#[cfg(feature = "flex")]
mod flex;
#[cfg(all(feature = "testing", feature = "flex"))]
pub mod parity;

use burn::backend::Dispatch;
use burn::tensor::Tensor;

pub use extension::{BnGrads, BnTrain, ConvGeom, KernelBackend, OptTensor, PoolGeom};

/// `conv(x, weight)` without bias: `x [n, c, h, w]`, `weight [o, c, kh, kw]`.
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, geom: ConvGeom) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as KernelBackend>::rk_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        geom,
    ))
}

/// `conv(x, weight) + bias`, plus `residual` when given, then ReLU when `relu`: a convolution
/// with BatchNorm folded into it, the last of a block taking the block's sum and ReLU.
pub fn conv2d_bias(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    residual: Option<Tensor<4>>,
    geom: ConvGeom,
    relu: bool,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as KernelBackend>::rk_conv2d_bias(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        residual.map(Tensor::into_dispatch).into(),
        geom,
        relu,
    ))
}

/// `out + residual` (when given), then ReLU when `relu`, as separate Burn operations: what the
/// fused ops' tails compute, for layers the kernels do not cover and as their reference.
pub fn residual_relu<const D: usize>(
    out: Tensor<D>,
    residual: Option<Tensor<D>>,
    relu: bool,
) -> Tensor<D> {
    let out = match residual {
        Some(r) => out + r,
        None => out,
    };
    if relu {
        burn::tensor::activation::relu(out)
    } else {
        out
    }
}

/// 2-D max pooling of `x [n, c, h, w]` (Burn's own operation under autodiff).
pub fn max_pool2d(x: Tensor<4>, geom: PoolGeom) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as KernelBackend>::rk_max_pool2d(
        x.into_dispatch(),
        geom,
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

/// BatchNorm over the batch's own statistics: `x [n, c, ...]`, `gamma`, `beta` `[c]`; then
/// `residual` added when given, then ReLU when `relu`.
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    residual: Option<Tensor<D>>,
    epsilon: f64,
    relu: bool,
) -> BatchNormOutput<D> {
    let r = <Dispatch as KernelBackend>::rk_batch_norm_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        residual.map(Tensor::into_dispatch).into(),
        epsilon,
        relu,
    );
    BatchNormOutput {
        output: Tensor::from_dispatch(r.output),
        mean: Tensor::from_dispatch(r.mean),
        variance: Tensor::from_dispatch(r.variance),
    }
}

/// Gradients of [`batch_norm_train`] for input, gamma, beta and the sum before ReLU (the
/// residual's), given the output gradient and, when the forward applied ReLU, its output.
pub fn batch_norm_train_backward<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    stats: (Tensor<1>, Tensor<1>),
    epsilon: f64,
    output_grad: Tensor<D>,
    output: Option<Tensor<D>>,
) -> BatchNormGrads<D> {
    let g = <Dispatch as KernelBackend>::rk_batch_norm_train_backward(
        x.into_dispatch(),
        gamma.into_dispatch(),
        stats.0.into_dispatch(),
        stats.1.into_dispatch(),
        epsilon,
        output_grad.into_dispatch(),
        output.map(Tensor::into_dispatch).into(),
    );
    BatchNormGrads {
        x: Tensor::from_dispatch(g.x),
        gamma: Tensor::from_dispatch(g.gamma),
        beta: Tensor::from_dispatch(g.beta),
        sum: Tensor::from_dispatch(g.sum),
    }
}

/// The gradients [`batch_norm_train_backward`] returns.
pub struct BatchNormGrads<const D: usize> {
    /// Of the input.
    pub x: Tensor<D>,
    /// Of gamma.
    pub gamma: Tensor<1>,
    /// Of beta.
    pub beta: Tensor<1>,
    /// Of the sum before ReLU: the residual's gradient.
    pub sum: Tensor<D>,
}

/// Runs `f` on a thread of rayon's global pool, which our kernels (and burn-flex) split their
/// work over. Called from outside the pool, every parallel operation hands its work to the pool
/// and puts the caller to sleep until it is done (a futex round trip per operation, three per
/// convolution); called from inside, the operations split work with a plain `join`. Wrap a whole
/// training step or forward pass in it. Other backends do not use rayon: `f` runs here.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "flex")]
    {
        rayon::scope(|_| f())
    }
    #[cfg(not(feature = "flex"))]
    {
        f()
    }
}
