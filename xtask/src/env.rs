//! Where things live and how cargo is called: the workspace root, the cache, the environment
//! every cargo invocation gets, and backends as cargo features.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::libtorch;

/// Backends `cargo xtask test` runs when none are named: every one that runs on a CPU.
pub const CPU_BACKENDS: &[&str] = &["flex", "ndarray", "wgpu", "tch"];
/// Every backend a build can compile in.
pub const ALL_BACKENDS: &[&str] = &["flex", "ndarray", "wgpu", "tch", "cuda"];

/// The workspace this `cargo xtask` was run in.
///
/// `cargo run` names xtask's folder at run time; the folder it was compiled in is only the
/// fallback. They differ when checkouts share a target folder (`REKINDLE_CACHE`'s): cargo may
/// run an xtask binary another checkout built from the same sources, whose compiled-in folder
/// can be gone (CI's clone), and every command would then start in it and fail.
pub fn root() -> PathBuf {
    root_from(std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from))
}

/// The workspace holding `run_time` if that is an xtask folder, else the compiled-in one.
fn root_from(run_time: Option<PathBuf>) -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR"));
    run_time
        .filter(|dir| is_xtask(dir))
        .unwrap_or_else(|| compiled.to_path_buf())
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Whether `dir` holds this workspace's xtask package (and not, say, a test's own crate).
fn is_xtask(dir: &Path) -> bool {
    dir.file_name().is_some_and(|n| n == "xtask")
        && std::fs::read_to_string(dir.join("Cargo.toml"))
            .is_ok_and(|t| t.lines().any(|l| l.trim() == "name = \"xtask\""))
}

pub fn cache_dir() -> PathBuf {
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
pub fn base_env() -> BTreeMap<String, String> {
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

/// The cargo target directory the environment names (xtask's default: under the cache).
pub fn target_dir(env: &BTreeMap<String, String>) -> PathBuf {
    env.get("CARGO_TARGET_DIR")
        .cloned()
        .or_else(|| std::env::var("CARGO_TARGET_DIR").ok())
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Points `tch` builds at LibTorch and puts its libraries on the loader path: the binaries
/// burn-tch links carry no rpath.
pub fn use_libtorch(env: &mut BTreeMap<String, String>, libtorch: String) {
    let ld = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    env.insert("LD_LIBRARY_PATH".into(), format!("{libtorch}/lib:{ld}"));
    env.insert("LIBTORCH".into(), libtorch);
}

/// Checks backend names and turns them into cargo feature flags for the workspace build.
pub fn feature_flags(backends: &[String]) -> Result<Vec<String>> {
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

pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", render(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", render(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", render(cmd));
    }
    Ok(())
}

pub fn render(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn cargo(env: &BTreeMap<String, String>) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root()).envs(env);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_the_checkout_cargo_ran_xtask_in() {
        let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        // Another checkout sharing the target folder: its xtask folder wins.
        let other = std::env::temp_dir().join(format!("xtask-root-{}", std::process::id()));
        let xtask = other.join("xtask");
        std::fs::create_dir_all(&xtask).unwrap();
        std::fs::write(xtask.join("Cargo.toml"), "[package]\nname = \"xtask\"\n").unwrap();
        assert_eq!(root_from(Some(xtask.clone())), other);
        // A test's own crate (`cargo test` sets its folder), a foreign package, or nothing.
        assert_eq!(root_from(Some(compiled.join("infer"))), compiled);
        std::fs::write(xtask.join("Cargo.toml"), "[package]\nname = \"other\"\n").unwrap();
        assert_eq!(root_from(Some(xtask)), compiled);
        std::fs::remove_dir_all(&other).unwrap();
        assert_eq!(root_from(None), compiled);
        assert_eq!(root(), compiled);
    }

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
}
