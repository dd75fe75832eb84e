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
use crate::running::track;
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

    /// Whether the layer trains (a frozen or folded one computes as in inference).
    fn training(&self) -> bool;
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

    fn training(&self) -> bool {
        self.training.is_enabled()
    }
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

    fn training(&self) -> bool {
        false
    }
}
