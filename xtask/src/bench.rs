//! `cargo xtask bench`: the benchmark example built with exactly the backends asked for.

use std::process::Command;

use anyhow::{Result, bail};

use crate::BenchArgs;
use crate::command::run;
use crate::env::{
    base_env, cache_dir, cargo, feature_flags, joined, parse_backends, root, target_dir,
};
use crate::venv;

pub fn bench(args: BenchArgs) -> Result<()> {
    let mut env = base_env();
    if args.vs_pytorch && std::env::var_os("REKINDLE_PYTHON").is_none() {
        let python = venv::sync(&root(), &cache_dir().join("venv"), true)?;
        env.insert("REKINDLE_PYTHON".into(), python.display().to_string());
    }
    let backends = parse_backends(&args.backends.backends, || {
        vec![rekindle_backends::default_spec()]
    })?;
    // Our kernels are flex's; the other backends run Burn's own operations.
    if args.ops && joined(&backends) != "flex" {
        bail!("--ops measures rekindle's flex kernels: leave out --backend or pass flex");
    }
    for b in &backends {
        crate::install::for_command(&mut env, b, &[])?;
    }
    let features = feature_flags(&["rekindle-model"], &backends);
    // Exactly the backends asked for, built workspace-wide in the release profile users run
    // (not the test suite's, whose other backends are built at opt-level 1).
    run(cargo(&env)
        .args([
            "build",
            "--release",
            "--locked",
            "--workspace",
            "--examples",
        ])
        .args(&features))?;
    let mut cmd = if args.dashboard {
        Command::new(target_dir(&env).join("release/examples/dashboard_load"))
    } else if args.ops {
        Command::new(target_dir(&env).join("release/examples/ops"))
    } else {
        let mut cmd = Command::new(target_dir(&env).join("release/examples/bench"));
        cmd.arg("--backend").arg(joined(&backends));
        cmd
    };
    cmd.envs(&env);
    if args.vs_pytorch {
        cmd.arg("--vs-pytorch");
    }
    if args.json {
        cmd.arg("--json");
    }
    run(cmd.args(&args.bench_args))
}
