//! rekindle-model: a backend-agnostic, torchvision-exact ResNet (18/34/50/101/152) with a
//! configurable classifier head, the metadata that travels with its weights, and the run-time
//! backend choice. Shared by training, import and inference.

pub mod arch;
pub mod backend;
pub mod block;
pub mod conv;
pub mod decode;
pub mod drop_path;
pub mod error;
pub mod file;
pub mod fold;
pub mod head;
pub mod metadata;
pub mod norm;
pub mod params;
pub mod pixels;
pub mod pool;
pub mod preprocess;
pub mod remap;
pub mod resnet;
mod running;
pub mod shapes;
pub mod stage;

pub use arch::{Arch, BlockKind};
pub use backend::Backend;
pub use error::Error;
pub use file::{load_model, load_weights, read_metadata, save_model};
pub use fold::{FoldedResNet, fold_conv_bn};
pub use head::{Head, HeadConfig};
pub use metadata::{ModelMetadata, Preprocess};
pub use norm::Norm;
pub use params::{PathMapper, PathVisitor, map_with_paths, visit_with_paths};
pub use pixels::{as_rgb, to_rgb};
pub use resnet::{ResNet, ResNetConfig};
pub use stage::Stage;

/// Burn, re-exported so users of this crate build tensors and devices with the same version.
pub use burn;
