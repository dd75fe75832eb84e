//! Fashion-MNIST as Debian's `dataset-fashion-mnist` installs it: four gzipped IDX files
//! (images and labels of the train and t10k splits), read whole into memory.

use std::io::Read;
use std::path::Path;

use image::GrayImage;

use crate::error::TrainError;

/// Fashion-MNIST's classes, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Images in memory and their labels, as one split of the IDX files holds them.
pub type Split = (Vec<GrayImage>, Vec<u8>);

/// Both splits of the dataset under `root`: 60,000 training and 10,000 validation images.
pub fn load(root: &Path) -> Result<(Split, Split), TrainError> {
    Ok((idx_pair(root, "train")?, idx_pair(root, "t10k")?))
}

/// Reads `<prefix>-images-idx3-ubyte.gz` and `<prefix>-labels-idx1-ubyte.gz`.
fn idx_pair(root: &Path, prefix: &str) -> Result<(Vec<GrayImage>, Vec<u8>), TrainError> {
    let images_path = root.join(format!("{prefix}-images-idx3-ubyte.gz"));
    let labels_path = root.join(format!("{prefix}-labels-idx1-ubyte.gz"));
    let images = read_idx(&images_path, 3)?;
    let labels = read_idx(&labels_path, 1)?;
    let (dims, pixels) = images;
    let (ldims, labels) = labels;
    let [n, h, w] = [dims[0], dims[1], dims[2]];
    if ldims[0] != n {
        return Err(TrainError::data(
            &labels_path,
            format!("{} labels for {n} images", ldims[0]),
        ));
    }
    if let Some(bad) = labels
        .iter()
        .find(|l| **l as usize >= FASHION_MNIST_CLASSES.len())
    {
        return Err(TrainError::data(
            &labels_path,
            format!("label {bad} out of range 0..10"),
        ));
    }
    let images = pixels
        .chunks_exact(h * w)
        .map(|c| GrayImage::from_raw(w as u32, h as u32, c.to_vec()))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| TrainError::data(&images_path, "image size does not match its data"))?;
    Ok((images, labels))
}

/// Reads a gzipped IDX file of unsigned bytes with `rank` dimensions.
fn read_idx(path: &Path, rank: usize) -> Result<(Vec<usize>, Vec<u8>), TrainError> {
    let file = std::fs::File::open(path).map_err(|e| {
        TrainError::data(
            path,
            format!("{e} (install Debian's dataset-fashion-mnist, which `cargo xtask setup` does)"),
        )
    })?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .map_err(|e| TrainError::data(path, format!("not a readable .gz file: {e}")))?;
    let header = 4 + 4 * rank;
    if bytes.len() < header || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(TrainError::data(path, "not an IDX file of unsigned bytes"));
    }
    if bytes[3] as usize != rank {
        return Err(TrainError::data(
            path,
            format!("IDX rank {} where {rank} was expected", bytes[3]),
        ));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap_or([0; 4])) as usize
        })
        .collect();
    let len: usize = dims.iter().product();
    if bytes.len() != header + len {
        return Err(TrainError::data(
            path,
            format!(
                "truncated or padded: header says {len} bytes of data, file has {}",
                bytes.len() - header
            ),
        ));
    }
    Ok((dims, bytes.split_off(header)))
}
