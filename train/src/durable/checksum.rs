//! The checksums of an epoch's checkpoint: `checkpoint/checksums-N.txt`, one line per file
//! (`NAME LENGTH CRC32`), written atomically once all three files of epoch N are on disk. An
//! epoch is resumable when its checksums file is there and every file matches it: a missing
//! file, a wrong length (truncated) or a wrong CRC-32 (corrupted) rules the epoch out.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::durable::atomic;
use crate::durable::dir::{Checkpoint, RunDir};

/// One checkpoint file's length and CRC-32.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sum {
    /// The file's name in `checkpoint/`.
    pub file: String,
    /// Its length in bytes.
    pub len: u64,
    /// The CRC-32 (IEEE) of its bytes.
    pub crc: u32,
}

impl Sum {
    /// The sum of `bytes`, to be written as `file`.
    pub fn of(file: &Path, bytes: &[u8]) -> Self {
        Self {
            file: name(file),
            len: bytes.len() as u64,
            crc: crc32fast::hash(bytes),
        }
    }
}

/// Why an epoch's checkpoint cannot be used; names the file at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bad {
    /// No checksums file: the process died while the epoch was being written.
    Unfinished(PathBuf),
    /// The checksums file does not parse.
    Unreadable(PathBuf, String),
    /// A checkpoint file is missing or cannot be read.
    Missing(PathBuf),
    /// A checkpoint file has another length than was written.
    Truncated(PathBuf, u64, u64),
    /// A checkpoint file has the length written but other bytes.
    Corrupted(PathBuf),
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unfinished(p) => write!(f, "{} is missing (a write cut short)", p.display()),
            Self::Unreadable(p, why) => write!(f, "{}: {why}", p.display()),
            Self::Missing(p) => write!(f, "{} is missing or unreadable", p.display()),
            Self::Truncated(p, want, got) => {
                write!(f, "{} has {got} bytes, {want} were written", p.display())
            }
            Self::Corrupted(p) => write!(f, "{} is corrupted (CRC-32 mismatch)", p.display()),
        }
    }
}

/// Writes the checksums of `epoch` atomically.
pub fn write(dir: &RunDir, epoch: usize, sums: &[Sum]) -> std::io::Result<()> {
    let text: String = sums
        .iter()
        .map(|s| format!("{} {} {:08x}\n", s.file, s.len, s.crc))
        .collect();
    atomic::write(&dir.checksums(epoch), text.as_bytes())
}

/// Checks every checkpoint file of `epoch` against its checksums.
pub fn verify(dir: &RunDir, epoch: usize) -> Result<(), Bad> {
    let path = dir.checksums(epoch);
    let text = std::fs::read_to_string(&path).map_err(|_| Bad::Unfinished(path.clone()))?;
    let sums = parse(&text).map_err(|why| Bad::Unreadable(path.clone(), why))?;
    for kind in Checkpoint::ALL {
        let file = dir.checkpoint(kind, epoch);
        let sum = sums
            .iter()
            .find(|s| s.file == name(&file))
            .ok_or_else(|| Bad::Unreadable(path.clone(), format!("no line for {}", name(&file))))?;
        check(&file, sum)?;
    }
    Ok(())
}

/// Whether any epoch of the run has checksums (runs from before they existed have none).
pub fn any(dir: &RunDir) -> bool {
    std::fs::read_dir(dir.checkpoints()).is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("checksums-") && name.ends_with(".txt")
        })
    })
}

/// The lines of a checksums file.
fn parse(text: &str) -> Result<Vec<Sum>, String> {
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [file, len, crc] = f[..] else {
                return Err(format!("bad line {line:?}"));
            };
            Ok(Sum {
                file: file.to_string(),
                len: len.parse().map_err(|_| format!("bad length in {line:?}"))?,
                crc: u32::from_str_radix(crc, 16).map_err(|_| format!("bad CRC in {line:?}"))?,
            })
        })
        .collect()
}

/// Compares one file with its sum, reading it in chunks (checkpoints are large).
fn check(file: &Path, sum: &Sum) -> Result<(), Bad> {
    let missing = || Bad::Missing(file.to_path_buf());
    let len = std::fs::metadata(file).map_err(|_| missing())?.len();
    if len != sum.len {
        return Err(Bad::Truncated(file.to_path_buf(), sum.len, len));
    }
    let mut reader = std::fs::File::open(file).map_err(|_| missing())?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(|_| missing())?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    if hasher.finalize() != sum.crc {
        return Err(Bad::Corrupted(file.to_path_buf()));
    }
    Ok(())
}

/// A file's name, as the checksums file lists it.
fn name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Epoch 1's three files with their checksums.
    fn epoch_one(dir: &RunDir) {
        std::fs::create_dir_all(dir.checkpoints()).unwrap();
        let sums: Vec<Sum> = Checkpoint::ALL
            .iter()
            .map(|&k| {
                let path = dir.checkpoint(k, 1);
                let bytes = format!("{} weights", k.stem()).into_bytes();
                std::fs::write(&path, &bytes).unwrap();
                Sum::of(&path, &bytes)
            })
            .collect();
        write(dir, 1, &sums).unwrap();
    }

    #[test]
    fn a_flipped_byte_a_cut_file_and_a_missing_one_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::new(tmp.path());
        assert!(!any(&dir));
        assert_eq!(verify(&dir, 1), Err(Bad::Unfinished(dir.checksums(1))));
        epoch_one(&dir);
        assert!(any(&dir));
        assert_eq!(verify(&dir, 1), Ok(()));

        let optim = dir.checkpoint(Checkpoint::Optim, 1);
        let mut bytes = std::fs::read(&optim).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&optim, &bytes).unwrap();
        assert_eq!(verify(&dir, 1), Err(Bad::Corrupted(optim.clone())));
        let err = verify(&dir, 1).unwrap_err().to_string();
        assert!(err.contains("optim-1.bpk"), "{err}");

        epoch_one(&dir);
        let model = dir.checkpoint(Checkpoint::Model, 1);
        std::fs::write(&model, b"model").unwrap();
        assert_eq!(verify(&dir, 1), Err(Bad::Truncated(model.clone(), 13, 5)));
        std::fs::remove_file(&model).unwrap();
        assert_eq!(verify(&dir, 1), Err(Bad::Missing(model)));

        std::fs::write(dir.checksums(1), "model-1.bpk 12\n").unwrap();
        assert!(matches!(verify(&dir, 1), Err(Bad::Unreadable(..))));
    }
}
