//! Image folders: `root/<class>/*.png|jpg`, or `root/train/..` beside `root/val/..`, several
//! roots merged by class name, split into training and validation by class.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::config::DataSection;
use crate::data::item::{Dataset, Item, LoadFailures, Scan, file_item};
use crate::data::manifest::Format;
use crate::error::TrainError;

/// File extensions read from image folders (case-insensitive).
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Class folders under `dir`, sorted, each with its image files (sorted). Subfolders of a class
/// folder are not searched, so no symbolic link can make the walk endless; a class folder that
/// is a link back to `dir` or above it is left out and pushed to `skipped`.
pub(crate) fn class_folders(
    dir: &Path,
    skipped: &mut Vec<(PathBuf, String)>,
) -> Result<Vec<(String, Vec<PathBuf>)>, TrainError> {
    let entries = std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))?;
    let top = dir.canonicalize().map_err(|e| TrainError::io(dir, e))?;
    let mut classes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io(dir, e))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.canonicalize().is_ok_and(|real| top.starts_with(real)) {
            let why = "symbolic link loop: leads back to the folder it is in; left out";
            skipped.push((path, why.into()));
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .map_err(|e| TrainError::io(&path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_image_name(p) && is_file_or_dangling(p))
            .collect();
        files.sort();
        classes.push((name, files));
    }
    classes.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(classes)
}

/// Whether `p` ends in an image extension; the name need not be UTF-8.
fn is_image_name(p: &Path) -> bool {
    p.extension()
        .is_some_and(|x| EXTENSIONS.contains(&x.to_string_lossy().to_lowercase().as_str()))
}

/// A regular file, or a symbolic link that leads nowhere (broken, or a loop): kept so that the
/// scan names it among the skipped files instead of it vanishing. Folders, pipes and devices
/// are not images (opening a pipe would block).
fn is_file_or_dangling(p: &Path) -> bool {
    match std::fs::metadata(p) {
        Ok(m) => m.is_file(),
        Err(_) => p.symlink_metadata().is_ok_and(|m| m.is_symlink()),
    }
}

/// Class folders of every root before the split: files that a root's `train/` and `val/`
/// folders already place, and those of flat roots, left to the stratified split.
#[derive(Default)]
struct Folders {
    /// Training files by class name, from `root/train/<class>/`.
    train: BTreeMap<String, Vec<PathBuf>>,
    /// Validation class folders: the folder, its class name and its files.
    val: Vec<(PathBuf, String, Vec<PathBuf>)>,
    /// Files by class name from `root/<class>/`, to split by `data.val_split`.
    to_split: BTreeMap<String, Vec<PathBuf>>,
    /// Class folders left out (symbolic-link loops), with the reason.
    skipped: Vec<(PathBuf, String)>,
}

impl Folders {
    /// Adds the class folders of one root (either layout).
    fn add(&mut self, root: &Path) -> Result<(), TrainError> {
        if !root.is_dir() {
            let hint = match Format::of(root) {
                Ok(_) => " (a manifest? set data.kind = \"manifest\")",
                Err(_) => "",
            };
            return Err(TrainError::data(root, format!("not a directory{hint}")));
        }
        let (train_dir, val_dir) = (root.join("train"), root.join("val"));
        let split_dirs = train_dir.is_dir() && val_dir.is_dir();
        let dir = if split_dirs { &train_dir } else { root };
        let classes = class_folders(dir, &mut self.skipped)?;
        if classes.is_empty() {
            return Err(TrainError::data(
                root,
                "no class folders: expected root/<class>/*.png|jpg or root/train/<class>/..",
            ));
        }
        let into = if split_dirs {
            &mut self.train
        } else {
            &mut self.to_split
        };
        for (name, files) in classes {
            if files.is_empty() {
                return Err(TrainError::data(
                    &dir.join(&name),
                    "class folder with no images (png, jpg, jpeg)",
                ));
            }
            into.entry(name).or_default().extend(files);
        }
        if split_dirs {
            for (name, files) in class_folders(&val_dir, &mut self.skipped)? {
                self.val.push((val_dir.join(&name), name, files));
            }
        }
        Ok(())
    }
}

/// Image folders under `data.root` and every one of `data.roots`, merged by class name.
pub(crate) fn folder(cfg: &DataSection, seed: u64) -> Result<Dataset, TrainError> {
    let mut f = Folders::default();
    for root in cfg.all_roots() {
        f.add(root)?;
    }
    let names: BTreeSet<&String> = f.train.keys().chain(f.to_split.keys()).collect();
    let class_names: Vec<String> = names.into_iter().cloned().collect();
    let label = |name: &str| class_names.iter().position(|n| n == name);
    let mut by_label = vec![Vec::new(); class_names.len()];
    for (name, files) in f.to_split {
        by_label[label(&name).unwrap_or_default()] = files;
    }
    let (mut train, mut val) = stratified_split(by_label, cfg.val_split, seed);
    for (name, files) in f.train {
        let label = label(&name).unwrap_or_default();
        train.extend(files.into_iter().map(|f| file_item(f, label)));
    }
    for (dir, name, files) in f.val {
        let label = label(&name).ok_or_else(|| {
            TrainError::data(
                &dir,
                format!("validation class `{name}` has no training folder"),
            )
        })?;
        val.extend(files.into_iter().map(|f| file_item(f, label)));
    }
    let mut ds = Dataset {
        class_names,
        train,
        val,
        memory: Arc::new(Vec::new()),
        skipped: f.skipped,
        on_bad_image: cfg.on_bad_image,
        load_failures: LoadFailures::default(),
    };
    ds.scan(cfg.on_bad_image, Scan::Header)?;
    Ok(ds)
}

/// Splits each class's files (`by_label[label]`) into training and validation items: the same
/// fraction `val_split` of every class, rounded, at least one left to train, chosen by `seed`.
pub(crate) fn stratified_split(
    by_label: Vec<Vec<PathBuf>>,
    val_split: f64,
    seed: u64,
) -> (Vec<Item>, Vec<Item>) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0005_9117);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (label, mut files) in by_label.into_iter().enumerate() {
        files.shuffle(&mut rng);
        let n_val = ((files.len() as f64) * val_split).round() as usize;
        let n_val = n_val.min(files.len().saturating_sub(1));
        for (i, f) in files.into_iter().enumerate() {
            let part = if i < n_val { &mut val } else { &mut train };
            part.push(file_item(f, label));
        }
    }
    (train, val)
}
