//! The images of a run: datasets on disk (image folders, Fashion-MNIST), the seeded and
//! resumable loader, augmentation.

pub mod augment;
pub mod dataset;
pub mod fashion_mnist;
pub mod loader;
