//! The tuning catalog, each with torch.optim / lr_scheduler / torch.nn.init semantics:
//! initialisers, optimisers, learning-rate schedules, magnitude pruning and the loss.

pub mod init;
pub mod loss;
pub mod optim;
pub mod prune;
pub mod reinit;
pub mod schedule;
pub mod scheduler;
