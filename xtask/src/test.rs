//! `cargo xtask test` and `lint`: install, fixtures, fmt, clippy, then the whole suite with one
//! closing count.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};

use rekindle_backends::Spec;

use crate::command::{render, run};
use crate::env::{
    base_env, cargo, feature_flags, joined, offline_backends, parse_backends, target_dir,
};
use crate::suite::{SUITE_PROFILE, lint_while_building, suite_test_command};
use crate::{BackendArgs, TestArgs, fixtures, install};

/// The backends `cargo xtask test` builds, checks and trains on when none are named: every one
/// that builds from the registries. cuda is left out (its build downloads LLVM): name it with
/// `--backend` where that download is reachable.
pub fn default_test_backends() -> Vec<&'static Spec> {
    offline_backends()
}

/// The crates a user builds with one backend feature, in dependency order, in the groups the
/// matrix checks together. A group shares one feature resolution, so a crate in it is checked with
/// the features its group-mates turn on in shared dependencies; the cut is where that would hide
/// the most: `burn-train` turns on Burn's flex, so the training crates are kept apart from the
/// crates a service reuses (model, import, infer), which therefore see no flex they did not ask
/// for. Five checks per backend instead of two re-checked the whole backend stack each time
/// (small crates such as `log` or `futures-core` get other features from each), for 46 minutes
/// cold on 2 cores instead of about 20.
pub const MATRIX_GROUPS: &[&[&str]] = &[
    &["rekindle-model", "rekindle-import", "rekindle-infer"],
    &["rekindle-train", "rekindle-tune", "rekindle-dashboard"],
];

/// Checked beside every matrix check (never a group of its own): a crate with no code whose
/// manifest turns on, below Burn, the features the training group turns on itself, so that the
/// service group resolves those dependencies alike and the training group's check re-checks only
/// Burn and our crates.
pub const MATRIX_FEATURES: &str = "rekindle-matrix-features";

/// The backend `burn-train` turns on in Burn whatever the features asked for: with it alone the
/// two groups resolve Burn alike, so one check covers all six crates. Checked apart, the training
/// group re-checked nearly everything (its proc-macros and `libc` get other features, which
/// changes every crate above them): 261 CPU-seconds cold for flex's two checks, 192 for one.
pub const TRAINING_BACKEND: &str = "flex";

/// The checks the matrix runs for `backend`: one per group of [`MATRIX_GROUPS`], or a single
/// one of every crate for [`TRAINING_BACKEND`].
pub fn matrix_groups(backend: &Spec) -> Vec<Vec<&'static str>> {
    if backend.name == TRAINING_BACKEND {
        vec![MATRIX_GROUPS.concat()]
    } else {
        MATRIX_GROUPS.iter().map(|g| g.to_vec()).collect()
    }
}

/// The profile of the backend matrix's checks (`Cargo.toml`): dev without debug info, so that the
/// C and C++ compiled by build scripts (LibTorch's bindings above all) is not optimised for checks
/// that never link or run it: a fifth less CPU than checking with the suite's profile (tch: 461
/// CPU-seconds instead of 583).
pub const MATRIX_PROFILE: &str = "matrix";

/// Test and example executables in the target directory not rebuilt for this long are stale:
/// each code change leaves a new ~600 MB copy under a new hash, and the cache (shared by every
/// clone and CI run on the machine) would otherwise fill the disk.
pub const STALE_BINARY_AGE: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// Deletes stale executables under `target/{release,suite}/{deps,examples}`; a current one that
/// is deleted is only relinked.
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
    for dir in [
        "release/deps",
        "release/examples",
        "suite/deps",
        "suite/examples",
    ] {
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
    let backends = parse_backends(&args.backends.backends, default_test_backends)?;
    let mut env = base_env();
    prune_stale_binaries(&env);
    run(cargo(&env).args(["fmt", "--all", "--", "--check"]))?;
    for b in rekindle_backends::ALL
        .iter()
        .filter(|b| !backends.contains(b))
    {
        println!(
            "backend {b}: not built, checked or tested in this run ({})",
            why_not(b)
        );
    }
    if !args.package.is_empty() {
        install::setup(&mut env, !args.no_install, &backends)?;
        let fixtures = fixtures::fixtures(&env, false)?;
        env.insert("REKINDLE_FIXTURES".into(), fixtures.display().to_string());
        env.insert("REKINDLE_REQUIRE_BACKENDS".into(), joined(&backends));
        println!("backend matrix: not run with --package (the whole run has it)");
        return crate::runner::build_and_run(
            &env,
            &backends,
            &args.package,
            &args.test_args,
            (args.jobs, args.timings),
        );
    }
    // Cold, the install (a few GB of wheels to fetch and unpack) and the compiler's work each
    // take minutes and use different resources, so they overlap: the matrix checks the backends
    // that need nothing installed while the install runs, and the others once it is done; the
    // fixtures (PyTorch) are made beside the test build, which needs LibTorch before it starts.
    let (installed_tx, installed_rx) = std::sync::mpsc::channel();
    let matrix = {
        let (env, backends) = (matrix_env(&env), backends.clone());
        std::thread::spawn(move || overlapped_matrix(env, &backends, installed_rx))
    };
    let installed = install::setup(&mut env, !args.no_install, &backends);
    let _ = installed_tx.send(installed.is_ok().then(|| env.clone()));
    let built = installed.and_then(|()| {
        env.insert("REKINDLE_REQUIRE_BACKENDS".into(), joined(&backends));
        let fixtures = {
            let env = env.clone();
            std::thread::spawn(move || fixtures::fixtures(&env, false))
        };
        let build = suite_test_command(&env, &backends).and_then(|mut build| {
            build.arg("--no-run");
            if args.timings {
                build.arg("--timings");
            }
            run(&mut build)
        });
        let fixtures = fixtures
            .join()
            .unwrap_or_else(|_| bail!("the fixtures' thread panicked"))?;
        env.insert("REKINDLE_FIXTURES".into(), fixtures.display().to_string());
        build
    });
    let matrix = matrix
        .join()
        .unwrap_or_else(|_| vec!["the matrix's thread panicked".into()]);
    let tests = built.and_then(|()| {
        // Built above (with the timing report, if asked): this build only lists the executables.
        crate::runner::build_and_run(&env, &backends, &[], &args.test_args, (args.jobs, false))
    });
    if !matrix.is_empty() {
        println!("\nbackend matrix failures:");
        for m in &matrix {
            println!("  {m}");
        }
    }
    tests?;
    if !matrix.is_empty() {
        bail!("{} single-backend builds failed", matrix.len());
    }
    Ok(())
}

/// The matrix, started before the install: backends that need nothing installed to build are
/// checked at once; those that do (LibTorch for tch) when `installed` hands over the
/// environment the install made, and are reported failed if it failed.
fn overlapped_matrix(
    mut env: BTreeMap<String, String>,
    backends: &[&'static Spec],
    installed: std::sync::mpsc::Receiver<Option<BTreeMap<String, String>>>,
) -> Vec<String> {
    let (now, later): (Vec<&Spec>, Vec<&Spec>) = backends.iter().partition(|b| !b.needs_libtorch());
    let mut failed = backend_matrix(&env, &now);
    if later.is_empty() {
        return failed;
    }
    match installed.recv() {
        Ok(Some(after)) => {
            let target = env.remove("CARGO_TARGET_DIR");
            env = after;
            env.extend(target.map(|t| ("CARGO_TARGET_DIR".to_string(), t)));
            failed.extend(backend_matrix(&env, &later));
        }
        _ => failed.extend(
            later
                .iter()
                .map(|b| format!("{b}: not checked, the install failed")),
        ),
    }
    failed
}

/// The environment of the backend matrix: its own target folder beside the suite's
/// (`target-matrix`), shared by all of its checks.
pub fn matrix_env(env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env = env.clone();
    let mut dir = target_dir(&env).into_os_string();
    dir.push("-matrix");
    env.insert(
        "CARGO_TARGET_DIR".into(),
        dir.to_string_lossy().into_owned(),
    );
    env
}

/// Why a backend is not in this run: cuda cannot build offline; the others were not asked for.
fn why_not(b: &Spec) -> String {
    match b.needs.iter().find_map(|n| match n {
        rekindle_backends::Need::Network(why) => Some(*why),
        _ => None,
    }) {
        Some(why) => format!("{why}; pass --backend {} where that is reachable", b.name),
        None => "not asked for with --backend".into(),
    }
}

/// The crates a user reuses, built with each backend alone (`cargo clippy -p A -p B
/// --no-default-features --features A/B,B/B`, libraries and binaries, warnings denied, one
/// invocation per group of [`MATRIX_GROUPS`]), so that a single-backend build that breaks is
/// seen here. All share one target folder. Returns the failed combinations (every one is tried).
pub fn backend_matrix(env: &BTreeMap<String, String>, backends: &[&Spec]) -> Vec<String> {
    let started = std::time::Instant::now();
    // Until 2026-12-07 the checks used the suite's profile: that folder is ~3 GB of dead weight.
    if let Some(old) = env
        .get("CARGO_TARGET_DIR")
        .map(|d| std::path::Path::new(d).join(SUITE_PROFILE))
        .filter(|d| d.is_dir())
    {
        match std::fs::remove_dir_all(&old) {
            Ok(()) => println!("backend matrix: removed {}, no longer used", old.display()),
            Err(e) => eprintln!("backend matrix: cannot remove {}: {e}", old.display()),
        }
    }
    let mut failed = Vec::new();
    for b in backends {
        for group in matrix_groups(b) {
            let mut cmd = cargo(env);
            cmd.args([
                "clippy",
                "--profile",
                MATRIX_PROFILE,
                "--locked",
                "--lib",
                "--bins",
            ])
            .args(matrix_selection(&group, b))
            .args(["--", "-D", "warnings"]);
            // Captured: it runs beside the test build, whose output it would cut into.
            let check = std::time::Instant::now();
            let what = format!("{} with {b} alone", group.join(" + "));
            match cmd.output() {
                Ok(out) if out.status.success() => println!(
                    "backend matrix: {what}: ok ({:.0} s)",
                    check.elapsed().as_secs_f64()
                ),
                outcome => {
                    eprintln!("+ {}", render(&cmd));
                    match outcome {
                        Ok(out) => eprintln!("{}", String::from_utf8_lossy(&out.stderr)),
                        Err(e) => eprintln!("cannot start cargo: {e}"),
                    }
                    println!("backend matrix: {what}: FAILED");
                    failed.push(what);
                }
            }
        }
    }
    let crates: usize = MATRIX_GROUPS.iter().map(|g| g.len()).sum();
    let checks: usize = backends.iter().map(|b| matrix_groups(b).len()).sum();
    println!(
        "backend matrix: {crates} crates x {} backends ({}) in {checks} checks, {:.0} s, {} failed",
        backends.len(),
        joined(backends),
        started.elapsed().as_secs_f64(),
        failed.len()
    );
    failed
}

/// The packages and features of one matrix check: `group` with backend `b` alone, and
/// [`MATRIX_FEATURES`] beside it.
pub fn matrix_selection(group: &[&str], b: &Spec) -> Vec<String> {
    let mut args = Vec::new();
    for krate in group.iter().chain([&MATRIX_FEATURES]) {
        args.extend(["--package".to_string(), krate.to_string()]);
    }
    args.extend(feature_flags(group, &[b]));
    args
}

pub fn lint(args: BackendArgs) -> Result<()> {
    let backends = parse_backends(&args.backends, default_test_backends)?;
    let env = base_env();
    run(cargo(&env).args(["fmt", "--all", "--", "--check"]))?;
    let matrix = backend_matrix(&matrix_env(&env), &backends);
    let mut cmd = cargo(&env);
    cmd.args([
        "build",
        "--profile",
        SUITE_PROFILE,
        "--locked",
        "--workspace",
        "--all-targets",
    ])
    .args(feature_flags(&["rekindle-model"], &backends));
    lint_while_building(&mut cmd)?;
    run(&mut cmd)?;
    if !matrix.is_empty() {
        bail!("single-backend builds failed: {}", matrix.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_matrix_checks_every_crate_once_per_backend_and_flex_in_one_go() {
        let crates: Vec<&str> = MATRIX_GROUPS.concat();
        for b in &rekindle_backends::ALL {
            let groups = matrix_groups(b);
            let mut seen: Vec<&str> = groups.concat();
            seen.sort_unstable();
            let mut want = crates.clone();
            want.sort_unstable();
            assert_eq!(seen, want, "{b}");
            let one_check = b.name == TRAINING_BACKEND;
            assert_eq!(groups.len() == 1, one_check, "{b}: {groups:?}");
        }
    }

    /// Each package `cargo tree` resolves for one matrix check, with the feature sets of its
    /// variants (a package built for the host and for the target can differ), Burn's and ours
    /// left out: Burn differs between the groups by design (`burn-train` turns on flex).
    fn resolved_below_burn(group: &[&str], b: &Spec) -> BTreeMap<String, BTreeSet<String>> {
        let mut cmd = cargo(&BTreeMap::new());
        cmd.args(["tree", "--locked", "--offline", "-e", "normal,build"])
            .args(["--prefix", "none", "--format", "{p} [{f}]"])
            .args(matrix_selection(group, b));
        let out = cmd.output().expect("cargo tree");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut resolved: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let line = line.trim_end_matches(" (*)").replace(" (proc-macro)", "");
            let Some((package, features)) = line.split_once(" [") else {
                continue;
            };
            let package = package.split(" (").next().unwrap_or(package);
            if package.starts_with("burn") || package.starts_with("rekindle") {
                continue;
            }
            resolved
                .entry(package.to_string())
                .or_default()
                .insert(features.trim_end_matches(']').to_string());
        }
        resolved
    }

    #[test]
    fn the_matrix_groups_resolve_alike_below_burn() {
        let mut differ = Vec::new();
        for b in default_test_backends() {
            let groups = matrix_groups(b);
            let [service, training] = groups.as_slice() else {
                continue;
            };
            let (s, t) = (
                resolved_below_burn(service, b),
                resolved_below_burn(training, b),
            );
            assert!(s.keys().any(|p| p.starts_with("libc ")), "{b}: {s:?}");
            // A variant only the training group has is a host copy for its own build scripts
            // or proc-macros; a service-group variant the training group lacks is a crate both
            // check resolved otherwise, and everything above it is checked twice.
            for (package, got) in &s {
                match t.get(package) {
                    Some(want) if !got.is_subset(want) => differ.push(format!(
                        "{b}: {package}: service group {got:?}, training group {want:?}"
                    )),
                    _ => {}
                }
            }
        }
        assert!(
            differ.is_empty(),
            "the training group's check would re-check everything above these (put the \
             features the training group adds in xtask/matrix-features/Cargo.toml):\n{}",
            differ.join("\n")
        );
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
