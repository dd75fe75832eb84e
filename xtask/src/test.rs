//! `cargo xtask test` and `lint`: install, fixtures, fmt, clippy, then the whole suite with one
//! closing count.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::env::{CPU_BACKENDS, base_env, cargo, feature_flags, render, run};
use crate::{BackendArgs, TestArgs, fixtures, install};

pub fn default_test_backends() -> Vec<String> {
    let mut v: Vec<String> = CPU_BACKENDS.iter().map(|s| s.to_string()).collect();
    // A machine with an NVIDIA driver can run the CUDA backend as well.
    if Command::new("nvidia-smi")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        v.push("cuda".into());
    }
    v
}

/// Test and example executables in the target directory not rebuilt for this long are stale:
/// each code change leaves a new ~600 MB copy under a new hash, and the cache (shared by every
/// clone and CI run on the machine) would otherwise fill the disk.
pub const STALE_BINARY_AGE: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// Deletes stale executables under `target/release/{deps,examples}`; a current one that is
/// deleted is only relinked.
pub fn prune_stale_binaries(env: &BTreeMap<String, String>) {
    use std::os::unix::fs::PermissionsExt;
    let Some(target) = env
        .get("CARGO_TARGET_DIR")
        .cloned()
        .or_else(|| std::env::var("CARGO_TARGET_DIR").ok())
    else {
        return;
    };
    let mut freed = 0u64;
    for dir in ["release/deps", "release/examples"] {
        let Ok(entries) = std::fs::read_dir(Path::new(&target).join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let (Ok(meta), name) = (e.metadata(), e.file_name()) else {
                continue;
            };
            let executable = meta.is_file()
                && meta.permissions().mode() & 0o100 != 0
                && !name.to_string_lossy().contains('.');
            let stale = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > STALE_BINARY_AGE);
            if executable && stale && std::fs::remove_file(e.path()).is_ok() {
                freed += meta.len();
            }
        }
    }
    if freed > 0 {
        eprintln!(
            "removed {:.1} GB of test binaries not rebuilt for 12 hours from {target}",
            freed as f64 / 1e9
        );
    }
}

pub fn test(args: TestArgs) -> Result<()> {
    let mut env = base_env();
    prune_stale_binaries(&env);
    install::setup(&mut env, !args.no_install)?;
    let fixtures = fixtures::fixtures(&env, false)?;
    let backends = if args.backends.backends.is_empty() {
        default_test_backends()
    } else {
        args.backends.backends
    };
    env.insert("REKINDLE_FIXTURES".into(), fixtures.display().to_string());
    env.insert("REKINDLE_REQUIRE_BACKENDS".into(), backends.join(","));
    lint_with(&env, &backends)?;
    let mut cmd = cargo(&env);
    cmd.args(["test", "--release", "--locked", "--workspace"])
        .args(feature_flags(&backends)?)
        .args(&args.cargo_args);
    run_counting_tests(&mut cmd)
}

/// Runs `cargo test`, passing its output through, and ends with one total over every test
/// binary: cargo's own last line belongs to whichever binary ran last (often a doc-test run
/// with nothing in it), not to the suite.
pub fn run_counting_tests(cmd: &mut Command) -> Result<()> {
    use std::io::{BufRead, BufReader};
    eprintln!("+ {}", render(cmd));
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", render(cmd)))?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some([p, f, i]) = parse_test_result(&line) {
            (passed, failed, ignored) = (passed + p, failed + f, ignored + i);
        }
    }
    let status = child.wait()?;
    println!("\ntests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("`{}` failed ({status})", render(cmd));
    }
    Ok(())
}

pub fn lint(args: BackendArgs) -> Result<()> {
    let backends = if args.backends.is_empty() {
        default_test_backends()
    } else {
        args.backends
    };
    lint_with(&base_env(), &backends)
}

/// `cargo fmt --check`, then clippy with warnings as errors over every target the tests build.
pub fn lint_with(env: &BTreeMap<String, String>, backends: &[String]) -> Result<()> {
    run(cargo(env).args(["fmt", "--all", "--", "--check"]))?;
    run(cargo(env)
        .args([
            "clippy",
            "--release",
            "--locked",
            "--workspace",
            "--all-targets",
        ])
        .args(feature_flags(backends)?)
        .args(["--", "-D", "warnings"]))
}

/// Counts (passed, failed, ignored) from a libtest closing line
/// (`test result: ok. 17 passed; 0 failed; 0 ignored; ...`).
pub fn parse_test_result(line: &str) -> Option<[u64; 3]> {
    let rest = line.strip_prefix("test result: ")?;
    let mut counts = [0; 3];
    for part in rest.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(kind), Some(n)) = (words.next(), words.next()) else {
            continue;
        };
        let slot = match kind {
            "passed" => 0,
            "failed" => 1,
            "ignored" => 2,
            _ => continue,
        };
        counts[slot] += n.parse::<u64>().ok()?;
    }
    Some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libtest_closing_lines() {
        let line = "test result: ok. 17 passed; 2 failed; 3 ignored; 0 measured; 0 filtered out; finished in 7.68s";
        assert_eq!(parse_test_result(line), Some([17, 2, 3]));
        assert_eq!(parse_test_result("running 17 tests"), None);
    }

    #[test]
    fn prunes_only_stale_executables() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("xtask-prune-{}", std::process::id()));
        let deps = dir.join("release/deps");
        std::fs::create_dir_all(&deps).unwrap();
        let old = std::time::SystemTime::now() - STALE_BINARY_AGE * 2;
        let make = |name: &str, exec: bool, stale: bool| {
            let p = deps.join(name);
            std::fs::write(&p, b"x").unwrap();
            if exec {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            if stale {
                std::fs::File::options()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .set_modified(old)
                    .unwrap();
            }
            p
        };
        let stale_test = make("formats-0123abcd", true, true);
        let fresh_test = make("formats-4567ef01", true, false);
        let stale_rlib = make("libburn-89ab.rlib", false, true);
        let stale_so = make("libtorch_helper-cd.so", true, true);
        let env = BTreeMap::from([("CARGO_TARGET_DIR".to_string(), dir.display().to_string())]);
        prune_stale_binaries(&env);
        assert!(!stale_test.exists());
        assert!(fresh_test.exists() && stale_rlib.exists() && stale_so.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
