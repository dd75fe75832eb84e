//! Reading a weights file into named tensors, whatever its container.

use std::io::Read;
use std::path::Path;

use rekindle_model::burn::store::burn_pack::{MAGIC_NUMBER, Tensor as PackTensor};
use rekindle_model::burn::store::{ModuleStore, PytorchStore, SafetensorsStore};

use crate::error::{Error, format_error};
use crate::limits::MAX_TENSOR_BYTES;

/// A weights container we recognise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// safetensors (torchvision/timm or Hugging Face names).
    Safetensors,
    /// `torch.save` output: zip (PyTorch >= 1.6), legacy pickle stream, or tar.
    Pytorch,
    /// An ONNX graph.
    Onnx,
    /// A Burn burnpack: a rekindle model file, loaded as it is (nothing to import).
    Burnpack,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Safetensors => "safetensors",
            Format::Pytorch => "PyTorch checkpoint",
            Format::Onnx => "ONNX",
            Format::Burnpack => "rekindle model file (burnpack)",
        })
    }
}

/// Tells the format from the file's first bytes (extensions lie; `.pt`, `.pth`, `.bin` and
/// `.ckpt` are all used for the same thing).
pub fn sniff(path: &Path) -> Result<Format, Error> {
    let mut head = [0u8; 512];
    let n = std::fs::File::open(path)
        .and_then(|mut f| read_up_to(&mut f, &mut head))
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let head = &head[..n];
    if n == 0 {
        return Err(format_error(path, "the file is empty"));
    }
    // burnpack writes its magic number little-endian.
    if head.starts_with(&MAGIC_NUMBER.to_le_bytes()) {
        return Ok(Format::Burnpack);
    }
    // safetensors: an 8-byte little-endian header length, then a JSON object.
    if n > 8 && head[8] == b'{' {
        let len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        if len > 1 && len < 100 << 20 {
            return Ok(Format::Safetensors);
        }
    }
    let is_zip = head.starts_with(b"PK\x03\x04");
    let is_pickle = head.first() == Some(&0x80); // pickle PROTO opcode: legacy torch.save
    let is_tar = n >= 262 && &head[257..262] == b"ustar";
    if is_zip || is_pickle || is_tar {
        return Ok(Format::Pytorch);
    }
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
    {
        return Ok(Format::Onnx);
    }
    Err(format_error(
        path,
        "not a weights file we read: expected a PyTorch checkpoint (.pth/.pt: zip, legacy or tar), \
         a .safetensors file, an .onnx graph or a rekindle model file (.bpk)",
    ))
}

fn read_up_to(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..])? {
            0 => break,
            k => filled += k,
        }
    }
    Ok(filled)
}

/// Every tensor of a safetensors or PyTorch file, with its key as written. Nothing is read
/// from disk yet: the bytes come when a tensor is applied.
pub fn read_tensors(path: &Path, format: Format) -> Result<Vec<PackTensor>, Error> {
    let tensors: Vec<PackTensor> = match format {
        Format::Safetensors => {
            let mut store = SafetensorsStore::from_file(path);
            store
                .get_all_tensors()
                .map(|t| t.values().cloned().collect())
                .map_err(|e| format_error(path, format!("unreadable safetensors file: {e}")))
        }
        Format::Pytorch => {
            // Keep the keys exactly as saved: we do our own mapping.
            let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
            store
                .get_all_tensors()
                .map(|t| t.values().cloned().collect())
                .map_err(|e| format_error(path, format!("unreadable PyTorch checkpoint: {e}")))
        }
        Format::Onnx => crate::onnx::read_onnx(path).map(|w| w.tensors),
        Format::Burnpack => Err(format_error(
            path,
            "already a rekindle model file: load it with rekindle_model::load_model",
        )),
    }?;
    if tensors.is_empty() {
        return Err(format_error(
            path,
            format!("a {format} file with no tensors in it"),
        ));
    }
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(u64::MAX);
    for t in &tensors {
        check_size(t, file_len)
            .map_err(|m| format_error(path, format!("tensor `{}`: {m}", t.name)))?;
    }
    Ok(tensors)
}

/// A tensor's declared shape, dtype and byte length agree, and fit in the file they are read
/// from: its bytes are read lazily, and a header declaring 2^40 elements must be refused here,
/// not met by an allocation of 4 TB.
fn check_size(t: &PackTensor, file_len: u64) -> Result<(), String> {
    let declared = t
        .shape
        .iter()
        .try_fold(t.dtype.size(), |acc, &d| acc.checked_mul(d))
        .filter(|&b| b <= MAX_TENSOR_BYTES)
        .ok_or_else(|| {
            format!(
                "shape {:?} of {:?} is more than the {} GiB a weight may hold",
                t.shape.as_slice(),
                t.dtype,
                MAX_TENSOR_BYTES >> 30
            )
        })?;
    if declared != t.byte_len() {
        return Err(format!(
            "shape {:?} of {:?} takes {declared} bytes, but {} are stored",
            t.shape.as_slice(),
            t.dtype,
            t.byte_len()
        ));
    }
    if declared as u64 > file_len {
        return Err(format!(
            "{declared} bytes declared, more than the file's {file_len} (truncated?)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_by_their_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        // A model file is recognised whatever its name; `BURN` in ASCII is not its magic.
        let mut pack = MAGIC_NUMBER.to_le_bytes().to_vec();
        pack.extend_from_slice(&[1, 0, 16, 0, 0, 0]);
        assert_eq!(sniff(&write("model.pth", &pack)).unwrap(), Format::Burnpack);
        assert!(sniff(&write("ascii.bpk", b"BURN\x01\x00")).is_err());
        assert_eq!(
            sniff(&write("w.bin", b"PK\x03\x04rest")).unwrap(),
            Format::Pytorch
        );
        let mut st = 2u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{}");
        assert_eq!(sniff(&write("w", &st)).unwrap(), Format::Safetensors);
        let err = sniff(&write("empty.pth", b"")).unwrap_err().to_string();
        assert!(err.contains("empty.pth") && err.contains("empty"), "{err}");
    }
}
