//! rekindle-import: pretrained ResNet weights from PyTorch `.pth`, safetensors and ONNX into a
//! rekindle model, and export back to PyTorch-loadable safetensors.
//!
//! The key mapping it builds on lives in the model crate (`rekindle_model::remap`), which is
//! tested against torchvision there; the format readers arrive with the import issue.
