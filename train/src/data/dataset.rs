//! Labelled images: image folders and Fashion-MNIST's IDX files, split into train and
//! validation, class-filtered and subsampled with the run's seed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{DynamicImage, GrayImage};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use crate::config::{BadImage, DataKind, DataSection};
use crate::data::fashion_mnist;
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
    /// Files left out because they could not be decoded, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

impl Dataset {
    /// Loads the dataset `cfg` describes; `seed` drives the split and the subsampling.
    pub fn load(cfg: &DataSection, seed: u64) -> Result<Self, TrainError> {
        let mut ds = match cfg.kind {
            DataKind::FashionMnist => fashion_mnist::load(&cfg.root)?,
            DataKind::Folder => folder(cfg, seed)?,
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

/// Decodes an image file, with the reason when it cannot.
pub fn decode_file(path: &Path) -> Result<DynamicImage, String> {
    image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())
}

/// Class folders under `dir`, sorted, each with its image files (sorted).
pub(crate) fn class_folders(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>, TrainError> {
    let entries = std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut classes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io(dir, e))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .map_err(|e| TrainError::io(&path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension().is_some_and(|x| {
                        EXTENSIONS.contains(&x.to_string_lossy().to_lowercase().as_str())
                    })
            })
            .collect();
        files.sort();
        classes.push((name, files));
    }
    classes.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(classes)
}

fn folder(cfg: &DataSection, seed: u64) -> Result<Dataset, TrainError> {
    let root = &cfg.root;
    if !root.is_dir() {
        return Err(TrainError::data(root, "not a directory"));
    }
    let (train_dir, val_dir) = (root.join("train"), root.join("val"));
    let split_dirs = train_dir.is_dir() && val_dir.is_dir();
    let train_classes = class_folders(if split_dirs { &train_dir } else { root })?;
    if train_classes.is_empty() {
        return Err(TrainError::data(
            root,
            "no class folders: expected root/<class>/*.png|jpg or root/train/<class>/..",
        ));
    }
    for (name, files) in &train_classes {
        if files.is_empty() {
            let dir = if split_dirs { &train_dir } else { root };
            return Err(TrainError::data(
                &dir.join(name),
                "class folder with no images (png, jpg, jpeg)",
            ));
        }
    }
    let class_names: Vec<String> = train_classes.iter().map(|(n, _)| n.clone()).collect();
    let mut train = Vec::new();
    let mut val = Vec::new();
    if split_dirs {
        for (label, (_, files)) in train_classes.into_iter().enumerate() {
            train.extend(files.into_iter().map(|f| Item {
                image: ImageRef::File(f),
                label,
            }));
        }
        for (name, files) in class_folders(&val_dir)? {
            let label = class_names.iter().position(|n| *n == name).ok_or_else(|| {
                TrainError::data(
                    &val_dir.join(&name),
                    format!("validation class `{name}` has no training folder"),
                )
            })?;
            val.extend(files.into_iter().map(|f| Item {
                image: ImageRef::File(f),
                label,
            }));
        }
    } else {
        // A stratified split: the same fraction of every class, chosen by the seed.
        let mut rng = StdRng::seed_from_u64(seed ^ 0x0005_9117);
        for (label, (_, mut files)) in train_classes.into_iter().enumerate() {
            files.shuffle(&mut rng);
            let n_val = ((files.len() as f64) * cfg.val_split).round() as usize;
            let n_val = n_val.min(files.len().saturating_sub(1));
            for (i, f) in files.into_iter().enumerate() {
                let item = Item {
                    image: ImageRef::File(f),
                    label,
                };
                if i < n_val {
                    val.push(item)
                } else {
                    train.push(item)
                }
            }
        }
    }
    let mut ds = Dataset {
        class_names,
        train,
        val,
        memory: Arc::new(Vec::new()),
        skipped: Vec::new(),
    };
    ds.drop_unreadable(cfg.on_bad_image)?;
    Ok(ds)
}

impl Dataset {
    /// Decodes every file once (in parallel) so that a corrupt image is found before training,
    /// not in the middle of an epoch; skips or fails as configured.
    fn drop_unreadable(&mut self, policy: BadImage) -> Result<(), TrainError> {
        let check = |items: &[Item]| -> Vec<Option<String>> {
            items
                .par_iter()
                .map(|it| match &it.image {
                    ImageRef::File(p) => decode_file(p).err(),
                    ImageRef::Memory(_) => None,
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
                                    "unreadable image: {e} (set data.on_bad_image = \"skip\" to leave such files out)"
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
