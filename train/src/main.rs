//! `rekindle-train`: fine-tune a ResNet (`run`), the embedded transfer-learning demo (`demo`),
//! and the tools around a run (`schedule`, `lr-find`, `prune`, `eval`); each subcommand lives
//! in the library's `cli` module. `cargo xtask train` builds it with the backend asked for.

use std::process::ExitCode;

use clap::Parser;
use rekindle_train::cli::Cli;

/// Keeps freed pages for reuse (see `rekindle_kernels::allocator`).
#[global_allocator]
static ALLOCATOR: rekindle_kernels::allocator::Allocator = rekindle_kernels::allocator::Allocator;

fn main() -> ExitCode {
    rekindle_kernels::allocator::keep_freed_pages();
    match Cli::parse().command.dispatch() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
