//! rekindle-import's integration tests, one binary: importing every source, exporting to
//! torchvision's safetensors and to ONNX (checked by ONNX Runtime and PyTorch).

mod formats;
mod onnx_export;
