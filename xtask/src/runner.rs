//! Runs the suite's test executables: all of them (`cargo xtask test`) or one crate's (`-p`, the
//! fast loop), two at a time, the slowest first.
//!
//! Why not `cargo test`: it runs the executables one after another, and most of them leave a core
//! idle most of the time (servers answering, processes starting, a fuzz budget of seconds), so on
//! 2 cores the suite's wall time was the sum of all of them. And `cargo test -p CRATE` resolves
//! features for that crate alone, so the dev-dependencies of the others drop out (kernels'
//! `testing`, infer's tokio features, ...) and our crates are rebuilt under other hashes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rekindle_backends::Spec;
use serde_json::Value;

use crate::command::render;
use crate::env::{cargo, run_env_of_xtask, target_dir};
use crate::suite::{SUITE_PROFILE, suite_test_command};

/// One test executable: its package (name, version, folder: the tests' working directory), its
/// path, and the name it is remembered by (`package/target`).
#[derive(Clone, Debug, PartialEq)]
pub struct TestBinary {
    package: String,
    version: String,
    dir: PathBuf,
    exe: PathBuf,
    name: String,
}

/// A workspace package as cargo metadata describes it.
#[derive(Clone, Debug, PartialEq)]
struct Package {
    version: String,
    dir: PathBuf,
}

/// Builds the suite's test executables as `cargo xtask test` does (with cargo's timing report
/// when `timings`), then runs those of `packages` (every package when empty) with `test_args`
/// (libtest's: a name filter, `--nocapture`), `jobs` at a time. Fails when a test or an
/// executable failed.
pub fn build_and_run(
    env: &BTreeMap<String, String>,
    backends: &[&Spec],
    packages: &[String],
    test_args: &[String],
    (jobs, timings): (usize, bool),
) -> Result<()> {
    let workspace = workspace_packages(env)?;
    for p in packages {
        if !workspace.contains_key(p) {
            bail!(
                "--package {p}: no such crate in the workspace; its crates are: {}",
                workspace.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    let mut cmd = suite_test_command(env, backends)?;
    cmd.args(["--no-run", "--message-format=json-render-diagnostics"]);
    if timings {
        cmd.arg("--timings");
    }
    eprintln!("+ {}", render(&cmd));
    let built = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {}", render(&cmd)))?;
    if !built.status.success() {
        bail!("`{}` failed ({})", render(&cmd), built.status);
    }
    let mut binaries = test_binaries(&String::from_utf8_lossy(&built.stdout), &workspace);
    if !packages.is_empty() {
        binaries.retain(|b| packages.contains(&b.package));
    }
    run_binaries(env, binaries, test_args, jobs)?;
    if !packages.is_empty() {
        println!(
            "ran the tests of {} only; `cargo xtask test` runs them all",
            packages.join(", ")
        );
    }
    Ok(())
}

/// Runs `binaries`, `jobs` at a time, slowest first by the last run's times; prints each one's
/// output whole when it ends (so two never interleave), then every failure and one total.
fn run_binaries(
    env: &BTreeMap<String, String>,
    mut binaries: Vec<TestBinary>,
    test_args: &[String],
    jobs: usize,
) -> Result<()> {
    let times_file = target_dir(env).join(SUITE_PROFILE).join("test-times.tsv");
    let mut times = read_times(&times_file);
    binaries.sort_by(|a, b| {
        let t = |x: &TestBinary| times.get(&x.name).copied().unwrap_or(0.0);
        t(b).total_cmp(&t(a))
    });
    let started = Instant::now();
    let queue = Mutex::new(binaries.into_iter());
    let done = Mutex::new((Tally::default(), Vec::new(), Vec::new()));
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let Some(bin) = queue.lock().expect("queue").next() else {
                        return;
                    };
                    let outcome = run_one(env, &bin, test_args);
                    let mut done = done.lock().expect("tally");
                    let (tally, failed, took) = &mut *done;
                    match outcome {
                        Ok((ok, output, secs)) => {
                            print!("{output}");
                            println!("({} took {secs:.1} s)", bin.name);
                            output.lines().for_each(|l| tally.add_line(l));
                            took.push((bin.name.clone(), secs));
                            if !ok {
                                failed.push(bin.exe.display().to_string());
                            }
                        }
                        Err(e) => failed.push(format!("{}: {e:#}", bin.exe.display())),
                    }
                }
            });
        }
    });
    let (tally, failed, took) = done.into_inner().expect("tally");
    for (name, secs) in took {
        times.insert(name, secs);
    }
    write_times(&times_file, &times);
    tally.report();
    println!(
        "test executables: {} s wall, {} at a time",
        started.elapsed().as_secs(),
        jobs
    );
    if !failed.is_empty() {
        bail!("failing test executables: {}", failed.join(", "));
    }
    Ok(())
}

/// Runs one test executable as `cargo test` would (in its package's folder, with the package's
/// `CARGO_MANIFEST_*` and `CARGO_PKG_*` names), capturing its output; returns whether it passed,
/// the output and the seconds it took.
fn run_one(
    env: &BTreeMap<String, String>,
    bin: &TestBinary,
    test_args: &[String],
) -> Result<(bool, String, f64)> {
    let mut test = Command::new(&bin.exe);
    for var in run_env_of_xtask() {
        test.env_remove(var);
    }
    test.current_dir(&bin.dir)
        .envs(env)
        .env("CARGO_MANIFEST_DIR", &bin.dir)
        .env("CARGO_MANIFEST_PATH", bin.dir.join("Cargo.toml"))
        .env("CARGO_PKG_NAME", &bin.package)
        .env("CARGO_PKG_VERSION", &bin.version)
        .args(test_args)
        .stdin(Stdio::null());
    let start = Instant::now();
    let out = test
        .output()
        .with_context(|| format!("cannot start {}", bin.exe.display()))?;
    let secs = start.elapsed().as_secs_f64();
    let mut text = format!("     Running {} ({})\n", bin.name, bin.exe.display());
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        text.push_str("--- stderr ---\n");
        text.push_str(&stderr);
        if !stderr.ends_with('\n') {
            text.push('\n');
        }
    }
    Ok((out.status.success(), text, secs))
}

/// The last run's seconds per executable (`name<TAB>seconds` lines); empty when unreadable.
fn read_times(path: &Path) -> BTreeMap<String, f64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (name, secs) = l.split_once('\t')?;
            Some((name.to_string(), secs.parse().ok()?))
        })
        .collect()
}

/// Remembers the times for the next run's order (a failure to write only costs the order).
fn write_times(path: &Path, times: &BTreeMap<String, f64>) {
    let text: String = times
        .iter()
        .map(|(n, s)| format!("{n}\t{s:.1}\n"))
        .collect();
    let _ = std::fs::write(path, text);
}

/// The workspace's packages, by name.
fn workspace_packages(env: &BTreeMap<String, String>) -> Result<BTreeMap<String, Package>> {
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
            let package = Package {
                version: p["version"].as_str()?.to_string(),
                dir: Path::new(p["manifest_path"].as_str()?)
                    .parent()?
                    .to_path_buf(),
            };
            Some((name.to_string(), package))
        })
        .collect())
}

/// The test executables cargo's JSON messages name, in cargo's order, each named after its
/// package (one of `workspace`) and target.
fn test_binaries(messages: &str, workspace: &BTreeMap<String, Package>) -> Vec<TestBinary> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter_map(|m| {
            let dir = Path::new(m["manifest_path"].as_str()?)
                .parent()?
                .to_path_buf();
            let (package, p) = workspace.iter().find(|(_, p)| p.dir == dir)?;
            let target = m["target"]["name"].as_str()?;
            Some(TestBinary {
                exe: PathBuf::from(m["executable"].as_str()?),
                name: format!("{package}/{target}"),
                package: package.clone(),
                version: p.version.clone(),
                dir,
            })
        })
        .collect()
}

/// Tests passed, failed and skipped over several libtest runs, and the failed tests' names.
#[derive(Default)]
pub struct Tally {
    counts: [u64; 3],
    failures: Vec<String>,
}

impl Tally {
    /// Counts one line of a test executable's output (closing counts and failed tests).
    pub fn add_line(&mut self, line: &str) {
        if let Some(counts) = parse_test_result(line) {
            for (total, n) in self.counts.iter_mut().zip(counts) {
                *total += n;
            }
        }
        if let Some(name) = failed_test(line) {
            self.failures.push(name.to_string());
        }
    }

    /// Prints the failed tests, then the closing count.
    pub fn report(&self) {
        if !self.failures.is_empty() {
            println!("\nfailed tests:");
            for f in &self.failures {
                println!("  {f}");
            }
        }
        let [passed, failed, ignored] = self.counts;
        println!("\ntests: {passed} passed, {failed} failed, {ignored} skipped");
    }
}

/// The test a libtest line reports failed (`test a::b ... FAILED`).
fn failed_test(line: &str) -> Option<&str> {
    line.strip_prefix("test ")?.strip_suffix(" ... FAILED")
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
        assert_eq!(
            failed_test("test it::cli::resume ... FAILED"),
            Some("it::cli::resume")
        );
        assert_eq!(failed_test("test it::cli::resume ... ok"), None);
    }

    #[test]
    fn names_each_test_executable_after_its_package_and_target() {
        let messages = [
            r#"{"reason":"compiler-artifact","manifest_path":"/w/train/Cargo.toml","target":{"name":"it"},"profile":{"test":true},"executable":"/t/deps/it-1"}"#,
            r#"{"reason":"compiler-artifact","manifest_path":"/w/train/Cargo.toml","target":{"name":"rekindle-train"},"profile":{"test":false},"executable":"/t/rekindle-train"}"#,
            r#"{"reason":"compiler-artifact","manifest_path":"/w/train/Cargo.toml","target":{"name":"rekindle_train"},"profile":{"test":false},"executable":null}"#,
            r#"{"reason":"compiler-artifact","manifest_path":"/w/infer/Cargo.toml","target":{"name":"it"},"profile":{"test":true},"executable":"/t/deps/it-2"}"#,
            r#"{"reason":"build-finished","success":true}"#,
            "not json",
        ]
        .join("\n");
        let package = |dir: &str| Package {
            version: "0.1.0".into(),
            dir: PathBuf::from(dir),
        };
        let workspace = BTreeMap::from([
            ("rekindle-train".to_string(), package("/w/train")),
            ("rekindle-infer".to_string(), package("/w/infer")),
        ]);
        let got = test_binaries(&messages, &workspace);
        let names: Vec<_> = got.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["rekindle-train/it", "rekindle-infer/it"]);
        assert_eq!(got[0].exe, PathBuf::from("/t/deps/it-1"));
        assert_eq!(got[0].dir, PathBuf::from("/w/train"));
        assert_eq!(
            (got[1].package.as_str(), got[1].version.as_str()),
            ("rekindle-infer", "0.1.0")
        );
    }

    #[test]
    fn times_survive_a_round_trip_and_bad_lines_are_skipped() {
        let path = std::env::temp_dir().join(format!("xtask-times-{}.tsv", std::process::id()));
        let times = BTreeMap::from([("a/it".to_string(), 12.5), ("b/lib".to_string(), 0.1)]);
        write_times(&path, &times);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("garbage\nc/it\tnot-a-number\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(read_times(&path), times);
        std::fs::remove_file(&path).unwrap();
    }
}
