//! Writing a rekindle model as a PyTorch-layout safetensors file that
//! `torchvision.models.resnetNN(num_classes=N).load_state_dict(..., strict=True)` accepts.

use std::path::Path;

use rekindle_model::ResNet;
use rekindle_model::burn::store::{BurnToPyTorchAdapter, ModuleSnapshot};
use rekindle_model::burn::tensor::DType;
use rekindle_model::remap::{REKINDLE_TO_TORCHVISION, remap_key};
use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Error, format_error};

/// Writes `model` to `path` in torchvision's layout and names; returns the number of tensors.
/// Goes through a temporary file and a rename, so a failed export leaves no half file.
pub fn export_safetensors(model: &ResNet, path: &Path) -> Result<usize, Error> {
    let head = model.head.config();
    if head.hidden.is_some() {
        return Err(Error::Usage(
            "torchvision's ResNet has a single linear `fc`; this model's head has a hidden layer, \
             which no torchvision model can load"
                .into(),
        ));
    }
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for t in model.collect(None, Some(Box::new(BurnToPyTorchAdapter)), true) {
        let name = remap_key(REKINDLE_TO_TORCHVISION, &t.name);
        if t.dtype != DType::F32 {
            return Err(Error::Usage(format!(
                "`{name}` is {:?}; export writes float32 models",
                t.dtype
            )));
        }
        let shape = t.shape.to_vec();
        let bytes = t
            .to_bytes()
            .map_err(|e| format_error(path, format!("reading `{name}` back: {e}")))?
            .to_vec();
        // torchvision's BatchNorm2d also saves a step counter; strict loading wants it.
        if let Some(bn) = name.strip_suffix(".running_mean") {
            tensors.push((
                format!("{bn}.num_batches_tracked"),
                Dtype::I64,
                vec![],
                0i64.to_le_bytes().to_vec(),
            ));
        }
        tensors.push((name, Dtype::F32, shape, bytes));
    }
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| format_error(path, format!("`{name}`: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tmp = path.with_extension("safetensors.partial");
    safetensors::serialize_to_file(views, None, &tmp)
        .and_then(|_| std::fs::rename(&tmp, path).map_err(safetensors::SafeTensorError::IoError))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format_error(path, format!("cannot write: {e}"))
        })?;
    Ok(tensors.len())
}
