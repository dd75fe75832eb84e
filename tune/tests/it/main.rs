//! rekindle-tune's integration tests, one module a file, in one test binary: every test binary
//! links all of Burn's backends, so one binary instead of 2 saves that much linking.

mod cli;
mod optuna;
mod tpe_studies;
