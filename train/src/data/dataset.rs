//! Labelled images: image folders, manifests and Fashion-MNIST's IDX files, split into train
//! and validation, class-filtered and subsampled with the run's seed. The types are in
//! [`super::item`], image folders in [`super::folder`], one file's checks in
//! [`super::image_file`]; re-exported here, where the rest of the crate finds them.

use std::path::Path;
use std::sync::Arc;

use image::DynamicImage;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use crate::config::{BadImage, DataKind, DataSection};
use crate::data::fashion_mnist;
use crate::data::folder::{folder, stratified_split};
use crate::data::item::file_item;
use crate::data::manifest::{self, Manifest, Split};
use crate::error::TrainError;

pub(crate) use crate::data::folder::class_folders;
pub use crate::data::image_file::{check_file, decode_file, skip_warning};
pub use crate::data::item::{Dataset, ImageRef, Item, LoadFailures, Scan};

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
