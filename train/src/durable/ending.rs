//! How a run's last process ended, kept in the run directory (`ended.json`) for readers that
//! were not there, such as the dashboard: finished, or stopped and why. A process killed
//! outright leaves none; a resumed run removes the old one when it starts.

use serde::{Deserialize, Serialize};

use crate::durable::dir::RunDir;
use crate::error::TrainError;

/// The way a run's process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ending {
    /// Trained to the end and published its model.
    Finished,
    /// Ctrl-C (or SIGTERM) after a step; it resumes from its last checkpoint.
    Interrupted,
    /// Halted by its watcher: a search pruned it.
    Halted,
    /// Stopped by an error: bad data, a diverged loss, a failed checkpoint.
    Failed,
}

/// What `ended.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ended {
    /// How it ended.
    pub ending: Ending,
    /// The error's message (empty when it finished).
    pub message: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

impl Ending {
    /// How `result` ends a run.
    pub fn of<T>(result: &Result<T, TrainError>) -> Self {
        match result {
            Ok(_) => Self::Finished,
            Err(TrainError::Interrupted(_)) => Self::Interrupted,
            Err(TrainError::Halted(_)) => Self::Halted,
            Err(_) => Self::Failed,
        }
    }
}

/// Records how `result` ended the run in `dir` (best effort: a full disk must not hide the
/// run's own error behind this one).
pub fn record<T>(dir: &RunDir, result: &Result<T, TrainError>) {
    let ended = Ended {
        ending: Ending::of(result),
        message: result
            .as_ref()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
        at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    if let Ok(text) = serde_json::to_string(&ended) {
        let _ = crate::durable::atomic::write(&dir.ended(), text.as_bytes());
    }
}

/// Forgets a previous process's ending: the run is going again.
pub fn clear(dir: &RunDir) {
    let _ = std::fs::remove_file(dir.ended());
}

/// The recorded ending of the run in `dir`, if its last process left one that reads.
pub fn read(dir: &RunDir) -> Option<Ended> {
    serde_json::from_str(&std::fs::read_to_string(dir.ended()).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_ending_and_reads_back_with_its_message() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::new(tmp.path());
        let cases: [(Result<(), TrainError>, Ending); 4] = [
            (Ok(()), Ending::Finished),
            (
                Err(TrainError::Interrupted("Ctrl-C".into())),
                Ending::Interrupted,
            ),
            (Err(TrainError::Halted("pruned".into())), Ending::Halted),
            (
                Err(TrainError::Diverged("loss is NaN".into())),
                Ending::Failed,
            ),
        ];
        for (result, ending) in cases {
            record(&dir, &result);
            let read = read(&dir).unwrap();
            assert_eq!(read.ending, ending);
            assert_eq!(
                read.message,
                result.err().map(|e| e.to_string()).unwrap_or_default()
            );
        }
        clear(&dir);
        assert_eq!(read(&dir), None);
    }
}
