//! `cargo xtask`: rekindle's entry point. Maps `--backend` to cargo features so that a build
//! compiles only the backends asked for, installs what the tests need, and runs the suite.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

mod libtorch;
mod venv;

/// Backends `cargo xtask test` runs when none are named: every one that runs on a CPU.
const CPU_BACKENDS: &[&str] = &["flex", "ndarray", "wgpu", "tch"];
const ALL_BACKENDS: &[&str] = &["flex", "ndarray", "wgpu", "tch", "cuda"];

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "rekindle's tasks: train, infer, serve, test, bench, setup, fixtures, lint, import, export"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fine-tune a ResNet. With no arguments: the transfer-learning demo on Fashion-MNIST.
    /// `cargo xtask train [--backend B] [--config FILE] [--resume RUN_DIR] [--print-config] ...`
    #[command(disable_help_flag = true)]
    Train {
        /// Arguments for `rekindle-train run` (`--help` lists them), or `demo [...]`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Install what the tests need (idempotent), generate fixtures, run the whole suite.
    Test(TestArgs),
    /// ResNet-50 inference and train-step throughput, optionally against PyTorch.
    Bench(BenchArgs),
    /// Only the install step of `test`: apt packages, Python venv (synced with
    /// scripts/requirements.lock), LibTorch.
    Setup,
    /// Remake scripts/requirements.lock from scripts/requirements.in in a fresh venv.
    Relock,
    /// (Re)generate the PyTorch reference fixtures.
    Fixtures {
        /// Regenerate even when they are up to date.
        #[arg(long)]
        force: bool,
    },
    /// cargo fmt --check and clippy -D warnings over everything the tests build.
    Lint(BackendArgs),
    /// Pretrained weights (.pth/.pt, .safetensors, .onnx) -> a rekindle model file.
    /// `cargo xtask import SRC -o OUT [--arch A] [--num-classes N] [--class-names FILE] [--allow-partial]`
    #[command(disable_help_flag = true)]
    Import {
        /// Arguments for `rekindle-import import` (`--help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Predict with a model file: `cargo xtask infer --model M IMAGE_OR_DIR... [--top-k 5]
    /// [--batch-size N] [--json] [--backend B]`
    #[command(disable_help_flag = true)]
    Infer {
        /// Arguments for `rekindle-infer predict` (`--help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Serve a model file over HTTP: `cargo xtask serve --model M [--addr 127.0.0.1:8080]
    /// [--backend B] [--max-batch 16] [--max-wait-ms 5]`
    #[command(disable_help_flag = true)]
    Serve {
        /// Arguments for `rekindle-infer serve` (`--help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// A config's learning rate per optimiser step and parameter group, printed and plotted
    /// without training: `cargo xtask schedule [--config FILE] [--steps N] [--json] [--plot PNG]`
    #[command(disable_help_flag = true)]
    Schedule {
        /// Arguments for `rekindle-train schedule` (`--help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// One-shot magnitude pruning of a saved model: `cargo xtask prune MODEL --sparsity 0.5
    /// -o OUT [--scope global|layer]`
    #[command(disable_help_flag = true)]
    Prune {
        /// Arguments for `rekindle-train prune` (`--help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// A rekindle model file -> torchvision-layout safetensors. `cargo xtask export MODEL -o OUT`
    #[command(disable_help_flag = true)]
    Export {
        /// Arguments for `rekindle-import export` (`--help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Args)]
struct BackendArgs {
    /// Backends to compile in, comma-separated: flex, ndarray, wgpu, tch, cuda.
    #[arg(long = "backend", alias = "backends", value_delimiter = ',')]
    backends: Vec<String>,
}

#[derive(Args)]
struct TestArgs {
    #[command(flatten)]
    backends: BackendArgs,
    /// Skip the install step (apt, LibTorch, venv sync): the venv must still match
    /// scripts/requirements.lock, or the run stops and lists the differences.
    #[arg(long)]
    no_install: bool,
    /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    backends: BackendArgs,
    /// Measure PyTorch in the same run and print the ratio.
    #[arg(long)]
    vs_pytorch: bool,
    /// One JSON object per row.
    #[arg(long)]
    json: bool,
    /// More options for the benchmark (after `--`): --mode, --res, --batch, --min-time, --arch.
    #[arg(last = true)]
    bench_args: Vec<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cache_dir() -> PathBuf {
    std::env::var_os("REKINDLE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"));
            home.join(".cache/rekindle")
        })
}

/// The environment every cargo invocation gets: a target dir outside the clone (so fresh clones
/// and CI reuse the build), and LibTorch's location for the `tch` backend.
fn base_env() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        env.insert(
            "CARGO_TARGET_DIR".into(),
            cache_dir().join("target").display().to_string(),
        );
    }
    let libtorch = std::env::var("LIBTORCH").ok().or_else(|| {
        let version = libtorch::torch_version(&root()).ok()?;
        Some(libtorch::dir(&cache_dir(), &version).display().to_string())
    });
    if let Some(libtorch) = libtorch.filter(|l| Path::new(l).exists()) {
        use_libtorch(&mut env, libtorch);
    }
    // Mesa's Vulkan loader complains on every device open without a runtime dir (headless CI).
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = cache_dir().join("xdg-runtime");
        if std::fs::create_dir_all(&dir).is_ok() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
            env.insert("XDG_RUNTIME_DIR".into(), dir.display().to_string());
        }
    }
    env
}

/// Checks backend names and turns them into cargo feature flags for the workspace build.
fn feature_flags(backends: &[String]) -> Result<Vec<String>> {
    for b in backends {
        if !ALL_BACKENDS.contains(&b.as_str()) {
            bail!(
                "unknown backend `{b}`; valid ones: {}",
                ALL_BACKENDS.join(", ")
            );
        }
    }
    let features: Vec<String> = backends
        .iter()
        .map(|b| format!("rekindle-model/{b}"))
        .collect();
    Ok(vec![
        "--no-default-features".into(),
        "--features".into(),
        features.join(","),
    ])
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", render(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", render(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", render(cmd));
    }
    Ok(())
}

fn render(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn cargo(env: &BTreeMap<String, String>) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root()).envs(env);
    cmd
}

/// The Debian packages (only those missing; apt-get runs only then).
fn system_packages() -> Result<()> {
    run(Command::new("bash").arg(root().join("scripts/system-packages.sh")))
}

/// Everything the tests need, idempotently: Debian packages, the venv synced with the lock,
/// LibTorch from the venv's torch. With `install` off, only checks the venv against the lock.
fn setup(env: &mut BTreeMap<String, String>, install: bool) -> Result<()> {
    if install {
        system_packages()?;
    }
    let python = venv::sync(&root(), &cache_dir().join("venv"), install)?;
    env.insert("REKINDLE_PYTHON".into(), python.display().to_string());
    if install && std::env::var_os("LIBTORCH").is_none() {
        let version = libtorch::torch_version(&root())?;
        let lt = libtorch::install(&cache_dir(), &python, &version)?;
        use_libtorch(env, lt.display().to_string());
    }
    Ok(())
}

/// Points `tch` builds at LibTorch and puts its libraries on the loader path: the binaries
/// burn-tch links carry no rpath.
fn use_libtorch(env: &mut BTreeMap<String, String>, libtorch: String) {
    let ld = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    env.insert("LD_LIBRARY_PATH".into(), format!("{libtorch}/lib:{ld}"));
    env.insert("LIBTORCH".into(), libtorch);
}

/// Generates the PyTorch fixtures unless the ones on disk came from the same scripts run by the
/// same locked venv: the models (`make_fixtures.py`) and the tuning catalog's answers
/// (`tuning_reference.py`).
fn fixtures(env: &BTreeMap<String, String>, force: bool) -> Result<PathBuf> {
    let dir = cache_dir().join("fixtures");
    let lock = std::fs::read(root().join(venv::LOCK))?;
    for (name, output) in [
        ("make_fixtures.py", "reference.json"),
        ("tuning_reference.py", "tuning.json"),
    ] {
        let script = root().join("scripts").join(name);
        let mut source =
            std::fs::read(&script).with_context(|| format!("reading {}", script.display()))?;
        source.extend_from_slice(&lock);
        let stamp = dir.join(format!("{name}.used"));
        let fresh = std::fs::read(&stamp).is_ok_and(|s| s == source) && dir.join(output).exists();
        if force || !fresh {
            let python = env
                .get("REKINDLE_PYTHON")
                .cloned()
                .context("no Python with torch: run `cargo xtask setup` first")?;
            std::fs::create_dir_all(&dir)?;
            run(Command::new(python).arg(&script).arg(&dir))?;
            std::fs::write(&stamp, &source)?;
        } else {
            eprintln!("{output} up to date in {}", dir.display());
        }
    }
    Ok(dir)
}

fn default_test_backends() -> Vec<String> {
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
const STALE_BINARY_AGE: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// Deletes stale executables under `target/release/{deps,examples}`; a current one that is
/// deleted is only relinked.
fn prune_stale_binaries(env: &BTreeMap<String, String>) {
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

fn test(args: TestArgs) -> Result<()> {
    let mut env = base_env();
    prune_stale_binaries(&env);
    setup(&mut env, !args.no_install)?;
    let fixtures = fixtures(&env, false)?;
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
fn run_counting_tests(cmd: &mut Command) -> Result<()> {
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

fn bench(args: BenchArgs) -> Result<()> {
    let mut env = base_env();
    if args.vs_pytorch && std::env::var_os("REKINDLE_PYTHON").is_none() {
        let python = venv::sync(&root(), &cache_dir().join("venv"), true)?;
        env.insert("REKINDLE_PYTHON".into(), python.display().to_string());
    }
    let backends = if args.backends.backends.is_empty() {
        vec!["flex".to_string()]
    } else {
        args.backends.backends
    };
    let features = feature_flags(&backends)?;
    // Exactly the backends asked for, built workspace-wide like `cargo xtask test --backend`
    // with the same list, so the two share one build of Burn.
    run(cargo(&env)
        .args([
            "build",
            "--release",
            "--locked",
            "--workspace",
            "--examples",
        ])
        .args(&features))?;
    let target = env
        .get("CARGO_TARGET_DIR")
        .cloned()
        .or_else(|| std::env::var("CARGO_TARGET_DIR").ok())
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let mut cmd = Command::new(target.join("release/examples/bench"));
    cmd.envs(&env).arg("--backend").arg(backends.join(","));
    if args.vs_pytorch {
        cmd.arg("--vs-pytorch");
    }
    if args.json {
        cmd.arg("--json");
    }
    run(cmd.args(&args.bench_args))
}

fn lint(args: BackendArgs) -> Result<()> {
    let backends = if args.backends.is_empty() {
        default_test_backends()
    } else {
        args.backends
    };
    lint_with(&base_env(), &backends)
}

/// `cargo fmt --check`, then clippy with warnings as errors over every target the tests build.
fn lint_with(env: &BTreeMap<String, String>, backends: &[String]) -> Result<()> {
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
fn parse_test_result(line: &str) -> Option<[u64; 3]> {
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

/// Builds and runs one of the workspace's binaries with the default (flex) backend. Not quiet:
/// the first build compiles Burn for several minutes, and cargo's progress says so.
fn run_binary(package: &str, bin: &str, args: &[String]) -> Result<()> {
    let env = base_env();
    run(cargo(&env)
        .args([
            "run",
            "--release",
            "--locked",
            "--package",
            package,
            "--bin",
            bin,
            "--",
        ])
        .args(args))
}

/// The backend named by `--backend B` / `--backend=B` in pass-through arguments (default flex).
fn backend_arg(args: &[String]) -> Result<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--backend" {
            return it.next().cloned().context("--backend needs a value");
        }
        if let Some(v) = a.strip_prefix("--backend=") {
            return Ok(v.to_string());
        }
    }
    Ok("flex".into())
}

/// `cargo xtask train`: installs the system packages the demo needs (the dataset, fonts), builds
/// `rekindle-train` with only the asked-for backend, and runs the demo or a run.
fn train(args: Vec<String>) -> Result<()> {
    let backend = backend_arg(&args)?;
    feature_flags(std::slice::from_ref(&backend))?;
    let mut env = base_env();
    if backend == "tch" && !env.contains_key("LIBTORCH") {
        setup(&mut env, true)?;
    } else {
        system_packages()?;
    }
    let only_backend = args
        .iter()
        .all(|a| a == "--backend" || a.starts_with("--backend=") || *a == backend);
    let args: Vec<String> = if args.first().is_some_and(|a| a == "demo") {
        args
    } else if only_backend && !args.iter().any(|a| a == "--help" || a == "-h") {
        ["demo".to_string(), "--backend".into(), backend.clone()].into()
    } else {
        [vec!["run".to_string()], args].concat()
    };
    run_with_backend(&env, "rekindle-train", &backend, &args)
}

/// Builds `package`'s binary of the same name with only `backend` compiled in, and runs it.
fn run_with_backend(
    env: &BTreeMap<String, String>,
    package: &str,
    backend: &str,
    args: &[String],
) -> Result<()> {
    run(cargo(env)
        .args([
            "run",
            "--release",
            "--locked",
            "--package",
            package,
            "--bin",
            package,
        ])
        .args([
            "--no-default-features".to_string(),
            "--features".into(),
            format!("{package}/{backend}"),
            "--".into(),
        ])
        .args(args))
}

/// `cargo xtask infer` / `serve`: `rekindle-infer` with the asked-for backend only.
fn infer(command: &str, args: Vec<String>) -> Result<()> {
    let backend = backend_arg(&args)?;
    feature_flags(std::slice::from_ref(&backend))?;
    let mut env = base_env();
    if backend == "tch" && !env.contains_key("LIBTORCH") {
        setup(&mut env, true)?;
    }
    run_with_backend(
        &env,
        "rekindle-infer",
        &backend,
        &[vec![command.to_string()], args].concat(),
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Train { args } => train(args),
        Cmd::Test(a) => test(a),
        Cmd::Bench(a) => bench(a),
        Cmd::Setup => setup(&mut base_env(), true),
        Cmd::Relock => venv::relock(&root(), &cache_dir()),
        Cmd::Fixtures { force } => {
            let mut env = base_env();
            setup(&mut env, true)
                .and_then(|_| fixtures(&env, force))
                .map(|_| ())
        }
        Cmd::Lint(a) => lint(a),
        Cmd::Import { args } => run_binary(
            "rekindle-import",
            "rekindle-import",
            &[vec!["import".into()], args].concat(),
        ),
        Cmd::Schedule { args } => run_with_backend(
            &base_env(),
            "rekindle-train",
            "flex",
            &[vec!["schedule".into()], args].concat(),
        ),
        Cmd::Prune { args } => run_with_backend(
            &base_env(),
            "rekindle-train",
            "flex",
            &[vec!["prune".into()], args].concat(),
        ),
        Cmd::Infer { args } => infer("predict", args),
        Cmd::Serve { args } => infer("serve", args),
        Cmd::Export { args } => run_binary(
            "rekindle-import",
            "rekindle-import",
            &[vec!["export".into()], args].concat(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_become_model_features() {
        let flags = feature_flags(&["flex".into(), "wgpu".into()]).unwrap();
        assert_eq!(
            flags,
            [
                "--no-default-features",
                "--features",
                "rekindle-model/flex,rekindle-model/wgpu"
            ]
        );
        let err = feature_flags(&["opencl".into()]).unwrap_err().to_string();
        assert!(
            err.contains("unknown backend `opencl`") && err.contains("flex, ndarray"),
            "{err}"
        );
    }

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
