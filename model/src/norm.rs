//! What follows each convolution: BatchNorm as trained, or nothing once the BatchNorm has been
//! folded into the convolution (see [`crate::fold`]).
//!
//! The network's modules are generic over it so that the folded network runs the very same
//! forward code as the trained one: the layout is written once, in `block.rs` and `resnet.rs`.

use burn::module::{Module, ModuleDisplay};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Identity};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use crate::conv;

/// The normalisation applied to a convolution's output.
pub trait Norm: Module + ModuleDisplay {
    /// Normalises `[batch, channels, height, width]`.
    fn normalize(&self, x: Tensor<4>) -> Tensor<4>;

    /// `conv`, then this normalisation, then ReLU when `activate`.
    fn after(&self, conv: &Conv2d, x: Tensor<4>, activate: bool) -> Tensor<4> {
        let y = self.normalize(conv::forward(conv, x, false));
        if activate { relu(y) } else { y }
    }
}

impl Norm for BatchNorm {
    /// In training, normalises by the batch's statistics through rekindle's fused kernel and
    /// moves the running statistics as PyTorch does; otherwise by the running statistics.
    fn normalize(&self, x: Tensor<4>) -> Tensor<4> {
        // The same test Burn's `BatchNorm::forward` makes: a frozen layer stays in inference.
        if !(x.device().is_autodiff() && self.training.is_enabled()) {
            return self.forward(x);
        }
        let [n, _, h, w] = x.dims();
        let r =
            rekindle_kernels::batch_norm_train(x, self.gamma.val(), self.beta.val(), self.epsilon);
        // PyTorch moves running_var towards the *unbiased* batch variance (burn-nn uses the
        // biased one, which differs by n / (n - 1): 2x for a 1x1 map at batch 2).
        let count = (n * h * w) as f64;
        let unbiased = if count > 1.0 {
            count / (count - 1.0)
        } else {
            1.0
        };
        let m = self.momentum;
        let device = r.output.device();
        let mean = self.running_mean.value_sync().to_device(&device);
        let var = self.running_var.value_sync().to_device(&device);
        let mean = mean.mul_scalar(1.0 - m).add(r.mean.detach().mul_scalar(m));
        let var = var
            .mul_scalar(1.0 - m)
            .add(r.variance.detach().mul_scalar(m * unbiased));
        self.running_mean.update(mean.detach());
        self.running_var.update(var.detach());
        r.output
    }
}

/// A BatchNorm folded away: its scale and shift now live in the convolution's weight and bias.
impl Norm for Identity {
    fn normalize(&self, x: Tensor<4>) -> Tensor<4> {
        x
    }

    /// Convolution, bias and ReLU in one kernel call: what inference on a folded model runs.
    fn after(&self, conv: &Conv2d, x: Tensor<4>, activate: bool) -> Tensor<4> {
        conv::forward(conv, x, activate)
    }
}
