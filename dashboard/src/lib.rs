//! rekindle-dashboard: a web app over run directories, studies and evaluation reports, for
//! watching a run train (its curves update live), comparing runs and reading a study. It only
//! reads what `train`, `tune` and `eval` write, through their own readers, and never writes
//! into a run or a study.
//!
//! The folders follow a request: [`scan`] finds what is under the roots -> [`runs`] and
//! [`studies`] read one thing (curves downsampled by [`lttb`]) -> [`server`] answers with
//! [`pages`] or a [`table`] download.

pub mod lttb;
pub mod pages;
pub mod runs;
pub mod scan;
pub mod server;
pub mod studies;
pub mod table;

pub use scan::Roots;
pub use server::{Settings, router};
