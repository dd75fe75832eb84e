//! Writing a rekindle model for other tools: torchvision-layout safetensors (PyTorch loads it
//! strictly) or an ONNX graph (ONNX Runtime, TensorRT, Triton and the other serving stacks).

pub mod onnx;
pub mod safetensors;

use std::path::Path;

use crate::error::Error;

pub use self::onnx::{OnnxExport, OnnxOptions, export_onnx};
pub use self::safetensors::export_safetensors;

/// The formats a model file exports to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// torchvision's `state_dict` as safetensors.
    Safetensors,
    /// An ONNX graph with the weights.
    Onnx,
}

impl ExportFormat {
    /// The format an output path's extension names (`.safetensors`, `.onnx`).
    pub fn from_path(path: &Path) -> Result<Self, Error> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("safetensors") => Ok(Self::Safetensors),
            Some("onnx") => Ok(Self::Onnx),
            other => Err(Error::Usage(format!(
                "{}: cannot tell the export format from the extension {}; name the file \
                 .safetensors or .onnx, or pass --format safetensors|onnx",
                path.display(),
                other.map_or("(none)".to_string(), |e| format!("`.{e}`"))
            ))),
        }
    }
}
