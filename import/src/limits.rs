//! What no weights file may declare, whatever its format: checked before anything is allocated,
//! by every reader ([`crate::source`]'s and [`crate::onnx`]'s).

/// The most bytes one weight may declare: a ResNet-152's classifier over ImageNet-21k's classes
/// takes 179 MB. A file declaring more is refused before anything is allocated for it.
pub const MAX_TENSOR_BYTES: usize = 4 << 30;
