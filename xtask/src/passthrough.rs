//! Commands that run one of the workspace's binaries: built with only the asked-for backend,
//! then exec'd in xtask's place, so signals (Ctrl-C, `kill -TERM`, `docker stop`, systemd) reach
//! the binary itself and its graceful shutdown runs. `--help` is the binary's own.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use rekindle_backends::Spec;

use crate::command::run;
use crate::env::{base_env, cargo, feature_flags, target_dir};
use crate::install;

/// The packages whose binaries the README's tour runs (import, train, eval, tune, infer, serve,
/// export, dashboard): built in one cargo invocation with one feature set, so that the whole tour compiles
/// Burn once per backend instead of once per command (each package alone unifies Burn's features
/// differently, and cargo builds each set apart).
pub const TOUR: &[&str] = &[
    "rekindle-import",
    "rekindle-train",
    "rekindle-tune",
    "rekindle-infer",
    "rekindle-dashboard",
];

/// One pass-through: `cargo xtask NAME ARGS` runs `PACKAGE SUBCOMMAND ARGS`.
pub struct PassThrough {
    /// The xtask command.
    pub name: &'static str,
    /// The workspace package, whose binary has the same name.
    pub package: &'static str,
    /// The binary's subcommand.
    pub subcommand: &'static str,
    /// One line for `cargo xtask --help`.
    pub about: &'static str,
}

/// Every pass-through command, in the order `cargo xtask --help` lists them.
pub const COMMANDS: &[PassThrough] = &[
    PassThrough {
        name: "train",
        package: "rekindle-train",
        subcommand: "run",
        about: "fine-tune a ResNet; with no arguments (or `demo`), the transfer-learning demo",
    },
    PassThrough {
        name: "schedule",
        package: "rekindle-train",
        subcommand: "schedule",
        about: "a config's learning rate per step and parameter group, without training",
    },
    PassThrough {
        name: "lr-find",
        package: "rekindle-train",
        subcommand: "lr-find",
        about: "learning-rate range test: a sweep, a PNG and a suggested rate",
    },
    PassThrough {
        name: "eval",
        package: "rekindle-train",
        subcommand: "eval",
        about: "evaluation report of a model file on labelled images: metrics, confusion, calibration",
    },
    PassThrough {
        name: "prune",
        package: "rekindle-train",
        subcommand: "prune",
        about: "one-shot magnitude pruning of a saved model",
    },
    PassThrough {
        name: "tune",
        package: "rekindle-tune",
        subcommand: "run",
        about: "hyper-parameter search: `tune STUDY.toml [--workers N]`",
    },
    PassThrough {
        name: "import",
        package: "rekindle-import",
        subcommand: "import",
        about: "pretrained weights (.pth/.pt, .safetensors, .onnx) -> a rekindle model file",
    },
    PassThrough {
        name: "export",
        package: "rekindle-import",
        subcommand: "export",
        about: "a rekindle model file -> torchvision-layout safetensors, or an ONNX graph (-o m.onnx)",
    },
    PassThrough {
        name: "infer",
        package: "rekindle-infer",
        subcommand: "predict",
        about: "predict with a model file from the command line",
    },
    PassThrough {
        name: "serve",
        package: "rekindle-infer",
        subcommand: "serve",
        about: "serve a model file over HTTP",
    },
    PassThrough {
        name: "dashboard",
        package: "rekindle-dashboard",
        subcommand: "serve",
        about: "a live web dashboard of the runs, studies and reports under the paths: `dashboard [PATH...]`",
    },
    PassThrough {
        name: "fuzz",
        package: "rekindle-fuzz",
        subcommand: "run",
        about: "fuzz importers, model files, images, configs and requests: `fuzz [TARGET] [--seconds N]`",
    },
];

/// The pass-through table for `cargo xtask --help`.
pub fn help() -> String {
    let mut s = String::from(
        "Commands that run a rekindle binary (`cargo xtask NAME --help` shows its options; \
         `--backend B` picks the backend compiled in, flex by default):\n",
    );
    for c in COMMANDS {
        s += &format!(
            "  {:<9} {} ({} {})\n",
            c.name, c.about, c.package, c.subcommand
        );
    }
    s
}

/// The backend named by `--backend B` / `--backend=B` in pass-through arguments, as written
/// (default flex).
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

/// `train` with nothing but a backend is the demo: the README's first command.
fn train_args(args: &[String], backend: &str) -> Vec<String> {
    let only_backend = args
        .iter()
        .all(|a| a == "--backend" || a.starts_with("--backend=") || a == backend);
    if args.first().is_some_and(|a| a == "demo") {
        args.to_vec()
    } else if only_backend {
        ["demo".to_string(), "--backend".into(), backend.into()].into()
    } else {
        [vec!["run".to_string()], args.to_vec()].concat()
    }
}

/// `tune STUDY ...` runs a study and `fuzz [TARGET]...` fuzzes; the subcommands in `own`
/// (`tune report|demo`, `fuzz replay|list`) are the binary's, passed as they are.
fn run_unless_own(args: &[String], own: &[&str]) -> Vec<String> {
    match args.first().map(String::as_str) {
        Some(a) if own.contains(&a) || matches!(a, "--help" | "-h" | "help") => args.to_vec(),
        _ => [vec!["run".to_string()], args.to_vec()].concat(),
    }
}

/// Runs `cargo xtask NAME ARGS...` for a table entry; returns only on failure.
pub fn run_command(args: &[String]) -> Result<()> {
    let (name, rest) = args.split_first().context("no command")?;
    let Some(cmd) = COMMANDS.iter().find(|c| c.name == name) else {
        let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        bail!(
            "unknown command `{name}`; `cargo xtask --help` lists them (runs a binary: {})",
            names.join(", ")
        );
    };
    let backend = backend_arg(rest)?;
    let spec = rekindle_backends::parse(&backend)?;
    let mut env = base_env();
    let help = rest.iter().any(|a| a == "--help" || a == "-h");
    // Runs read the dataset and label plots with DejaVu; the backend may need its own (apt-get
    // runs only for what is missing, and says so).
    let reads_data = matches!(cmd.name, "train" | "tune" | "lr-find" | "eval") && !help;
    let extra = if reads_data {
        install::RUN_PACKAGES
    } else {
        &[]
    };
    install::for_command(&mut env, spec, extra)?;
    let args = if cmd.name == "tune" {
        run_unless_own(rest, &["report", "demo"])
    } else if cmd.name == "fuzz" {
        run_unless_own(rest, &["replay", "list"])
    } else if cmd.name == "train" && !help {
        train_args(rest, &backend)
    } else {
        [vec![cmd.subcommand.to_string()], rest.to_vec()].concat()
    };
    let binary = build(&env, cmd.package, spec)?;
    let err = Command::new(&binary).args(&args).envs(&env).exec();
    Err(err).with_context(|| format!("cannot start {}", binary.display()))
}

/// Builds `package`'s binary with `backend` alone (with the whole tour's, see [`TOUR`]) and
/// returns its path. `REKINDLE_BIN_DIR` names a folder of binaries built already (the test
/// suite's, with every backend), used as they are.
fn build(env: &BTreeMap<String, String>, package: &str, backend: &Spec) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("REKINDLE_BIN_DIR") {
        return Ok(PathBuf::from(dir).join(package));
    }
    let packages = if TOUR.contains(&package) {
        TOUR
    } else {
        std::slice::from_ref(&package)
    };
    let mut cmd = cargo(env);
    cmd.args(["build", "--release", "--locked", "--bins"]);
    for p in packages {
        cmd.args(["--package", p]);
    }
    run(cmd.args(feature_flags(packages, &[backend])))?;
    Ok(target_dir(env).join("release").join(package))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn train_without_options_is_the_demo() {
        assert_eq!(
            train_args(&[], "flex"),
            strings(&["demo", "--backend", "flex"])
        );
        assert_eq!(
            train_args(&strings(&["--backend", "wgpu"]), "wgpu"),
            strings(&["demo", "--backend", "wgpu"])
        );
        assert_eq!(
            train_args(&strings(&["--config", "a.toml"]), "flex"),
            strings(&["run", "--config", "a.toml"])
        );
        assert_eq!(
            train_args(&strings(&["demo", "--recipes"]), "flex"),
            strings(&["demo", "--recipes"])
        );
    }

    #[test]
    fn tune_and_fuzz_run_unless_a_subcommand_is_named() {
        let tune = ["report", "demo"];
        assert_eq!(
            run_unless_own(&strings(&["s.toml", "--workers", "2"]), &tune),
            strings(&["run", "s.toml", "--workers", "2"])
        );
        assert_eq!(
            run_unless_own(&strings(&["report", "d"]), &tune),
            strings(&["report", "d"])
        );
        let fuzz = ["replay", "list"];
        assert_eq!(
            run_unless_own(&strings(&["onnx", "--seconds", "5"]), &fuzz),
            strings(&["run", "onnx", "--seconds", "5"])
        );
        assert_eq!(run_unless_own(&strings(&[]), &fuzz), strings(&["run"]));
        assert_eq!(
            run_unless_own(&strings(&["list"]), &fuzz),
            strings(&["list"])
        );
    }

    #[test]
    fn backend_from_arguments() {
        assert_eq!(
            backend_arg(&strings(&["x", "--backend", "tch"])).unwrap(),
            "tch"
        );
        assert_eq!(backend_arg(&strings(&["--backend=wgpu"])).unwrap(), "wgpu");
        assert_eq!(backend_arg(&strings(&["--model", "m"])).unwrap(), "flex");
        assert!(backend_arg(&strings(&["--backend"])).is_err());
        // What the binary is built with: the alias's backend, in any case.
        for (written, built) in [("vulkan", "wgpu"), ("LibTorch", "tch"), ("FLEX", "flex")] {
            let arg = backend_arg(&strings(&["--model", "m", "--backend", written])).unwrap();
            assert_eq!(rekindle_backends::parse(&arg).unwrap().name, built);
        }
    }

    #[test]
    fn the_tour_is_one_build_with_one_feature_set() {
        let flex = rekindle_backends::parse("flex").unwrap();
        let flags = feature_flags(TOUR, &[flex]);
        assert_eq!(
            flags[2],
            "rekindle-import/flex,rekindle-train/flex,rekindle-tune/flex,rekindle-infer/flex,\
             rekindle-dashboard/flex"
        );
        for c in COMMANDS.iter().filter(|c| c.package != "rekindle-fuzz") {
            assert!(TOUR.contains(&c.package), "{} is built apart", c.name);
        }
    }

    #[test]
    fn every_command_is_listed_once() {
        let help = help();
        for c in COMMANDS {
            assert_eq!(COMMANDS.iter().filter(|d| d.name == c.name).count(), 1);
            assert!(help.contains(c.about), "{help}");
        }
    }
}
