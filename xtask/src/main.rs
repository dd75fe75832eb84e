//! `cargo xtask`: rekindle's entry point. Maps `--backend` to cargo features so that a build
//! compiles only the backends asked for, installs what the tests need, runs the suite, and
//! passes the other commands on to the workspace's binaries.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod bench;
mod command;
mod env;
mod fixtures;
mod install;
mod libtorch;
#[cfg(test)]
mod module_cycles;
mod passthrough;
mod runner;
mod suite;
mod test;
mod venv;

#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "rekindle's tasks", after_help = passthrough::help())]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
    /// A pass-through to one of the workspace's binaries (listed below).
    #[command(external_subcommand)]
    Binary(Vec<String>),
}

/// The backends a build compiles in.
#[derive(Args)]
pub struct BackendArgs {
    /// Backends to compile in, comma-separated (names or aliases, any case): flex, ndarray, wgpu
    /// (vulkan, lavapipe), tch (libtorch, torch), cuda.
    #[arg(long = "backend", alias = "backends", value_delimiter = ',')]
    pub backends: Vec<String>,
}

/// `cargo xtask test`'s options.
#[derive(Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub backends: BackendArgs,
    /// Skip the install step (apt, LibTorch, venv sync): the venv must still match
    /// scripts/requirements.lock, or the run stops and lists the differences.
    #[arg(long)]
    pub no_install: bool,
    /// The fast loop: run only these crates' tests (repeatable), after the same build as the
    /// whole suite's (so nothing is rebuilt for it); no backend matrix.
    #[arg(long, short = 'p', value_name = "CRATE")]
    pub package: Vec<String>,
    /// Also write cargo's HTML report of the test build's compile times
    /// (`cargo-timings/cargo-timing.html` in the target folder), to see where a build's time goes.
    #[arg(long)]
    pub timings: bool,
    /// Test executables run at once (each runs its own tests on several threads).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub jobs: usize,
    /// Arguments for each test executable (after `--`): a name filter, `--nocapture`, ...
    #[arg(last = true)]
    pub test_args: Vec<String>,
}

/// `cargo xtask bench`'s options.
#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub backends: BackendArgs,
    /// Measure PyTorch in the same run and print the ratio.
    #[arg(long)]
    pub vs_pytorch: bool,
    /// One JSON object per row.
    #[arg(long)]
    pub json: bool,
    /// Per operation instead of per model: every distinct ResNet-50 convolution (forward and both
    /// gradients) and BatchNorm on flex, GFLOP/s and share of this machine's peak.
    #[arg(long)]
    pub ops: bool,
    /// The dashboard's page loads at scale (1,000 trials, 100,000 logged steps) instead.
    #[arg(long, conflicts_with_all = ["vs_pytorch", "ops"])]
    pub dashboard: bool,
    /// More options for the benchmark (after `--`): --mode, --res, --batch, --min-time, --arch
    /// (with --ops: --res, --batch, --min-time).
    #[arg(last = true)]
    pub bench_args: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Test(a) => test::test(a),
        Cmd::Bench(a) => bench::bench(a),
        Cmd::Setup => install::setup(&mut env::base_env(), true, &env::offline_backends()),
        Cmd::Relock => venv::relock(&env::root(), &env::cache_dir()),
        Cmd::Fixtures { force } => {
            let mut env = env::base_env();
            install::setup(&mut env, true, &[])
                .and_then(|_| fixtures::fixtures(&env, force))
                .map(|_| ())
        }
        Cmd::Lint(a) => test::lint(a),
        Cmd::Binary(args) => passthrough::run_command(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
