//! Files written whole or not at all: the bytes go to a temporary file beside the target,
//! reach the disk (fsync), and only then take the target's name (rename, atomic on POSIX).
//! A process killed part-way leaves the old file (or none) and a `*.tmp` that the next
//! process holding the run's lock removes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Suffix of every temporary file this crate (and burnpack) writes beside a target.
pub const TMP: &str = ".tmp";

/// Writes `bytes` to `path` atomically. `midway` runs after the first half is written (the
/// fault hook's "killed mid-write" point); on an error the temporary file is removed.
pub fn write_with(path: &Path, bytes: &[u8], midway: impl FnOnce()) -> std::io::Result<()> {
    let tmp = temporary(path);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        let (first, rest) = bytes.split_at(bytes.len() / 2);
        file.write_all(first)?;
        midway();
        file.write_all(rest)?;
        file.sync_all()?;
        drop(file);
        commit(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_with(path, bytes, || {})
}

/// Gives the complete file `from` the name `to` (replacing it), and makes the rename durable.
pub fn commit(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)?;
    sync_dir(to)
}

/// Removes the temporary files a killed process left in `dir` (not recursive); only safe
/// while holding the run's lock, when no live process is writing them. Returns their names.
pub fn remove_leftovers(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(TMP))
        .filter(|p| std::fs::remove_file(p).is_ok())
        .collect()
}

/// The temporary name beside `path`, unique to this process.
fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}{TMP}", std::process::id()));
    path.with_file_name(name)
}

/// Flushes the directory holding `path`, so that a rename into it survives a power cut.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        // Directories cannot be opened for syncing on every platform; Unix is what matters.
        Some(dir) if cfg!(unix) => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.txt");
        std::fs::write(&path, b"old contents").unwrap();
        let mut seen = None;
        write_with(&path, b"new!", || {
            // Half-way, the target still holds the old bytes in full.
            seen = Some(std::fs::read(&path).unwrap());
        })
        .unwrap();
        assert_eq!(seen.as_deref(), Some(&b"old contents"[..]));
        assert_eq!(std::fs::read(&path).unwrap(), b"new!");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn leftovers_are_the_tmp_files_only() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("model-2.bpk.123-0.tmp"), b"x").unwrap();
        std::fs::write(tmp.path().join("model-1.bpk"), b"x").unwrap();
        let gone = remove_leftovers(tmp.path());
        assert_eq!(gone, [tmp.path().join("model-2.bpk.123-0.tmp")]);
        assert!(tmp.path().join("model-1.bpk").exists());
        assert!(remove_leftovers(&tmp.path().join("none")).is_empty());
    }
}
