//! What a run shows and keeps: progress bars and the NaN guard, the CSV logs, the plots.

pub mod log;
pub mod plot;
pub mod progress;
pub mod tensorboard;
