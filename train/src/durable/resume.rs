//! Which checkpoint a resumed run continues from: the newest epoch whose three files all
//! match their checksums. Newer epochs that do not (a write cut short, a truncated or
//! corrupted file) are passed over with a warning naming the file; the run trains them again
//! and overwrites them. A run from before checksums existed falls back to "all three files
//! present".

use std::collections::BTreeSet;

use crate::durable::checksum::{self, Bad};
use crate::durable::dir::{Checkpoint, RunDir};

/// The epoch to resume after, or `None` when no checkpoint is usable. Warns (on stderr) about
/// every newer epoch passed over.
pub fn pick(dir: &RunDir) -> Option<usize> {
    let checksummed = checksum::any(dir);
    let mut passed = Vec::new();
    for epoch in on_disk(dir).into_iter().rev() {
        match usable(dir, epoch, checksummed) {
            Ok(()) => {
                warn(&passed, Some(epoch));
                return Some(epoch);
            }
            Err(bad) => passed.push((epoch, bad)),
        }
    }
    warn(&passed, None);
    None
}

/// Whether `epoch`'s checkpoint can be loaded: it verifies against its checksums or, in a run
/// without any (`checksummed` false), all three files are there.
pub fn usable(dir: &RunDir, epoch: usize, checksummed: bool) -> Result<(), Bad> {
    if checksummed {
        return checksum::verify(dir, epoch);
    }
    match Checkpoint::ALL
        .iter()
        .map(|&k| dir.checkpoint(k, epoch))
        .find(|p| !p.exists())
    {
        Some(missing) => Err(Bad::Missing(missing)),
        None => Ok(()),
    }
}

/// Every epoch with a checkpoint file or checksums in the run, in order.
pub fn on_disk(dir: &RunDir) -> Vec<usize> {
    let Ok(entries) = std::fs::read_dir(dir.checkpoints()) else {
        return Vec::new();
    };
    let epochs: BTreeSet<usize> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            let (stem, rest) = name.split_once('-')?;
            let number = match stem {
                "checksums" => rest.strip_suffix(".txt")?,
                _ if Checkpoint::ALL.iter().any(|k| k.stem() == stem) => {
                    rest.strip_suffix(".bpk")?
                }
                _ => return None,
            };
            number.parse().ok()
        })
        .collect();
    epochs.into_iter().collect()
}

/// Tells a person which newer epochs were passed over, why, and what the run uses instead.
fn warn(passed: &[(usize, Bad)], chosen: Option<usize>) {
    for (epoch, bad) in passed {
        eprintln!("warning: the checkpoint of epoch {epoch} is unusable: {bad}");
    }
    match (passed.is_empty(), chosen) {
        (false, Some(e)) => eprintln!("warning: using the checkpoint of epoch {e} instead"),
        (false, None) => eprintln!("warning: no usable checkpoint is left"),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::checksum::Sum;

    /// Writes epoch `e`'s three files, with checksums when `sums`.
    fn epoch(dir: &RunDir, e: usize, sums: bool) {
        std::fs::create_dir_all(dir.checkpoints()).unwrap();
        let written: Vec<Sum> = Checkpoint::ALL
            .iter()
            .map(|&k| {
                let path = dir.checkpoint(k, e);
                std::fs::write(&path, format!("{k:?} {e}")).unwrap();
                Sum::of(&path, format!("{k:?} {e}").as_bytes())
            })
            .collect();
        if sums {
            checksum::write(dir, e, &written).unwrap();
        }
    }

    #[test]
    fn the_newest_epoch_that_verifies_is_picked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::new(tmp.path());
        assert_eq!(pick(&dir), None);
        for e in 1..=3 {
            epoch(&dir, e, true);
        }
        assert_eq!(pick(&dir), Some(3));
        // Epoch 4 cut short: files but no checksums.
        epoch(&dir, 4, false);
        assert_eq!(on_disk(&dir), [1, 2, 3, 4]);
        assert_eq!(pick(&dir), Some(3));
        // Epoch 3's optimiser state truncated: back to epoch 2.
        std::fs::write(dir.checkpoint(Checkpoint::Optim, 3), "Op").unwrap();
        assert_eq!(pick(&dir), Some(2));
        assert!(matches!(usable(&dir, 3, true), Err(Bad::Truncated(..))));
    }

    #[test]
    fn a_run_without_checksums_needs_the_three_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::new(tmp.path());
        epoch(&dir, 1, false);
        epoch(&dir, 2, false);
        std::fs::remove_file(dir.checkpoint(Checkpoint::Scheduler, 2)).unwrap();
        assert_eq!(pick(&dir), Some(1));
    }
}
