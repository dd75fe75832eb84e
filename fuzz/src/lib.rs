//! rekindle-fuzz: a seeded, structure-aware mutation fuzzer on stable Rust for every input
//! rekindle takes from strangers: checkpoints (.pth zip and legacy, safetensors, ONNX with
//! external data), model files, images, train configs and the service's HTTP requests.
//!
//! cargo-fuzz needs nightly for its sanitizer coverage, and nightly is not available here; this
//! fuzzer needs none. In place of coverage it keeps an input when it ends in an outcome not seen
//! before (a refusal with its numbers masked), and its mutations know each format's size and
//! offset fields, so inputs get past the first check. Workers run as child processes, so an
//! abort, a hang or a memory blow-up is reported with its input instead of ending the run.

pub mod config;
pub mod driver;
pub mod images;
pub mod memory;
pub mod mutate;
pub mod request;
pub mod seed_model;
pub mod structure;
pub mod targets;
pub mod worker;
