//! rekindle-train's integration tests, one module a file, in one test binary: every test binary
//! links all of Burn's backends, so one binary instead of 6 saves that much linking.

mod backends;
mod chaos;
mod cli;
mod common;
mod manifest;
mod recipe;
mod step_parity;
mod tuning;
mod wild;
