//! rekindle-model's integration tests, one module a file, in one test binary: every test binary
//! links all of Burn's backends, so one binary instead of 5 saves that much linking.

mod backends;
mod bench_cli;
mod drop_path;
// Our kernels are flex's: compared with Burn's ops on flex only.
#[cfg(feature = "flex")]
mod kernels;
mod torchvision_parity;
