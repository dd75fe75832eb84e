//! A saved model's top-1 accuracy on labelled images: how a search's winner is checked on a
//! test split that played no part in choosing it.

use std::path::Path;
use std::sync::Arc;

use burn::data::dataloader::DataLoader;
use rekindle_model::{Backend, load_model};

use crate::data::dataset::{Dataset, Item};
use crate::data::loader::EpochLoader;
use crate::error::TrainError;

/// The percentage of `items` (images of `data`) that the model file `model` classifies right,
/// with its own preprocessing, on `backend`.
pub fn accuracy(
    model: &Path,
    data: Arc<Dataset>,
    items: Vec<Item>,
    backend: Backend,
) -> Result<f64, TrainError> {
    if items.is_empty() {
        return Err(TrainError::data(model, "no images to evaluate on"));
    }
    let device = backend.device_at(0)?;
    let (net, meta) = load_model(model, &device)?;
    let total = items.len();
    let loader = EpochLoader::eval(data, items, 64, meta.preprocess, 0, device);
    let mut right = 0usize;
    for batch in loader.iter() {
        let batch = batch.map_err(|e| TrainError::data(model, e.to_string()))?;
        let predicted = net.forward(batch.images).argmax(1).flatten::<1>(0, 1);
        let hits: i64 = predicted.equal(batch.targets).int().sum().into_scalar();
        right += usize::try_from(hits).unwrap_or(0);
    }
    Ok(100.0 * right as f64 / total as f64)
}
