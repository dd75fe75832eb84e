//! A watcher of a run, epoch by epoch: what a hyper-parameter search plugs in to report each
//! epoch's validation result and stop an unpromising run (prune it) without killing it.

use crate::report::log::EpochRow;

/// Sees every epoch's validation row as it is logged, and may stop the run there.
pub trait Watch: Send {
    /// After the validation of epoch `row.epoch` (a resumed run starts after its checkpoint):
    /// `Some(reason)` stops the run before its next epoch, with [`crate::TrainError::Halted`].
    fn epoch(&mut self, row: &EpochRow) -> Option<String>;
}
