//! A loaded model that predicts: preprocessing (the model crate's evaluation transform, the
//! same code training validates with), batched forward passes, softmax and top-k.

use std::path::{Path, PathBuf};

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use image::DynamicImage;
use rayon::prelude::*;
use rekindle_model::preprocess::{batch_tensor, eval_transform};
use rekindle_model::{FoldedResNet, ModelMetadata, ResNet};
use serde::Serialize;

use crate::InferError;
use crate::decode::{Limits, decode};

/// One class and its probability.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Label {
    /// Class name from the model's metadata.
    pub class: String,
    /// Index of the class in the model's output.
    pub index: usize,
    /// Softmax probability.
    pub probability: f32,
}

/// The `k` most probable classes of one image, most probable first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// Top-k labels, by decreasing probability (ties by class index).
    pub top: Vec<Label>,
}

impl Prediction {
    /// The most probable class.
    pub fn best(&self) -> &Label {
        &self.top[0]
    }
}

/// The indices of the `k` largest of `values`, largest first; ties keep index order (a stable
/// sort), so results are deterministic.
pub fn top_indices(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    order.truncate(k);
    order
}

/// One image's outputs: a row of logits and its softmax.
#[derive(Clone, Debug, PartialEq)]
pub struct Outputs {
    /// Raw scores, one per class.
    pub logits: Vec<f32>,
    /// Their softmax.
    pub probabilities: Vec<f32>,
}

/// The network as it runs: as trained, or with BatchNorm folded into the convolutions.
// One per classifier: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Net {
    Plain(ResNet),
    Folded(FoldedResNet),
}

/// A model ready to predict: network, metadata and device.
pub struct Classifier {
    net: Net,
    meta: ModelMetadata,
    device: Device,
    limits: Limits,
}

impl Classifier {
    /// Loads a rekindle model file (from training's export or the importer) onto `device`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self, InferError> {
        let (net, meta) = rekindle_model::load_model(path.as_ref(), device)?;
        Ok(Self::new(net, meta, device))
    }

    /// Wraps a network already in memory (e.g. just trained) with its metadata.
    pub fn new(net: ResNet, meta: ModelMetadata, device: &Device) -> Self {
        Self {
            net: Net::Plain(net),
            meta,
            device: device.clone(),
            limits: Limits::default(),
        }
    }

    /// The same classifier with other input limits for encoded images.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The same classifier with every BatchNorm folded into its convolution: the same outputs
    /// (within 1e-4) with fewer passes over the activations.
    pub fn fold_batchnorm(mut self) -> Self {
        if let Net::Plain(net) = &self.net {
            self.net = Net::Folded(net.fold_batchnorm());
        }
        self
    }

    /// Whether BatchNorm is folded into the convolutions.
    pub fn is_folded(&self) -> bool {
        matches!(self.net, Net::Folded(_))
    }

    /// Architecture, class names and preprocessing.
    pub fn metadata(&self) -> &ModelMetadata {
        &self.meta
    }

    /// The input limits for encoded images.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The device the network runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.meta.class_names.len()
    }

    /// The evaluation transform: CHW floats of side `crop`, normalised with the model's mean/std.
    pub fn preprocess(&self, image: &DynamicImage) -> Vec<f32> {
        eval_transform(image, &self.meta.preprocess)
    }

    /// Raw logits for preprocessed images (CHW floats back to back), `[n, classes]`.
    pub fn logits(&self, pixels: Vec<f32>, n: usize) -> Tensor<2> {
        let x = batch_tensor(pixels, n, self.meta.preprocess.crop, &self.device);
        match &self.net {
            Net::Plain(net) => net.forward(x),
            Net::Folded(net) => net.forward(x),
        }
    }

    /// Top-k predictions for `n` preprocessed images in one forward pass.
    pub fn predict_pixels(&self, pixels: Vec<f32>, n: usize, top_k: usize) -> Vec<Prediction> {
        self.outputs(pixels, n)
            .into_iter()
            .map(|o| self.predict_row(&o, top_k))
            .collect()
    }

    /// Logits and probabilities of `n` preprocessed images in one forward pass, one row each.
    pub fn outputs(&self, pixels: Vec<f32>, n: usize) -> Vec<Outputs> {
        if n == 0 {
            return Vec::new();
        }
        let logits = self.logits(pixels, n);
        let read = |t: Tensor<2>| {
            t.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap_or_default()
        };
        let probabilities = read(softmax(logits.clone(), 1));
        let logits = read(logits);
        let c = self.num_classes();
        logits
            .chunks_exact(c)
            .zip(probabilities.chunks_exact(c))
            .map(|(l, p)| Outputs {
                logits: l.to_vec(),
                probabilities: p.to_vec(),
            })
            .collect()
    }

    /// The top-k prediction of one image's outputs.
    pub fn predict_row(&self, outputs: &Outputs, top_k: usize) -> Prediction {
        Prediction {
            top: self.top_k(&outputs.probabilities, top_k),
        }
    }

    /// Top-k predictions for decoded images, batched.
    pub fn predict_images(&self, images: &[DynamicImage], top_k: usize) -> Vec<Prediction> {
        let pixels: Vec<f32> = images
            .par_iter()
            .map(|img| self.preprocess(img))
            .collect::<Vec<_>>()
            .concat();
        self.predict_pixels(pixels, images.len(), top_k)
    }

    /// Top-k prediction for one encoded image (PNG or JPEG bytes), within the limits.
    pub fn predict_bytes(&self, bytes: &[u8], top_k: usize) -> Result<Prediction, InferError> {
        let img = decode(bytes, "input", &self.limits)?;
        Ok(self.predict_images(&[img], top_k).remove(0))
    }

    /// Top-k predictions for image files, in one batch; an unreadable file is an error in its
    /// slot naming the path, and the others are still predicted.
    pub fn predict_paths(
        &self,
        paths: &[PathBuf],
        top_k: usize,
    ) -> Vec<Result<Prediction, InferError>> {
        let decoded: Vec<Result<Vec<f32>, InferError>> = paths
            .par_iter()
            .map(|p| self.load_image(p).map(|img| self.preprocess(&img)))
            .collect();
        let ok: Vec<f32> = decoded
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .flatten()
            .copied()
            .collect();
        let n_ok = decoded.iter().filter(|r| r.is_ok()).count();
        let mut predictions = self.predict_pixels(ok, n_ok, top_k).into_iter();
        decoded
            .into_iter()
            .map(|r| {
                r.map(|_| {
                    predictions
                        .next()
                        .expect("one prediction per decoded image")
                })
            })
            .collect()
    }

    /// Reads and decodes one file within the limits.
    pub fn load_image(&self, path: &Path) -> Result<DynamicImage, InferError> {
        let io = |source| InferError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Sized before it is read: a 50 GB file is refused, not loaded into memory first.
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > self.limits.max_bytes as u64 {
            return Err(InferError::TooLarge {
                source_name: path.display().to_string(),
                message: format!(
                    "{len} bytes is over the limit of {} bytes",
                    self.limits.max_bytes
                ),
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        decode(&bytes, &path.display().to_string(), &self.limits)
    }

    /// The `k` most probable classes of one probability row.
    fn top_k(&self, probs: &[f32], k: usize) -> Vec<Label> {
        top_indices(probs, k.clamp(1, probs.len()))
            .into_iter()
            .map(|i| Label {
                class: self.meta.class_names[i].clone(),
                index: i,
                probability: probs[i],
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::{Rgb, RgbImage};
    use rekindle_model::{Arch, HeadConfig, Preprocess, ResNetConfig};

    /// A random ResNet-18 for 24x24 inputs, 5 named classes.
    pub(crate) fn small() -> Classifier {
        let device = Device::flex();
        device.seed(5);
        let config = ResNetConfig::new(Arch::Resnet18, HeadConfig::new(5));
        let net = config.init(&device);
        let pre = Preprocess {
            resize: 28,
            crop: 24,
            ..Preprocess::imagenet()
        };
        let names = ["ant", "bee", "cat", "dog", "eel"]
            .map(String::from)
            .to_vec();
        Classifier::new(net, ModelMetadata::new(config, names, pre), &device)
    }

    fn image(i: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(30 + i, 26 + 2 * i, |x, y| {
            Rgb([
                (x * 7 + i * 40) as u8,
                (y * 11) as u8,
                ((x ^ y) * 5 + i * 9) as u8,
            ])
        }))
    }

    #[test]
    fn top_k_is_the_sorted_softmax_of_the_forward_pass() {
        let c = small();
        let images: Vec<_> = (0..4).map(image).collect();
        let got = c.predict_images(&images, 3);
        for (img, pred) in images.iter().zip(&got) {
            // the forward pass by hand: transform, logits, softmax
            let logits = c
                .logits(c.preprocess(img), 1)
                .into_data()
                .try_into_vec::<f32>()
                .unwrap();
            let max = logits.iter().cloned().fold(f32::MIN, f32::max);
            let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
            let sum: f32 = exp.iter().sum();
            let mut want: Vec<(usize, f32)> = exp.iter().map(|e| e / sum).enumerate().collect();
            want.sort_by(|a, b| b.1.total_cmp(&a.1));
            assert_eq!(pred.top.len(), 3);
            for (l, (i, p)) in pred.top.iter().zip(&want) {
                assert_eq!(l.index, *i);
                assert_eq!(l.class, c.metadata().class_names[*i]);
                assert!((l.probability - p).abs() < 1e-5, "{l:?} vs {p}");
            }
        }
    }

    #[test]
    fn a_file_over_the_byte_limit_is_refused_by_its_size() {
        let c = small().with_limits(Limits {
            max_bytes: 1000,
            ..Limits::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.png");
        // Not an image at all: only the size is looked at.
        std::fs::write(&path, vec![0u8; 1001]).unwrap();
        let e = c.load_image(&path).unwrap_err();
        assert!(matches!(e, InferError::TooLarge { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("1001 bytes is over the limit of 1000"),
            "{e}"
        );
    }

    #[test]
    fn batched_equals_one_by_one_and_k_is_clamped() {
        let c = small();
        let images: Vec<_> = (0..5).map(image).collect();
        let batch = c.predict_images(&images, 9);
        for (img, b) in images.iter().zip(&batch) {
            let one = c.predict_images(std::slice::from_ref(img), 9).remove(0);
            assert_eq!(b.top.len(), 5, "k is clamped to the class count");
            for (x, y) in one.top.iter().zip(&b.top) {
                assert_eq!(x.index, y.index);
                assert!((x.probability - y.probability).abs() < 1e-5);
            }
            let total: f32 = b.top.iter().map(|l| l.probability).sum();
            assert!((total - 1.0).abs() < 1e-4);
        }
        assert_eq!(c.predict_images(&images[..1], 0)[0].top.len(), 1);
    }

    #[test]
    fn folding_batchnorm_keeps_the_predictions() {
        let images: Vec<_> = (0..3).map(image).collect();
        // One network for both: other tests draw from the shared device RNG concurrently.
        let plain = small();
        let Net::Plain(net) = &plain.net else {
            unreachable!()
        };
        let c = Classifier::new(net.clone(), plain.meta.clone(), &plain.device).fold_batchnorm();
        let plain = plain.predict_images(&images, 5);
        assert!(c.is_folded());
        for (a, b) in plain.iter().zip(c.predict_images(&images, 5)) {
            for (x, y) in a.top.iter().zip(&b.top) {
                assert!(
                    (x.probability - y.probability).abs() < 1e-4,
                    "{x:?} vs {y:?}"
                );
            }
            assert_eq!(a.best().index, b.best().index);
        }
    }

    #[test]
    fn paths_predict_around_an_unreadable_file() {
        let c = small();
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("a.png");
        image(1).save(&good).unwrap();
        let bad = dir.path().join("b.png");
        std::fs::write(&bad, b"not a png").unwrap();
        let missing = dir.path().join("c.jpg");
        let r = c.predict_paths(&[good.clone(), bad.clone(), missing.clone()], 2);
        let by_hand = c.predict_images(&[image::open(&good).unwrap()], 2);
        assert_eq!(r[0].as_ref().unwrap(), &by_hand[0]);
        let e1 = r[1].as_ref().unwrap_err().to_string();
        assert!(e1.contains("b.png"), "{e1}");
        let e2 = r[2].as_ref().unwrap_err().to_string();
        assert!(e2.contains("c.jpg"), "{e2}");
    }
}
