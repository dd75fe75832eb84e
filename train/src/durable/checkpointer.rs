//! The learner's checkpointers: Burn's file layout (`checkpoint/{model,optim,scheduler}-N.bpk`,
//! the same bytes Burn's `FileCheckpointer` writes), each file written atomically, and the
//! epoch's checksums written once all three files are on disk. Burn runs the three on three
//! threads; whichever finishes an epoch last writes its checksums.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use burn::train::checkpoint::{Checkpoint as Record, Checkpointer, CheckpointerError};

use crate::durable::checksum::{self, Sum};
use crate::durable::dir::{Checkpoint, RunDir};
use crate::durable::{atomic, fault};

/// The sums of the files written so far, per epoch, shared by the three checkpointers.
#[derive(Debug, Default)]
struct Ledger {
    pending: Mutex<HashMap<usize, Vec<Sum>>>,
}

/// Writes one kind of checkpoint file of a run.
#[derive(Debug)]
pub struct SafeCheckpointer {
    dir: RunDir,
    kind: Checkpoint,
    ledger: Arc<Ledger>,
}

/// The model, optimiser and scheduler checkpointers of `dir`, sharing one ledger.
pub fn checkpointers(dir: &RunDir) -> [SafeCheckpointer; 3] {
    let ledger = Arc::new(Ledger::default());
    Checkpoint::ALL.map(|kind| SafeCheckpointer {
        dir: dir.clone(),
        kind,
        ledger: ledger.clone(),
    })
}

impl<R: Record> Checkpointer<R> for SafeCheckpointer {
    fn save(&self, epoch: usize, record: R) -> Result<(), CheckpointerError> {
        let path = self.dir.checkpoint(self.kind, epoch);
        // Checksums of an earlier write of this epoch (a resumed run trains it again) must not
        // vouch for files about to be replaced.
        remove(&self.dir.checksums(epoch))?;
        let bytes = record
            .checkpoint_into_bytes()
            .map_err(CheckpointerError::Record)?;
        std::fs::create_dir_all(self.dir.checkpoints()).map_err(|e| io(&path, e))?;
        let midway = || {
            if self.kind == Checkpoint::Model {
                fault::point("checkpoint", Some(epoch));
            }
        };
        atomic::write_with(&path, &bytes, midway).map_err(|e| io(&path, e))?;
        self.finished(epoch, Sum::of(&path, &bytes))
    }

    fn restore(&self, epoch: usize) -> Result<R, CheckpointerError> {
        R::load(self.dir.checkpoint(self.kind, epoch))
    }

    fn delete(&self, epoch: usize) -> Result<(), CheckpointerError> {
        // The checksums first: an epoch losing its files is never one that verifies.
        remove(&self.dir.checksums(epoch))?;
        remove(&self.dir.checkpoint(self.kind, epoch))
    }
}

impl SafeCheckpointer {
    /// Records one file of `epoch` as written; the last of the three writes the checksums.
    fn finished(&self, epoch: usize, sum: Sum) -> Result<(), CheckpointerError> {
        let mut pending = self
            .ledger
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let sums = pending.entry(epoch).or_default();
        sums.retain(|s| s.file != sum.file);
        sums.push(sum);
        if sums.len() < Checkpoint::ALL.len() {
            return Ok(());
        }
        let sums = pending.remove(&epoch).unwrap_or_default();
        let path = self.dir.checksums(epoch);
        checksum::write(&self.dir, epoch, &sums).map_err(|e| io(&path, e))
    }
}

/// Removes `path` if it is there.
fn remove(path: &Path) -> Result<(), CheckpointerError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path, e)),
        _ => Ok(()),
    }
}

/// An I/O error naming its file, as Burn reports it.
fn io(path: &Path, e: std::io::Error) -> CheckpointerError {
    CheckpointerError::IOError(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", path.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::checksum::verify;
    use burn::lr_scheduler::LrSchedulerRecord;

    #[test]
    fn the_checksums_come_with_the_third_file_and_go_with_the_first_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::new(tmp.path());
        let [model, optim, scheduler] = checkpointers(&dir);
        let save = |c: &SafeCheckpointer| {
            let record = LrSchedulerRecord::new().with_scalar("step", 7u64);
            Checkpointer::<LrSchedulerRecord>::save(c, 1, record).unwrap()
        };
        save(&model);
        save(&optim);
        assert!(!dir.checksums(1).exists());
        save(&scheduler);
        assert_eq!(verify(&dir, 1), Ok(()));
        let back: LrSchedulerRecord = scheduler.restore(1).unwrap();
        assert_eq!(back.scalar::<u64>("step"), Some(7));
        Checkpointer::<LrSchedulerRecord>::delete(&optim, 1).unwrap();
        assert!(!dir.checksums(1).exists());
        assert!(!dir.checkpoint(Checkpoint::Optim, 1).exists());
        assert!(dir.checkpoint(Checkpoint::Model, 1).exists());
    }
}
