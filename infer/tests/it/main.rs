//! rekindle-infer's integration tests, one module a file, in one test binary: every test binary
//! links all of Burn's backends, so one binary instead of 4 saves that much linking.

mod backends;
mod cli;
mod common;
mod hardening;
mod oip;
mod serve;
mod wild;
