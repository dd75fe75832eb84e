//! What a dataset is made of: labelled items whose pixels are in memory or in a file, and the
//! dataset the loaders read ([`super::dataset`] builds it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use image::GrayImage;

use crate::config::BadImage;

/// Where one image's pixels come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ImageRef {
    /// The `index`-th image of the dataset's in-memory grayscale images.
    Memory(usize),
    /// An image file, decoded when the batch is built.
    File(PathBuf),
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory(i) => write!(f, "in-memory image {i}"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One labelled image.
#[derive(Clone, Debug)]
pub struct Item {
    /// The pixels.
    pub image: ImageRef,
    /// Class index into [`Dataset::class_names`].
    pub label: usize,
}

/// A dataset ready for the loaders.
#[derive(Debug)]
pub struct Dataset {
    /// Class names, in label order.
    pub class_names: Vec<String>,
    /// Training items.
    pub train: Vec<Item>,
    /// Validation items.
    pub val: Vec<Item>,
    /// In-memory images ([`ImageRef::Memory`]).
    pub memory: Arc<Vec<GrayImage>>,
    /// Files left out before training (empty, unreadable, not PNG or JPEG, over the size
    /// limit by their header, symbolic-link loops), with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Skip or fail when a file fails to decode while a batch is built.
    pub on_bad_image: BadImage,
    /// Files that passed the scan but failed to decode while a batch was built.
    pub load_failures: LoadFailures,
}

/// Files that failed to decode while batches were built, each counted once however many
/// epochs it fails in; shared by every loader of the dataset.
#[derive(Debug, Default)]
pub struct LoadFailures(Mutex<BTreeMap<PathBuf, String>>);

impl LoadFailures {
    /// Records that `path` failed with `why`; true the first time it does.
    pub fn record(&self, path: &Path, why: &str) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(path.to_path_buf(), why.to_string()).is_none()
    }

    /// The files and why, sorted by path.
    pub fn list(&self) -> Vec<(PathBuf, String)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(p, w)| (p.clone(), w.clone())).collect()
    }

    /// Whether `path` failed.
    pub fn contains(&self, path: &Path) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.contains_key(path)
    }

    /// How many files.
    pub fn count(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// How much of each file [`Dataset::scan`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// The header: format, declared size.
    Header,
    /// The whole image, decoded.
    Decode,
}

/// An image file with its label.
pub(crate) fn file_item(path: PathBuf, label: usize) -> Item {
    Item {
        image: ImageRef::File(path),
        label,
    }
}
