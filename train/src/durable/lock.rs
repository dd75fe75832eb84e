//! One training process per run directory: an OS file lock on `RUN/.lock`, held for the
//! whole run. The operating system releases it when the process ends however it ends (a
//! SIGKILL included), so a dead run never leaves a stale lock; the file itself stays, holding
//! the pid of the last process that took it, which a refused second process names.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};

use crate::durable::dir::RunDir;
use crate::error::TrainError;

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

/// The locks held on this machine at one moment, to ask of several run directories at once.
/// Found without touching any lock: taking one, even shared and for a moment, could refuse a run
/// starting at that instant. Linux lists every held `flock` in `/proc/locks` by device and
/// inode; elsewhere (or if that cannot be read) there is no snapshot.
pub struct HeldLocks {
    text: String,
}

impl HeldLocks {
    /// The locks held now.
    #[cfg(target_os = "linux")]
    pub fn read() -> Option<Self> {
        let text = std::fs::read_to_string("/proc/locks").ok()?;
        Some(Self { text })
    }

    /// The locks held now: unknown off Linux.
    #[cfg(not(target_os = "linux"))]
    pub fn read() -> Option<Self> {
        None
    }

    /// Whether a process held the lock of `dir` (false when it has no lock file).
    #[cfg(unix)]
    pub fn holds(&self, dir: &RunDir) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(dir.lock())
            .is_ok_and(|meta| locks_name(&self.text, meta.dev(), meta.ino()))
    }

    /// Whether a process held the lock of `dir`: unknown off Unix.
    #[cfg(not(unix))]
    pub fn holds(&self, _dir: &RunDir) -> bool {
        false
    }
}

/// Whether a process holds the lock of `dir` now (see [`HeldLocks`]); `None` where that cannot
/// be known.
pub fn held(dir: &RunDir) -> Option<bool> {
    HeldLocks::read().map(|locks| locks.holds(dir))
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
/// Whether `/proc/locks` text names a lock on the file with `dev` and `ino` (its fields:
/// `N: FLOCK ADVISORY WRITE PID MAJOR:MINOR:INODE START END`, the device numbers in hex).
fn locks_name(locks: &str, dev: u64, ino: u64) -> bool {
    // Linux's dev_t: the major in bits 8-19 and 32-43, the minor in bits 0-7 and 20-39.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let want = |field: &str| {
        let mut parts = field.split(':');
        let (Some(ma), Some(mi), Some(i)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        u64::from_str_radix(ma, 16) == Ok(major)
            && u64::from_str_radix(mi, 16) == Ok(minor)
            && i.parse::<u64>() == Ok(ino)
    };
    locks
        .lines()
        .filter(|l| !l.contains("->")) // a waiter, not a holder
        .any(|l| l.split_whitespace().nth(5).is_some_and(want))
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

    #[test]
    fn a_held_lock_is_seen_without_taking_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::new(tmp.path().join("run"));
        let lock = RunLock::acquire(&dir).unwrap();
        assert_eq!(held(&dir), Some(true));
        drop(lock);
        assert_eq!(held(&dir), Some(false));
    }

    #[test]
    fn proc_locks_lines_match_on_device_and_inode_only() {
        let text = "1: FLOCK  ADVISORY  WRITE 4242 fd:01:123456 0 EOF\n\
                    2: POSIX  ADVISORY  READ 77 00:2a:99 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 78 00:2a:555 0 EOF\n";
        let dev = |major: u64, minor: u64| (major << 8) | minor;
        assert!(locks_name(text, dev(0xfd, 1), 123456));
        assert!(!locks_name(text, dev(0xfd, 2), 123456));
        assert!(!locks_name(text, dev(0xfd, 1), 12345));
        assert!(locks_name(text, dev(0, 0x2a), 99));
        assert!(
            !locks_name(text, dev(0, 0x2a), 555),
            "a waiter holds nothing"
        );
    }
}
