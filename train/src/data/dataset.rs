//! Labelled images: image folders, manifests and Fashion-MNIST's IDX files, split into train
//! and validation, class-filtered and subsampled with the run's seed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use image::{DynamicImage, GrayImage};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use rekindle_model::decode::Limits;

use crate::config::{BadImage, DataKind, DataSection};
use crate::data::fashion_mnist;
use crate::data::manifest::{self, Format, Manifest, Split};
use crate::error::TrainError;

/// File extensions read from image folders (case-insensitive).
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

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

/// A warning for files left out: the count, and the first few with their reasons.
pub fn skip_warning(what: &str, files: &[(PathBuf, String)]) -> Option<String> {
    const SHOWN: usize = 3;
    if files.is_empty() {
        return None;
    }
    let mut msg = format!("warning: {what} {} image file(s):", files.len());
    for (path, why) in files.iter().take(SHOWN) {
        msg.push_str(&format!("\n  {}: {why}", path.display()));
    }
    if files.len() > SHOWN {
        msg.push_str(&format!("\n  and {} more", files.len() - SHOWN));
    }
    Some(msg)
}

/// Fashion-MNIST's two splits as a dataset held in memory, classes in label order.
fn in_memory((train, val): (fashion_mnist::Split, fashion_mnist::Split)) -> Dataset {
    let (train_images, train_labels) = train;
    let (val_images, val_labels) = val;
    let offset = train_images.len();
    let items = |labels: Vec<u8>, base: usize| -> Vec<Item> {
        labels
            .into_iter()
            .enumerate()
            .map(|(i, l)| Item {
                image: ImageRef::Memory(base + i),
                label: l as usize,
            })
            .collect()
    };
    let mut memory = train_images;
    memory.extend(val_images);
    Dataset {
        class_names: fashion_mnist::FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        train: items(train_labels, 0),
        val: items(val_labels, offset),
        memory: Arc::new(memory),
        skipped: Vec::new(),
        on_bad_image: BadImage::Fail,
        load_failures: Default::default(),
    }
}

impl Dataset {
    /// Loads the dataset `cfg` describes; `seed` drives the split and the subsampling.
    pub fn load(cfg: &DataSection, seed: u64) -> Result<Self, TrainError> {
        let mut ds = match cfg.kind {
            DataKind::FashionMnist => in_memory(fashion_mnist::load(&cfg.root)?),
            DataKind::Folder => folder(cfg, seed)?,
            DataKind::Manifest => manifests(cfg, seed)?,
        };
        ds.select_classes(&cfg.classes, &cfg.root)?;
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_da7a);
        ds.train = per_class(std::mem::take(&mut ds.train), cfg.train_per_class, &mut rng);
        ds.val = per_class(std::mem::take(&mut ds.val), cfg.val_per_class, &mut rng);
        ds.check(&cfg.root)?;
        Ok(ds)
    }

    /// Training images per class, in label order.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.class_names.len()];
        for it in &self.train {
            counts[it.label] += 1;
        }
        counts
    }

    /// Decodes one image.
    pub fn decode(&self, image: &ImageRef) -> Result<DynamicImage, String> {
        match image {
            ImageRef::Memory(i) => self
                .memory
                .get(*i)
                .map(|g| DynamicImage::ImageLuma8(g.clone()))
                .ok_or_else(|| format!("no in-memory image {i}")),
            ImageRef::File(path) => decode_file(path),
        }
    }

    /// Keeps only the named classes (names or label indices), relabelled in the order given.
    fn select_classes(&mut self, wanted: &[String], root: &Path) -> Result<(), TrainError> {
        if wanted.is_empty() {
            return Ok(());
        }
        let mut map = vec![None; self.class_names.len()];
        let mut names = Vec::new();
        for (new, w) in wanted.iter().enumerate() {
            let old = self
                .class_names
                .iter()
                .position(|n| n == w)
                .or_else(|| {
                    w.parse::<usize>()
                        .ok()
                        .filter(|i| *i < self.class_names.len())
                })
                .ok_or_else(|| {
                    TrainError::data(
                        root,
                        format!(
                            "data.classes names `{w}`, which is not a class here; classes: {}",
                            self.class_names.join(", ")
                        ),
                    )
                })?;
            if map[old].is_some() {
                return Err(TrainError::data(
                    root,
                    format!("data.classes names `{w}` twice"),
                ));
            }
            map[old] = Some(new);
            names.push(self.class_names[old].clone());
        }
        let relabel = |items: Vec<Item>| -> Vec<Item> {
            items
                .into_iter()
                .filter_map(|it| {
                    map[it.label].map(|label| Item {
                        image: it.image,
                        label,
                    })
                })
                .collect()
        };
        self.train = relabel(std::mem::take(&mut self.train));
        self.val = relabel(std::mem::take(&mut self.val));
        self.class_names = names;
        Ok(())
    }

    /// Refuses datasets that cannot train a classifier.
    fn check(&self, root: &Path) -> Result<(), TrainError> {
        if self.train.is_empty() {
            return Err(TrainError::data(root, "no training images"));
        }
        if self.class_names.len() < 2 {
            return Err(TrainError::data(
                root,
                format!(
                    "a classifier needs at least 2 classes, found {} ({})",
                    self.class_names.len(),
                    self.class_names.join(", ")
                ),
            ));
        }
        if self.val.is_empty() {
            return Err(TrainError::data(
                root,
                "no validation images: add a val/ folder or set data.val_split > 0",
            ));
        }
        Ok(())
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

/// Keeps at most `n` items per class (all when `n` is 0), chosen at random, in a shuffled order.
fn per_class(mut items: Vec<Item>, n: usize, rng: &mut StdRng) -> Vec<Item> {
    items.shuffle(rng);
    if n == 0 {
        return items;
    }
    let mut count = std::collections::HashMap::new();
    items.retain(|it| {
        let c = count.entry(it.label).or_insert(0usize);
        *c += 1;
        *c <= n
    });
    items
}

/// Decodes an image file to upright 8-bit RGB, with the reason when it cannot: the model
/// crate's [`rekindle_model::decode::decode_file`] within [`Limits::TRAINING`], the decoding
/// inference uses too, so both see the same pixels (EXIF orientation, pixel rules).
pub fn decode_file(path: &Path) -> Result<DynamicImage, String> {
    rekindle_model::decode::decode_file(path, &Limits::TRAINING)
        .map(DynamicImage::ImageRgb8)
        .map_err(|e| e.to_string())
}

/// Reads only the header of an image file: empty, not PNG or JPEG, unreadable (a broken or
/// looping symbolic link), or over [`Limits::TRAINING`] by its declared size; the reason.
pub fn check_file(path: &Path) -> Result<(), String> {
    rekindle_model::decode::check_file(path, &Limits::TRAINING)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

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
fn folder(cfg: &DataSection, seed: u64) -> Result<Dataset, TrainError> {
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

/// An image file with its label.
fn file_item(path: PathBuf, label: usize) -> Item {
    Item {
        image: ImageRef::File(path),
        label,
    }
}

/// Splits each class's files (`by_label[label]`) into training and validation items: the same
/// fraction `val_split` of every class, rounded, at least one left to train, chosen by `seed`.
fn stratified_split(
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

/// The images listed in `data.root` and every one of `data.roots`, all manifests: split by
/// their `split` column when rows have one, by `data.val_split` otherwise.
fn manifests(cfg: &DataSection, seed: u64) -> Result<Dataset, TrainError> {
    let manifests = cfg
        .all_roots()
        .map(Manifest::read)
        .collect::<Result<Vec<_>, _>>()?;
    let split = manifest::has_splits(&manifests)?;
    // Without data.classes, labels sorted as class folders are; with it, its order is kept
    // so that label indices can match a head trained before.
    let class_names = if cfg.classes.is_empty() {
        manifest::labels(&manifests)
    } else {
        cfg.classes.clone()
    };
    let (mut train, mut val, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    let mut by_label = vec![Vec::new(); class_names.len()];
    for m in &manifests {
        for row in &m.rows {
            let label = m.label_index(row, &class_names, "data.classes")?;
            if let Some(why) = m.missing(row) {
                if cfg.on_bad_image == BadImage::Fail {
                    let hint = " (set data.on_bad_image = \"skip\" to leave such files out)";
                    return Err(m.missing_error(row, hint));
                }
                skipped.push((row.path.clone(), why));
                continue;
            }
            let path = row.path.clone();
            match row.split {
                Some(Split::Train) => train.push(file_item(path, label)),
                Some(Split::Val) => val.push(file_item(path, label)),
                None => by_label[label].push(path),
            }
        }
    }
    if !split {
        (train, val) = stratified_split(by_label, cfg.val_split, seed);
    }
    let mut ds = Dataset {
        class_names,
        train,
        val,
        memory: Arc::new(Vec::new()),
        skipped,
        on_bad_image: cfg.on_bad_image,
        load_failures: LoadFailures::default(),
    };
    ds.every_class_trains(&cfg.root)?;
    ds.scan(cfg.on_bad_image, Scan::Header)?;
    Ok(ds)
}

impl Dataset {
    /// Refuses a class without training images (a manifest's label seen only in `val` rows,
    /// or a `data.classes` name no row carries), which a classifier could never learn.
    fn every_class_trains(&self, root: &Path) -> Result<(), TrainError> {
        let counts = self.class_counts();
        match counts.iter().position(|&n| n == 0) {
            Some(i) => Err(TrainError::data(
                root,
                format!("class `{}` has no training images", self.class_names[i]),
            )),
            None => Ok(()),
        }
    }

    /// Checks every file (in parallel) so that a bad image is found before training, not in
    /// the middle of an epoch; skips (listed in `skipped`) or fails as `policy` says.
    ///
    /// Training reads headers only ([`Scan::Header`]): cheap for a million images, and it
    /// catches empty, truncated-header, non-image and oversized files. What only a full decode
    /// finds (a corrupt body) is left out when its batch is built, and counted in
    /// `load_failures`. Evaluation decodes ([`Scan::Decode`]), so that its metrics are over a
    /// fixed, known set of images.
    pub fn scan(&mut self, policy: BadImage, how: Scan) -> Result<(), TrainError> {
        let check = |items: &[Item]| -> Vec<Option<String>> {
            items
                .par_iter()
                .map(|it| match (&it.image, how) {
                    (ImageRef::File(p), Scan::Header) => check_file(p).err(),
                    (ImageRef::File(p), Scan::Decode) => decode_file(p).err(),
                    (ImageRef::Memory(_), _) => None,
                })
                .collect()
        };
        for split in [&mut self.train, &mut self.val] {
            let errors = check(split);
            let mut kept = Vec::with_capacity(split.len());
            for (it, err) in std::mem::take(split).into_iter().zip(errors) {
                match (err, &it.image) {
                    (Some(e), ImageRef::File(p)) => {
                        if policy == BadImage::Fail {
                            return Err(TrainError::data(
                                p,
                                format!(
                                    "unreadable image: {e} (set data.on_bad_image = \"skip\" to \
                                     leave such files out)"
                                ),
                            ));
                        }
                        self.skipped.push((p.clone(), e));
                    }
                    _ => kept.push(it),
                }
            }
            *split = kept;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn write_png(path: &Path, shade: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_pixel(6, 5, Rgb([shade, 0, 0]))
            .save(path)
            .unwrap();
    }

    fn cfg(root: &Path) -> DataSection {
        DataSection {
            kind: DataKind::Folder,
            root: root.to_path_buf(),
            val_split: 0.25,
            ..DataSection::default()
        }
    }

    #[test]
    fn folder_split_is_stratified_and_seeded() {
        let dir = tempfile::tempdir().unwrap();
        for c in ["cat", "dog"] {
            for i in 0..8 {
                write_png(&dir.path().join(c).join(format!("{i}.png")), i * 10);
            }
        }
        let a = Dataset::load(&cfg(dir.path()), 1).unwrap();
        assert_eq!(a.class_names, ["cat", "dog"]);
        assert_eq!((a.train.len(), a.val.len()), (12, 4));
        for label in 0..2 {
            assert_eq!(a.val.iter().filter(|i| i.label == label).count(), 2);
        }
        let b = Dataset::load(&cfg(dir.path()), 1).unwrap();
        let names =
            |d: &Dataset| format!("{:?}", d.val.iter().map(|i| &i.image).collect::<Vec<_>>());
        assert_eq!(names(&a), names(&b));
    }

    #[test]
    fn corrupt_images_skip_or_fail_by_policy() {
        let dir = tempfile::tempdir().unwrap();
        for c in ["a", "b"] {
            for i in 0..4 {
                write_png(&dir.path().join(c).join(format!("{i}.png")), 1);
            }
        }
        let bad = dir.path().join("a/bad.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let ds = Dataset::load(&cfg(dir.path()), 0).unwrap();
        assert_eq!(ds.skipped.len(), 1);
        assert_eq!(ds.skipped[0].0, bad);
        assert_eq!(ds.train.len() + ds.val.len(), 8);
        let mut c = cfg(dir.path());
        c.on_bad_image = BadImage::Fail;
        let err = Dataset::load(&c, 0).unwrap_err().to_string();
        assert!(
            err.contains("bad.png") && err.contains("unreadable"),
            "{err}"
        );
    }

    #[test]
    fn files_decode_to_rgb_by_the_model_pixel_rules() {
        let dir = tempfile::tempdir().unwrap();
        let (gray_alpha, gray16) = (dir.path().join("la.png"), dir.path().join("g16.png"));
        image::GrayAlphaImage::from_pixel(3, 2, image::LumaA([77, 0]))
            .save(&gray_alpha)
            .unwrap();
        image::ImageBuffer::<image::Luma<u16>, _>::from_pixel(3, 2, image::Luma([257 * 200 + 100]))
            .save(&gray16)
            .unwrap();
        // Alpha is dropped, not composited; 16 bits scale by round(v / 257); gray gives R=G=B.
        for (path, want) in [(gray_alpha, 77), (gray16, 200)] {
            let img = decode_file(&path).unwrap();
            let rgb = img.as_rgb8().expect("decoded files are 8-bit RGB");
            assert!(rgb.pixels().all(|p| p.0 == [want; 3]), "{path:?}");
        }
    }

    #[test]
    fn unusable_datasets_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = Dataset::load(&cfg(dir.path()), 0).unwrap_err().to_string();
        assert!(err.contains("no class folders"), "{err}");
        write_png(&dir.path().join("only/0.png"), 1);
        write_png(&dir.path().join("only/1.png"), 1);
        let err = Dataset::load(&cfg(dir.path()), 0).unwrap_err().to_string();
        assert!(err.contains("at least 2 classes"), "{err}");
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();
        let err = Dataset::load(&cfg(dir.path()), 0).unwrap_err().to_string();
        assert!(err.contains("empty") && err.contains("no images"), "{err}");
    }

    #[test]
    fn fashion_mnist_classes_and_subsampling() {
        let root = Path::new("/usr/share/datasets/fashion-mnist");
        if !root.exists() {
            panic!("Fashion-MNIST missing: `cargo xtask setup` installs dataset-fashion-mnist");
        }
        let c = DataSection {
            classes: vec!["Sandal".into(), "8".into()],
            train_per_class: 7,
            val_per_class: 3,
            ..DataSection::default()
        };
        let ds = Dataset::load(&c, 3).unwrap();
        assert_eq!(ds.class_names, ["Sandal", "Bag"]);
        assert_eq!((ds.train.len(), ds.val.len()), (14, 6));
        let img = ds.decode(&ds.train[0].image).unwrap();
        assert_eq!((img.width(), img.height()), (28, 28));
        let err = Dataset::load(
            &DataSection {
                classes: vec!["Hat".into()],
                ..DataSection::default()
            },
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`Hat`") && err.contains("Ankle boot"), "{err}");
    }
}
