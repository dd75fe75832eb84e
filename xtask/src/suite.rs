//! The suite's test build: its profile, the `cargo test` command over the whole workspace with
//! the backends compiled in, and clippy run by that build rather than by a second pass.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context, Result, bail};
use rekindle_backends::Spec;

use crate::env::{cargo, feature_flags};

/// The profile `cargo xtask test` and `lint` build with (`Cargo.toml`): release with the other
/// backends' host code at opt-level 1.
pub const SUITE_PROFILE: &str = "suite";

/// `cargo test` of the whole workspace with `backends` compiled in, in the suite's profile,
/// linted by clippy as it compiles.
pub fn suite_test_command(env: &BTreeMap<String, String>, backends: &[&Spec]) -> Result<Command> {
    let mut cmd = cargo(env);
    cmd.args([
        "test",
        "--profile",
        SUITE_PROFILE,
        "--locked",
        "--workspace",
        "--no-fail-fast",
    ])
    .args(feature_flags(&["rekindle-model"], backends));
    lint_while_building(&mut cmd)?;
    Ok(cmd)
}

/// Makes `cmd` (a cargo build of the workspace) run clippy on the workspace's own crates as it
/// compiles them, warnings denied: `cargo clippy` is `cargo check` with clippy-driver wrapping
/// rustc, and a check is a second pass over every dependency; wrapping the test build itself
/// lints the same targets (libraries, binaries, tests, examples) with no second pass.
pub fn lint_while_building(cmd: &mut Command) -> Result<()> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("rustc --print sysroot")?;
    let driver = std::path::PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim())
        .join("bin/clippy-driver");
    if !driver.exists() {
        bail!(
            "clippy is not installed ({} is missing): rustup component add clippy",
            driver.display()
        );
    }
    // CLIPPY_ARGS is how cargo-clippy hands its lint flags to clippy-driver.
    cmd.env("RUSTC_WORKSPACE_WRAPPER", driver).env(
        "CLIPPY_ARGS",
        "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
    );
    Ok(())
}
