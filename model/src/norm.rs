//! What follows each convolution: BatchNorm as trained, or nothing once the BatchNorm has been
//! folded into the convolution (see [`crate::fold`]).
//!
//! The network's modules are generic over it so that the folded network runs the very same
//! forward code as the trained one: the layout is written once, in `block.rs` and `resnet.rs`.

use burn::module::{Module, ModuleDisplay};
use burn::nn::{BatchNorm, Identity};
use burn::tensor::Tensor;

/// The normalisation applied to a convolution's output.
pub trait Norm: Module + ModuleDisplay {
    /// Normalises `[batch, channels, height, width]`.
    fn normalize(&self, x: Tensor<4>) -> Tensor<4>;
}

impl Norm for BatchNorm {
    fn normalize(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward(x)
    }
}

/// A BatchNorm folded away: its scale and shift now live in the convolution's weight and bias.
impl Norm for Identity {
    fn normalize(&self, x: Tensor<4>) -> Tensor<4> {
        x
    }
}
