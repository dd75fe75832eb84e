//! What follows each convolution: BatchNorm as trained, or nothing once the BatchNorm has been
//! folded into the convolution (see [`crate::fold`]).
//!
//! The network's modules are generic over it so that the folded network runs the very same
//! forward code as the trained one: the layout is written once, in `block.rs` and `resnet.rs`.

use burn::module::{Module, ModuleDisplay};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Identity};
use burn::tensor::Tensor;

use crate::conv;
use rekindle_kernels::residual_relu;

/// The normalisation applied to a convolution's output.
pub trait Norm: Module + ModuleDisplay + Sync {
    /// `conv`, then this normalisation, then `residual` added when given, then ReLU when
    /// `activate`: each kernel call takes as much of that chain as it can.
    fn after(
        &self,
        conv: &Conv2d,
        x: Tensor<4>,
        residual: Option<Tensor<4>>,
        activate: bool,
    ) -> Tensor<4>;
}

impl Norm for BatchNorm {
    /// In training, normalises by the batch's statistics through rekindle's fused kernel (which
    /// also adds the residual and applies ReLU) and moves the running statistics as PyTorch
    /// does; otherwise Burn's BatchNorm by the running statistics, then residual and ReLU.
    fn after(
        &self,
        conv: &Conv2d,
        x: Tensor<4>,
        residual: Option<Tensor<4>>,
        activate: bool,
    ) -> Tensor<4> {
        let x = conv::forward(conv, x, None, false);
        // The same test Burn's `BatchNorm::forward` makes: a frozen layer stays in inference.
        if !(x.device().is_autodiff() && self.training.is_enabled()) {
            return residual_relu(self.forward(x), residual, activate);
        }
        let [n, _, h, w] = x.dims();
        let (gamma, beta) = (self.gamma.val(), self.beta.val());
        let r =
            rekindle_kernels::batch_norm_train(x, gamma, beta, residual, self.epsilon, activate);
        track(self, r.mean, r.variance, n * h * w);
        r.output
    }
}

/// Moves `bn`'s running statistics towards a batch's `mean` and biased `variance`, measured over
/// `count` values per channel.
fn track(bn: &BatchNorm, mean: Tensor<1>, variance: Tensor<1>, count: usize) {
    // PyTorch moves running_var towards the *unbiased* batch variance (burn-nn uses the biased
    // one, which differs by n / (n - 1): 2x for a 1x1 map at batch 2).
    let count = count as f64;
    let unbiased = if count > 1.0 {
        count / (count - 1.0)
    } else {
        1.0
    };
    let m = bn.momentum;
    let device = mean.device();
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_var = bn.running_var.value_sync().to_device(&device);
    let mean = running_mean
        .mul_scalar(1.0 - m)
        .add(mean.detach().mul_scalar(m));
    let var = running_var
        .mul_scalar(1.0 - m)
        .add(variance.detach().mul_scalar(m * unbiased));
    bn.running_mean.update(mean.detach());
    bn.running_var.update(var.detach());
}

/// A BatchNorm folded away: its scale and shift now live in the convolution's weight and bias.
impl Norm for Identity {
    /// Convolution, bias, residual and ReLU in one kernel call: what inference on a folded model
    /// runs.
    fn after(
        &self,
        conv: &Conv2d,
        x: Tensor<4>,
        residual: Option<Tensor<4>>,
        activate: bool,
    ) -> Tensor<4> {
        conv::forward(conv, x, residual, activate)
    }
}
