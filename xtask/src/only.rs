//! `cargo xtask test -p CRATE`: the fast loop. Builds every test target exactly as the whole
//! suite does, then runs only the named crates' test binaries, as `cargo test` runs them.
//!
//! Why not `cargo test -p CRATE`: cargo resolves features for the packages named only, so the
//! dev-dependencies of the others drop out (kernels' `testing`, infer's tokio features, ...),
//! our crates are rebuilt under other hashes, and the next whole run rebuilds them again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use rekindle_backends::Spec;
use serde_json::Value;

use crate::env::{cargo, render, run_env_of_xtask};
use crate::test::{Tally, suite_test_command};

/// Builds the suite as `cargo xtask test` does and runs the test binaries of `packages` with
/// `test_args` (libtest's: a name filter, `--nocapture`, ...).
pub fn run_packages(
    env: &BTreeMap<String, String>,
    backends: &[&Spec],
    packages: &[String],
    test_args: &[String],
) -> Result<()> {
    let dirs = package_dirs(env)?;
    let mut wanted = Vec::new();
    for p in packages {
        match dirs.get(p) {
            Some(dir) => wanted.push(dir.clone()),
            None => bail!(
                "--package {p}: no such crate in the workspace; its crates are: {}",
                dirs.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }
    let mut cmd = suite_test_command(env, backends, &[])?;
    cmd.args(["--no-run", "--message-format=json-render-diagnostics"]);
    eprintln!("+ {}", render(&cmd));
    let built = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {}", render(&cmd)))?;
    if !built.status.success() {
        bail!("`{}` failed ({})", render(&cmd), built.status);
    }
    let binaries = test_binaries(&String::from_utf8_lossy(&built.stdout), &wanted);
    let mut tally = Tally::default();
    let mut failed = Vec::new();
    for (dir, exe) in &binaries {
        let mut test = Command::new(exe);
        for var in run_env_of_xtask() {
            test.env_remove(var);
        }
        // What cargo test sets for a test it runs: the package's folder, as cwd and variable.
        test.current_dir(dir)
            .envs(env)
            .env("CARGO_MANIFEST_DIR", dir)
            .args(test_args);
        if !tally.run(&mut test)?.success() {
            failed.push(exe.display().to_string());
        }
    }
    tally.report();
    println!(
        "ran the tests of {} only ({} binaries); `cargo xtask test` runs them all",
        packages.join(", "),
        binaries.len()
    );
    if !failed.is_empty() {
        bail!("failing test binaries: {}", failed.join(", "));
    }
    Ok(())
}

/// Each workspace crate's folder, by name.
fn package_dirs(env: &BTreeMap<String, String>) -> Result<BTreeMap<String, PathBuf>> {
    let mut cmd = cargo(env);
    cmd.args(["metadata", "--no-deps", "--format-version", "1"]);
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {}", render(&cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            render(&cmd),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: Value = serde_json::from_slice(&out.stdout).context("cargo metadata's JSON")?;
    let packages = meta["packages"]
        .as_array()
        .context("cargo metadata: no packages")?;
    Ok(packages
        .iter()
        .filter_map(|p| {
            let name = p["name"].as_str()?;
            let dir = Path::new(p["manifest_path"].as_str()?).parent()?;
            Some((name.to_string(), dir.to_path_buf()))
        })
        .collect())
}

/// The test executables cargo's JSON messages name, with their package's folder, for the
/// packages in `dirs`, in cargo's order.
fn test_binaries(messages: &str, dirs: &[PathBuf]) -> Vec<(PathBuf, PathBuf)> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter_map(|m| {
            let dir = Path::new(m["manifest_path"].as_str()?)
                .parent()?
                .to_path_buf();
            let exe = PathBuf::from(m["executable"].as_str()?);
            dirs.contains(&dir).then_some((dir, exe))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_named_packages_test_executables_only() {
        let messages = [
            r#"{"reason":"compiler-artifact","manifest_path":"/w/train/Cargo.toml","profile":{"test":true},"executable":"/t/deps/it-1"}"#,
            r#"{"reason":"compiler-artifact","manifest_path":"/w/train/Cargo.toml","profile":{"test":false},"executable":"/t/rekindle-train"}"#,
            r#"{"reason":"compiler-artifact","manifest_path":"/w/train/Cargo.toml","profile":{"test":false},"executable":null}"#,
            r#"{"reason":"compiler-artifact","manifest_path":"/w/infer/Cargo.toml","profile":{"test":true},"executable":"/t/deps/it-2"}"#,
            r#"{"reason":"build-finished","success":true}"#,
            "not json",
        ]
        .join("\n");
        let got = test_binaries(&messages, &[PathBuf::from("/w/train")]);
        assert_eq!(
            got,
            vec![(PathBuf::from("/w/train"), PathBuf::from("/t/deps/it-1"))]
        );
    }
}
