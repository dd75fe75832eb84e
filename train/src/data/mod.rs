//! The images of a run: datasets on disk (image folders, manifests, Fashion-MNIST), the
//! seeded and resumable loader, its samplers, augmentation and batch mixing.

pub mod augment;
pub mod dataset;
pub mod fashion_mnist;
pub mod folder;
pub mod image_file;
pub mod item;
pub mod loader;
pub mod manifest;
pub mod mixup;
pub mod ops;
pub mod policy;
pub mod sampler;
