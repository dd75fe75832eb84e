//! One training process per run directory: an OS file lock on `RUN/.lock`, held for the
//! whole run. The operating system releases it when the process ends however it ends (a
//! SIGKILL included), so a dead run never leaves a stale lock; the file itself stays, holding
//! the pid of the last process that took it, which a refused second process names.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};

use crate::error::TrainError;
use crate::run::dir::RunDir;

/// The held lock of a run directory; dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock of `dir` (creating the directory), or names the process holding it.
    pub fn acquire(dir: &RunDir) -> Result<Self, TrainError> {
        let path = dir.lock();
        std::fs::create_dir_all(dir.path()).map_err(|e| TrainError::io(dir.path(), e))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(TrainError::Locked {
                    path: dir.path().to_path_buf(),
                    holder: holder(&mut file),
                });
            }
            Err(TryLockError::Error(e)) => return Err(TrainError::io(&path, e)),
        }
        // Ours now: record who holds it, for the message a second process prints.
        let write = |f: &mut File| {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{}", std::process::id())?;
            f.sync_all()
        };
        write(&mut file).map_err(|e| TrainError::io(&path, e))?;
        Ok(Self { _file: file })
    }
}

/// The pid the lock file names, when it names one.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_directory_and_pid_until_the_first_lets_go() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::new(tmp.path().join("run"));
        let first = RunLock::acquire(&dir).unwrap();
        // A second open file description conflicts as a second process would.
        let err = RunLock::acquire(&dir).unwrap_err();
        let TrainError::Locked { path, holder } = &err else {
            panic!("{err}");
        };
        assert_eq!(
            (path, *holder),
            (&dir.path().to_path_buf(), Some(std::process::id()))
        );
        let text = err.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        let _again = RunLock::acquire(&dir).unwrap();
    }
}
