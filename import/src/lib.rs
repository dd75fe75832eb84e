//! rekindle-import: pretrained ResNet weights from PyTorch checkpoints (`.pth`/`.pt`: zip,
//! legacy and tar) and safetensors files, named by torchvision, timm or Hugging Face, into a
//! rekindle model; and export back to safetensors that torchvision loads strictly.
//!
//! Depth and class count are read off the tensors; names are normalised to torchvision's
//! ([`naming`]) and mapped onto the model with the table in `rekindle_model::remap`.

pub mod detect;
pub mod error;
pub mod export;
pub mod import;
pub mod naming;
pub mod source;

pub use error::Error;
pub use export::export_safetensors;
pub use import::{ImportOptions, Imported, Report, import};
pub use source::Format;
