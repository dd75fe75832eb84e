//! The operations rekindle runs its own kernels for, as a Burn backend extension.
//!
//! Every method has a default body made of Burn's own operations, so every backend computes the
//! same thing; flex overrides them with the kernels in [`crate::flex`], and `Autodiff` records
//! them with their own backward ([`crate::autodiff`]). Burn routes a call to the backend of its
//! tensors at run time, so each backend compiled in has to be listed here: an unlisted one panics.

// Burn deprecates its ndarray and LibTorch backends; rekindle still runs on both, so the
// extension has to name them.
#![allow(deprecated)]

use burn::backend::ops::ConvOptions;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, ExtensionType, backend_extension};

/// Geometry of a plain 2-D convolution: one group, no dilation, symmetric padding per axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeom {
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Zero padding added to both sides of height and of width.
    pub padding: [usize; 2],
}

impl ConvGeom {
    /// The same geometry as Burn's convolution options.
    pub fn options(self) -> ConvOptions<2> {
        ConvOptions::new(self.stride, self.padding, [1, 1], 1)
    }

    /// Output size along one axis for input size `input` and kernel size `kernel`.
    pub fn out_len(self, axis: usize, input: usize, kernel: usize) -> usize {
        (input + 2 * self.padding[axis] - kernel) / self.stride[axis] + 1
    }
}

/// Geometry of a 2-D max pooling: no dilation, floor rounding, symmetric padding per axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolGeom {
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Padding added to both sides of height and of width (ignored by the maximum).
    pub padding: [usize; 2],
}

impl PoolGeom {
    /// Output size along one axis for input size `input`.
    pub fn out_len(self, axis: usize, input: usize) -> usize {
        (input + 2 * self.padding[axis] - self.kernel[axis]) / self.stride[axis] + 1
    }
}

/// What a BatchNorm training forward returns: the output and the batch statistics.
#[derive(ExtensionType)]
pub struct BnTrain<B: Backend> {
    /// The normalised, scaled and shifted input.
    pub output: FloatTensor<B>,
    /// Batch mean per channel.
    pub mean: FloatTensor<B>,
    /// Biased batch variance per channel (what normalises; running stats want the unbiased one).
    pub variance: FloatTensor<B>,
}

/// The gradients of a BatchNorm training forward.
#[derive(ExtensionType)]
pub struct BnGrads<B: Backend> {
    /// Gradient of the input.
    pub x: FloatTensor<B>,
    /// Gradient of gamma.
    pub gamma: FloatTensor<B>,
    /// Gradient of beta.
    pub beta: FloatTensor<B>,
    /// Gradient of the sum before ReLU (the output gradient itself without ReLU): what the
    /// residual receives.
    pub sum: FloatTensor<B>,
}

/// A float tensor that may be absent: Burn's extension macro takes tensors and
/// `#[extension_type]` values as inputs, but not an `Option` of a tensor.
#[derive(ExtensionType)]
pub enum OptTensor<B: Backend> {
    /// No tensor.
    Absent,
    /// A tensor.
    Present(FloatTensor<B>),
}

impl<B: Backend> OptTensor<B> {
    /// The tensor, if present.
    pub fn into_option(self) -> Option<FloatTensor<B>> {
        match self {
            Self::Absent => None,
            Self::Present(t) => Some(t),
        }
    }
}

impl<B: Backend> From<Option<FloatTensor<B>>> for OptTensor<B> {
    fn from(t: Option<FloatTensor<B>>) -> Self {
        t.map_or(Self::Absent, Self::Present)
    }
}

/// rekindle's convolution and BatchNorm operations; Burn's ops unless a backend overrides them.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    Autodiff
)]
pub trait KernelBackend: Backend {
    /// Convolution without bias: `x [n, c, h, w]`, `weight [o, c, kh, kw]`.
    fn rk_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geom: ConvGeom,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, None, geom.options())
    }

    /// Convolution plus a per-channel bias, plus `residual` when given, then ReLU when `relu`: a
    /// folded inference layer, the last of a residual block taking the block's sum and ReLU.
    fn rk_conv2d_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        #[extension_type] residual: OptTensor<Self>,
        geom: ConvGeom,
        relu: bool,
    ) -> FloatTensor<Self> {
        composed::conv2d_bias::<Self>(x, weight, bias, residual.into_option(), geom, relu)
    }

    /// 2-D max pooling. Under autodiff this stays Burn's tracked operation (flex's kernel serves
    /// inference, where Burn's generic pooling took ~8% of a ResNet-50 forward at 64 px).
    fn rk_max_pool2d(x: FloatTensor<Self>, geom: PoolGeom) -> FloatTensor<Self> {
        Self::max_pool2d(x, geom.kernel, geom.stride, geom.padding, [1, 1], false)
    }

    /// Gradient of [`rk_conv2d`](Self::rk_conv2d) with respect to `x`.
    fn rk_conv2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        geom: ConvGeom,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, output_grad, geom.options())
    }

    /// Gradient of [`rk_conv2d`](Self::rk_conv2d) with respect to `weight`.
    fn rk_conv2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        geom: ConvGeom,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, output_grad, geom.options())
    }

    /// BatchNorm with the batch's own statistics, which it returns; `residual` added to its
    /// output when given, then ReLU when `relu` (the tail of a residual block, or the ReLU after
    /// a block's inner BatchNorms).
    fn rk_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        #[extension_type] residual: OptTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> BnTrain<Self> {
        composed::batch_norm_train::<Self>(x, gamma, beta, residual.into_option(), epsilon, relu)
    }

    /// Gradients of [`rk_batch_norm_train`](Self::rk_batch_norm_train); `output` is its output
    /// when it applied ReLU (whose gradient is masked where the output is zero), `None` when not.
    fn rk_batch_norm_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        output_grad: FloatTensor<Self>,
        #[extension_type] output: OptTensor<Self>,
    ) -> BnGrads<Self> {
        let stats = [mean, variance];
        composed::batch_norm_train_backward::<Self>(
            x,
            gamma,
            stats,
            epsilon,
            output_grad,
            output.into_option(),
        )
    }
}

/// The fused operations composed of Burn's own: the extension's default bodies, and what flex
/// runs for dtypes its kernels do not take.
pub(crate) mod composed {
    use super::{BnGrads, BnTrain, ConvGeom};
    use burn::backend::Backend;
    use burn::backend::tensor::FloatTensor;

    /// `out + residual` (when given), then ReLU when `relu`.
    fn tail<B: Backend>(
        out: FloatTensor<B>,
        residual: Option<FloatTensor<B>>,
        relu: bool,
    ) -> FloatTensor<B> {
        let out = match residual {
            Some(r) => B::float_add(out, r),
            None => out,
        };
        if relu { B::relu(out) } else { out }
    }

    /// Convolution plus bias, then [`tail`].
    pub(crate) fn conv2d_bias<B: Backend>(
        x: FloatTensor<B>,
        weight: FloatTensor<B>,
        bias: FloatTensor<B>,
        residual: Option<FloatTensor<B>>,
        geom: ConvGeom,
        relu: bool,
    ) -> FloatTensor<B> {
        tail::<B>(
            B::conv2d(x, weight, Some(bias), geom.options()),
            residual,
            relu,
        )
    }

    /// BatchNorm with the batch's statistics, then [`tail`].
    pub(crate) fn batch_norm_train<B: Backend>(
        x: FloatTensor<B>,
        gamma: FloatTensor<B>,
        beta: FloatTensor<B>,
        residual: Option<FloatTensor<B>>,
        epsilon: f64,
        relu: bool,
    ) -> BnTrain<B> {
        let r = B::batch_norm_train(x, gamma, beta, epsilon);
        BnTrain {
            output: tail::<B>(r.output, residual, relu),
            mean: r.mean,
            variance: r.variance,
        }
    }

    /// Gradients of [`batch_norm_train`], through ReLU when its `output` is given.
    pub(crate) fn batch_norm_train_backward<B: Backend>(
        x: FloatTensor<B>,
        gamma: FloatTensor<B>,
        [mean, variance]: [FloatTensor<B>; 2],
        epsilon: f64,
        output_grad: FloatTensor<B>,
        output: Option<FloatTensor<B>>,
    ) -> BnGrads<B> {
        let sum = match output {
            Some(y) => B::relu_backward(y, output_grad),
            None => output_grad,
        };
        let g = B::batch_norm_train_backward(x, gamma, mean, variance, epsilon, sum.clone());
        BnGrads {
            x: g.x_grad,
            gamma: g.gamma_grad,
            beta: g.beta_grad,
            sum,
        }
    }
}

#[cfg(feature = "ndarray")]
impl KernelBackend for burn::backend::NdArray {}
#[cfg(feature = "tch")]
impl KernelBackend for burn::backend::LibTorch {}
#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl KernelBackend for burn::backend::Cube {}
