//! The images of a run: datasets on disk, the seeded and resumable loader, augmentation.

pub mod augment;
pub mod dataset;
pub mod loader;
