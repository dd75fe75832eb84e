//! rekindle-import: pretrained ResNet weights from PyTorch checkpoints (`.pth`/`.pt`: zip,
//! legacy and tar), safetensors files (named by torchvision, timm or Hugging Face) and ONNX
//! graphs (read by structure, BatchNorm folded or not), into a
//! rekindle model; and export back to safetensors that torchvision loads strictly.
//!
//! Depth and class count are read off the tensors; names are normalised to torchvision's
//! ([`naming`]) and mapped onto the model with the table in `rekindle_model::remap`.

pub mod detect;
pub mod error;
pub mod export;
pub mod import;
pub mod limits;
pub mod naming;
pub mod onnx;
pub mod source;

pub use error::Error;
pub use export::{ExportFormat, OnnxExport, OnnxOptions, export_onnx, export_safetensors};
pub use import::{ImportOptions, Imported, Report, import, import_as};
/// The ONNX protobuf types, for building or inspecting graphs (tests, tools).
pub use onnx_ir as onnx_proto;
pub use source::{Format, sniff};
