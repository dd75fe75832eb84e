//! The rekindle model file: one burnpack (`.bpk`) holding the weights, with [`ModelMetadata`]
//! as JSON under the metadata key [`METADATA_KEY`]. Train writes it; import and infer read it.

use std::path::Path;

use burn::store::burn_pack::Reader;
use burn::store::{ApplyError, ApplyResult, BurnpackStore, ModuleSnapshot};
use burn::tensor::Device;

use crate::{Error, ModelMetadata, ResNet};

/// Burnpack metadata key under which [`ModelMetadata`] is stored.
pub const METADATA_KEY: &str = "rekindle";

fn file_error(path: &Path, message: impl Into<String>) -> Error {
    Error::ModelFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Writes `model` and `metadata` to `path`, replacing any file there. The write goes to a
/// temporary file that is renamed into place, so a failed save leaves the old file intact.
pub fn save_model(path: &Path, model: &ResNet, metadata: &ModelMetadata) -> Result<(), Error> {
    metadata.validate()?;
    if metadata.model != model.config() {
        return Err(Error::InvalidConfig(format!(
            "metadata describes {:?} but the model is {:?}",
            metadata.model,
            model.config()
        )));
    }
    let json = serde_json::to_string(metadata).map_err(|e| file_error(path, e.to_string()))?;
    let mut store = BurnpackStore::from_file(path)
        .auto_extension(false)
        .overwrite(true)
        .metadata(METADATA_KEY, json);
    model
        .save_into(&mut store)
        .map_err(|e| file_error(path, format!("cannot write model file: {e}")))
}

/// Reads and validates the metadata of a model file without loading its weights.
pub fn read_metadata(path: &Path) -> Result<ModelMetadata, Error> {
    if !path.exists() {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let reader = Reader::from_file_exact(path)
        .map_err(|e| file_error(path, format!("not a rekindle model file (burnpack): {e}")))?;
    let json = reader.metadata().get(METADATA_KEY).ok_or_else(|| {
        file_error(
            path,
            format!("a burnpack file without rekindle metadata (no `{METADATA_KEY}` key)"),
        )
    })?;
    let metadata: ModelMetadata = serde_json::from_str(json)
        .map_err(|e| file_error(path, format!("unreadable rekindle metadata: {e}")))?;
    metadata
        .validate()
        .map_err(|e| file_error(path, e.to_string()))?;
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(u64::MAX);
    check_head_fits(&metadata, file_len).map_err(|m| file_error(path, m))?;
    Ok(metadata)
}

/// The head the metadata describes has its weights in the file: the model is built before its
/// weights are read, and a few bytes saying "a hidden layer of 10^9 units" must not allocate
/// terabytes first. Two bytes a parameter is the least any stored float takes.
fn check_head_fits(metadata: &ModelMetadata, file_len: u64) -> Result<(), String> {
    let head = metadata.head();
    let (f, c) = (
        metadata.arch().feature_dim() as u64,
        head.num_classes as u64,
    );
    let params = match head.hidden {
        Some(h) => {
            let h = h as u64;
            f.checked_mul(h)
                .and_then(|p| p.checked_add(h.checked_mul(c)?))
                .and_then(|p| p.checked_add(h + c))
        }
        None => f.checked_mul(c).and_then(|p| p.checked_add(c)),
    };
    match params.and_then(|p| p.checked_mul(2)) {
        Some(bytes) if bytes <= file_len => Ok(()),
        _ => Err(format!(
            "its metadata declares a head ({head:?}) with more weights than the file's \
             {file_len} bytes can hold (a damaged or hostile file)"
        )),
    }
}

/// Loads a model file onto `device`: rebuilds the module its metadata describes, then its weights.
pub fn load_model(path: &Path, device: &Device) -> Result<(ResNet, ModelMetadata), Error> {
    let metadata = read_metadata(path)?;
    let model = metadata.model.init(device);
    let model = apply_weights(model, path)?;
    Ok((model, metadata))
}

/// Loads the weights of a model file into an existing model of the same architecture and head.
pub fn load_weights(model: ResNet, path: &Path) -> Result<ResNet, Error> {
    let metadata = read_metadata(path)?;
    let (have, want) = (model.config(), &metadata.model);
    if have.arch != want.arch {
        return Err(file_error(
            path,
            format!(
                "holds {} weights, but the model is {}",
                want.arch, have.arch
            ),
        ));
    }
    if &have != want {
        return Err(file_error(
            path,
            format!(
                "holds a head {:?}, but the model's head is {:?}",
                want.head, have.head
            ),
        ));
    }
    apply_weights(model, path)
}

fn apply_weights(mut model: ResNet, path: &Path) -> Result<ResNet, Error> {
    // Validation and partial loading are checked here rather than by the store, so the error
    // can list every mismatched and missing tensor by name.
    let mut store = BurnpackStore::from_file(path)
        .auto_extension(false)
        .validate(false)
        .allow_partial(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| file_error(path, format!("cannot read weights: {e}")))?;
    check_applied(&result).map_err(|m| file_error(path, m))?;
    Ok(model)
}

/// Turns a store's load report into an error listing what did not fit, if anything: shape
/// and dtype mismatches, then tensors the model needs that the file lacks, each with a count.
pub fn check_applied(result: &ApplyResult) -> Result<(), String> {
    let mismatched: Vec<String> = result
        .errors
        .iter()
        .map(|e| match e {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => format!(
                "`{path}`: the model has shape {:?}, the file {:?}",
                expected.as_slice(),
                found.as_slice()
            ),
            other => other.to_string(),
        })
        .collect();
    let missing: Vec<String> = result
        .missing
        .iter()
        .map(|(path, _)| format!("`{path}`"))
        .collect();
    if mismatched.is_empty() && missing.is_empty() {
        return Ok(());
    }
    let mut report = String::from("weights do not fit the model");
    for (title, items) in [
        ("mismatched", &mismatched),
        ("missing from the file", &missing),
    ] {
        if items.is_empty() {
            continue;
        }
        report.push_str(&format!("\n  {} {title}:", items.len()));
        for item in items.iter().take(SHOWN) {
            report.push_str(&format!("\n    {item}"));
        }
        if items.len() > SHOWN {
            report.push_str(&format!("\n    ... and {} more", items.len() - SHOWN));
        }
    }
    Err(report)
}

/// How many offending tensors of each kind an error lists by name.
const SHOWN: usize = 12;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Arch, HeadConfig, Preprocess, ResNetConfig};
    use burn::tensor::{Distribution, Tensor};

    fn small(arch: Arch, classes: usize) -> (ResNet, ModelMetadata) {
        let device = Device::flex();
        let config = ResNetConfig::new(arch, HeadConfig::new(classes).with_hidden(Some(16)));
        let names = (0..classes).map(|i| format!("label {i}")).collect();
        let meta = ModelMetadata::new(config.clone(), names, Preprocess::imagenet());
        (config.init(&device), meta)
    }

    /// Every tensor of a module as (path, raw bytes).
    fn snapshot(model: &ResNet) -> Vec<(String, Vec<u8>)> {
        model
            .collect(None, None, false)
            .into_iter()
            .map(|t| (t.name.clone(), t.to_bytes().unwrap().to_vec()))
            .collect()
    }

    #[test]
    fn a_head_larger_than_its_file_is_refused_before_the_model_is_built() {
        let config = |hidden: Option<usize>, classes: usize| {
            let head = HeadConfig::new(classes).with_hidden(hidden);
            ModelMetadata::with_default_names(ResNetConfig::new(Arch::Resnet50, head))
        };
        // ResNet-50's head over 1000 classes: 2048 x 1000 + 1000 weights, 2 bytes each at least.
        let fits = config(None, 1000);
        assert!(check_head_fits(&fits, 2 * 2_049_000).is_ok());
        let err = check_head_fits(&fits, 2 * 2_049_000 - 1).unwrap_err();
        assert!(
            err.contains("more weights than the file's 4097999 bytes"),
            "{err}"
        );
        // A hidden layer of 10^12 units in a file of a megabyte; and sizes whose product
        // overflows are refused, not wrapped.
        assert!(check_head_fits(&config(Some(1_000_000_000_000), 2), 1 << 20).is_err());
        assert!(check_head_fits(&config(Some(usize::MAX / 2), 3), u64::MAX).is_err());
    }

    #[test]
    fn burnpack_round_trip_is_bit_identical() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bpk");
        let (model, meta) = small(Arch::Resnet18, 4);
        save_model(&path, &model, &meta).unwrap();
        let (loaded, meta2) = load_model(&path, &Device::flex()).unwrap();
        assert_eq!(meta2, meta);
        let (a, b) = (snapshot(&model), snapshot(&loaded));
        assert_eq!(a.len(), b.len());
        assert!(a.len() > 100, "running stats and weights are all there");
        for ((pa, da), (pb, db)) in a.iter().zip(&b) {
            assert_eq!(pa, pb);
            assert!(da == db, "{pa} differs after the round trip");
        }
        let x = Tensor::<4>::random([1, 3, 32, 32], Distribution::Default, &Device::flex());
        assert_eq!(
            model.forward(x.clone()).into_data(),
            loaded.forward(x).into_data(),
            "same bits in, same logits out"
        );
    }

    #[test]
    fn a_file_for_another_depth_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r34.bpk");
        let (model, meta) = small(Arch::Resnet34, 3);
        save_model(&path, &model, &meta).unwrap();
        let (r18, _) = small(Arch::Resnet18, 3);
        let err = load_weights(r18, &path).unwrap_err().to_string();
        assert!(
            err.contains("r34.bpk") && err.contains("resnet34") && err.contains("resnet18"),
            "{err}"
        );

        let (other_head, _) = small(Arch::Resnet34, 5);
        let err = load_weights(other_head, &path).unwrap_err().to_string();
        assert!(err.contains("head"), "{err}");
    }

    #[test]
    fn damaged_and_foreign_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.bpk");
        let (model, meta) = small(Arch::Resnet18, 2);
        save_model(&good, &model, &meta).unwrap();
        let bytes = std::fs::read(&good).unwrap();

        let truncated = dir.path().join("truncated.bpk");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_model(&truncated, &Device::flex())
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated.bpk"), "{err}");

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello, not a model").unwrap();
        let err = load_model(&text, &Device::flex()).unwrap_err().to_string();
        assert!(
            err.contains("notes.txt") && err.contains("not a rekindle model file"),
            "{err}"
        );

        let missing = dir.path().join("missing.bpk");
        let err = load_model(&missing, &Device::flex())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing.bpk") && err.contains("no such file"),
            "{err}"
        );

        // A burnpack that is not ours (no metadata).
        let plain = dir.path().join("plain.bpk");
        model
            .save_into(&mut BurnpackStore::from_file(&plain))
            .unwrap();
        let err = load_model(&plain, &Device::flex()).unwrap_err().to_string();
        assert!(err.contains("without rekindle metadata"), "{err}");
    }

    #[test]
    fn inconsistent_metadata_is_refused_on_save() {
        let dir = tempfile::tempdir().unwrap();
        let (model, mut meta) = small(Arch::Resnet18, 3);
        meta.class_names.pop();
        let err = save_model(&dir.path().join("m.bpk"), &model, &meta).unwrap_err();
        assert!(
            err.to_string()
                .contains("2 class names for a head with 3 classes"),
            "{err}"
        );
        let (_, other) = small(Arch::Resnet34, 3);
        assert!(save_model(&dir.path().join("m.bpk"), &model, &other).is_err());
    }
}
