//! The evaluation report of a model on labelled images: `rekindle-train eval` (and
//! `cargo xtask eval`), and the report every training run ends with for its best model on the
//! validation split. Predict (with test-time augmentation) -> [`metrics::metrics`] ->
//! [`report::write`] (JSON, CSV and PNG files in one folder).

pub mod metrics;
pub mod plots;
pub mod report;
pub mod tta;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;
use rekindle_model::{Backend, ModelMetadata, ResNet, load_model};

use crate::config::BadImage;
use crate::data::dataset::{Dataset, ImageRef, Item, Scan, class_folders, skip_warning};
use crate::data::manifest::Manifest;
use crate::error::TrainError;
use crate::eval::metrics::{Metrics, metrics};
use crate::eval::tta::Tta;

/// Images per forward pass (times the views of test-time augmentation).
const BATCH: usize = 32;

/// What to evaluate, how, and where the report goes.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// A rekindle model file.
    pub model: PathBuf,
    /// Labelled images: `DATA/<class>/*.png|jpg` or a `.csv`/`.jsonl` manifest (every row),
    /// class names as the model's.
    pub data: PathBuf,
    /// The report's folder.
    pub out: PathBuf,
    /// Test-time augmentation.
    pub tta: Tta,
    /// Backend to run on.
    pub backend: Backend,
}

/// An evaluation's numbers and the files written.
#[derive(Debug)]
pub struct Evaluation {
    /// The numbers.
    pub metrics: Metrics,
    /// The report's files.
    pub files: Vec<PathBuf>,
}

/// Evaluates the model file on the images `opts.data` names and writes the report.
pub fn evaluate(opts: &EvalOptions) -> Result<Evaluation, TrainError> {
    let device = opts.backend.device_at(0)?;
    let (net, meta) = load_model(&opts.model, &device)?;
    let data = Arc::new(labelled(&opts.data, &meta.class_names)?);
    if let Some(warning) = skip_warning("left out", &data.skipped) {
        eprintln!("{warning}");
    }
    let items = data.val.clone();
    report_on(&net, &meta, &data, &items, opts.tta, &opts.out)
}

/// The percentage of `items` (images of `data`) that the model file `model` classifies right
/// (top-1, its own preprocessing, no test-time augmentation) on `backend`: how a search's winner
/// is checked on a test split that played no part in choosing it.
pub fn top1_accuracy(
    model: &Path,
    data: &Dataset,
    items: &[Item],
    backend: Backend,
) -> Result<f64, TrainError> {
    if items.is_empty() {
        return Err(TrainError::data(model, "no images to evaluate on"));
    }
    let device = backend.device_at(0)?;
    let (net, meta) = load_model(model, &device)?;
    let probs = predict(&net, &meta, data, items, Tta::None)?;
    let labels: Vec<usize> = items.iter().map(|i| i.label).collect();
    Ok(100.0 * metrics(&probs, &labels, &meta.class_names).top1)
}

/// Predicts `items` of `data` with `net`, measures and writes the report to `out`.
pub fn report_on(
    net: &ResNet,
    meta: &ModelMetadata,
    data: &Dataset,
    items: &[Item],
    tta: Tta,
    out: &Path,
) -> Result<Evaluation, TrainError> {
    // The files that failed to decode while training are left out of its report too.
    let items: Vec<Item> = items
        .iter()
        .filter(|it| !matches!(&it.image, ImageRef::File(p) if data.load_failures.contains(p)))
        .cloned()
        .collect();
    let items = &items[..];
    if items.is_empty() {
        return Err(TrainError::data(out, "no images to evaluate"));
    }
    let probs = predict(net, meta, data, items, tta)?;
    // A NaN anywhere means weights that are not finite: no metric of it would mean anything.
    let nan: Vec<usize> = (0..probs.len())
        .filter(|&i| probs[i].iter().any(|v| v.is_nan()))
        .collect();
    if let Some(&first) = nan.first() {
        return Err(TrainError::data(
            out,
            format!(
                "the model's class probabilities are NaN for {} of {} images (first: {}); \
                 its weights are not finite",
                nan.len(),
                items.len(),
                items[first].image
            ),
        ));
    }
    let labels: Vec<usize> = items.iter().map(|i| i.label).collect();
    let m = metrics(&probs, &labels, &meta.class_names);
    let files = report::write(out, &m, data, items, &probs, tta)?;
    Ok(Evaluation { metrics: m, files })
}

/// Class probabilities of every item, averaged over the views of `tta`.
pub fn predict(
    net: &ResNet,
    meta: &ModelMetadata,
    data: &Dataset,
    items: &[Item],
    tta: Tta,
) -> Result<Vec<Vec<f32>>, TrainError> {
    let pre = &meta.preprocess;
    let (side, views, classes) = (pre.crop, tta.views(), meta.class_names.len());
    let device: Device = net.conv1.weight.val().device();
    let mut probs = Vec::with_capacity(items.len());
    for chunk in items.chunks(BATCH) {
        let pixels: Vec<Vec<f32>> = chunk
            .par_iter()
            .map(|it| {
                let img = data
                    .decode(&it.image)
                    .map_err(|e| unreadable(&it.image, e))?;
                let mut v = Vec::with_capacity(views * 3 * side * side);
                tta.transform(&img, pre, &mut v);
                Ok(v)
            })
            .collect::<Result<_, TrainError>>()?;
        let n = chunk.len() * views;
        let x = Tensor::from_data(
            TensorData::new(pixels.concat(), [n, 3, side, side]),
            &device,
        );
        let p = softmax(net.forward(x), 1).reshape([chunk.len(), views, classes]);
        let mean: Vec<f32> = p
            .mean_dim(1)
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| TrainError::Stopped(format!("reading predictions back: {e:?}")))?;
        probs.extend(mean.chunks(classes).map(<[f32]>::to_vec));
    }
    Ok(probs)
}

fn unreadable(image: &ImageRef, e: String) -> TrainError {
    match image {
        ImageRef::File(p) => TrainError::data(p, format!("unreadable image: {e}")),
        ImageRef::Memory(i) => TrainError::Stopped(format!("in-memory image {i}: {e}")),
    }
}

/// The labelled images of `data`: a class-folder tree ([`labelled_folder`]) or a manifest
/// file ([`labelled_manifest`]).
pub fn labelled(data: &Path, classes: &[String]) -> Result<Dataset, TrainError> {
    if data.is_dir() {
        labelled_folder(data, classes)
    } else if data.exists() {
        labelled_manifest(data, classes)
    } else {
        Err(TrainError::data(
            data,
            "no such folder or manifest (.csv or .jsonl) file",
        ))
    }
}

/// Every row of a `.csv`/`.jsonl` manifest, whatever its `split`, labelled by the model's
/// `classes`; a label not among them, or a listed file that does not exist, is an error
/// naming the manifest and the line.
pub fn labelled_manifest(file: &Path, classes: &[String]) -> Result<Dataset, TrainError> {
    let m = Manifest::read(file)?;
    let mut items = Vec::with_capacity(m.rows.len());
    for row in &m.rows {
        let label = m.label_index(row, classes, "the model's classes")?;
        if m.missing(row).is_some() {
            return Err(m.missing_error(row, ""));
        }
        items.push(Item {
            image: ImageRef::File(row.path.clone()),
            label,
        });
    }
    if items.is_empty() {
        return Err(TrainError::data(file, "no rows: nothing to evaluate"));
    }
    to_evaluate(classes, items, Vec::new(), file)
}

/// Every image under `root/<class>/`, labelled by the model's `classes`; a folder whose name is
/// not one of them is an error naming it and the model's classes.
pub fn labelled_folder(root: &Path, classes: &[String]) -> Result<Dataset, TrainError> {
    if !root.is_dir() {
        return Err(TrainError::data(root, "not a directory"));
    }
    let (mut items, mut skipped) = (Vec::new(), Vec::new());
    for (name, files) in class_folders(root, &mut skipped)? {
        let label = classes.iter().position(|c| *c == name).ok_or_else(|| {
            TrainError::data(
                &root.join(&name),
                format!(
                    "class `{name}` is not one of the model's classes: {}",
                    classes.join(", ")
                ),
            )
        })?;
        items.extend(files.into_iter().map(|f| Item {
            image: ImageRef::File(f),
            label,
        }));
    }
    if items.is_empty() {
        return Err(TrainError::data(
            root,
            "no images: expected DATA/<class>/*.png|jpg with the model's class names",
        ));
    }
    to_evaluate(classes, items, skipped, root)
}

/// An evaluation-only dataset: every item in `val`, labelled by the model's `classes`, less
/// the files that do not decode (left out with a count, as training leaves them out).
fn to_evaluate(
    classes: &[String],
    items: Vec<Item>,
    skipped: Vec<(PathBuf, String)>,
    data: &Path,
) -> Result<Dataset, TrainError> {
    let mut ds = unscanned(classes, items);
    ds.skipped = skipped;
    ds.scan(BadImage::Skip, Scan::Decode)?;
    if ds.val.is_empty() {
        return Err(TrainError::data(
            data,
            format!("none of the images decode ({} left out)", ds.skipped.len()),
        ));
    }
    Ok(ds)
}

/// [`to_evaluate`]'s dataset before the scan.
fn unscanned(classes: &[String], items: Vec<Item>) -> Dataset {
    Dataset {
        class_names: classes.to_vec(),
        train: Vec::new(),
        val: items,
        memory: Arc::new(Vec::new()),
        skipped: Vec::new(),
        on_bad_image: BadImage::Skip,
        load_failures: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rekindle_model::{Arch, HeadConfig, PathMapper, Preprocess, ResNetConfig, map_with_paths};

    /// Every weight set to NaN, as a diverged run would leave them.
    struct Poison;

    impl PathMapper for Poison {
        fn map<const D: usize>(
            &mut self,
            _: &[String],
            p: burn::module::Param<burn::tensor::Tensor<D>>,
        ) -> burn::module::Param<burn::tensor::Tensor<D>> {
            p.map(|t| t.mul_scalar(f32::NAN))
        }
    }

    #[test]
    fn a_model_that_outputs_nan_is_refused_naming_the_image() {
        let device = burn::tensor::Device::flex();
        let net = ResNetConfig::new(Arch::Resnet18, HeadConfig::new(2)).init(&device);
        let net = map_with_paths(net, &mut Poison);
        let names = vec!["a".to_string(), "b".to_string()];
        let pre = Preprocess {
            resize: 16,
            crop: 16,
            ..Preprocess::imagenet()
        };
        let meta = ModelMetadata::new(net.config(), names.clone(), pre);
        let mut data = unscanned(
            &names,
            vec![Item {
                image: ImageRef::Memory(0),
                label: 1,
            }],
        );
        data.memory = Arc::new(vec![image::GrayImage::new(20, 20)]);
        let out = tempfile::tempdir().unwrap();
        let err = report_on(&net, &meta, &data, &data.val, Tta::None, out.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("NaN for 1 of 1") && err.contains("in-memory image 0"),
            "{err}"
        );
    }
}
