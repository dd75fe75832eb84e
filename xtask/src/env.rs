//! Where things live and how cargo is called: the workspace root, the cache, the environment
//! every cargo invocation gets, and backends as cargo features.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use rekindle_backends::Spec;

use crate::libtorch;

/// The backends that build from the package registries alone, in the one list's order: what
/// `cargo xtask test` compiles, checks and trains on when none are named (cuda's build downloads
/// LLVM).
pub fn offline_backends() -> Vec<&'static Spec> {
    rekindle_backends::ALL
        .iter()
        .filter(|s| s.builds_offline())
        .collect()
}

/// The backends `names` mean (names or aliases, any case; clap has split comma lists), each once,
/// in the order given; `default` when none are named.
pub fn parse_backends(
    names: &[String],
    default: impl FnOnce() -> Vec<&'static Spec>,
) -> Result<Vec<&'static Spec>> {
    if names.is_empty() {
        return Ok(default());
    }
    let mut out: Vec<&'static Spec> = Vec::new();
    for n in names {
        for spec in rekindle_backends::parse_list(n)? {
            if !out.contains(&spec) {
                out.push(spec);
            }
        }
    }
    Ok(out)
}

/// Canonical names, comma-separated (what the binaries and `REKINDLE_REQUIRE_BACKENDS` read).
pub fn joined(backends: &[&Spec]) -> String {
    backends
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(",")
}

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
    // The venv is installed without byte-code (`venv::sync`) for Python to write it on first
    // import; machines that set PYTHONDONTWRITEBYTECODE (these do, as Docker images often do)
    // stopped that, and every `import torch` compiled ~2,000 modules again: 4.5 s instead of 3,
    // torchvision 11 instead of 5 (2-core AMD EPYC). Empty is "unset" to Python; the venv and
    // its byte-code are ours, under the cache.
    env.insert("PYTHONDONTWRITEBYTECODE".into(), String::new());
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

/// Cargo flags that compile exactly `backends` into `packages` (each crate's feature of the
/// backend's name) and nothing else.
pub fn feature_flags(packages: &[&str], backends: &[&Spec]) -> Vec<String> {
    let features: Vec<String> = packages
        .iter()
        .flat_map(|p| backends.iter().map(move |b| format!("{p}/{}", b.name)))
        .collect();
    vec![
        "--no-default-features".into(),
        "--features".into(),
        features.join(","),
    ]
}

pub fn cargo(env: &BTreeMap<String, String>) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for var in run_env_of_xtask() {
        cmd.env_remove(var);
    }
    cmd.current_dir(root()).envs(env);
    cmd
}

/// The variables `cargo run` set for xtask itself (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...),
/// which must not reach the cargo xtask starts: build scripts (ring's, under torch-sys) ask to
/// rerun when they change, and `CARGO_MANIFEST_DIR` names the checkout, so every clone in
/// another folder (CI's) rebuilt LibTorch's bindings and all of Burn above them.
pub fn run_env_of_xtask() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| {
            k.starts_with("CARGO_PKG_")
                || matches!(
                    k.as_str(),
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_MANIFEST_LINKS"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_BIN_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "OUT_DIR"
                )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_gets_none_of_the_variables_cargo_run_set_for_xtask() {
        // `cargo test` sets them for this test binary as `cargo run` does for xtask.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let removed = run_env_of_xtask();
        for var in ["CARGO_MANIFEST_DIR", "CARGO_PKG_NAME", "CARGO_PKG_VERSION"] {
            assert!(removed.iter().any(|v| v == var), "{var}: {removed:?}");
        }
        assert!(
            !removed
                .iter()
                .any(|v| v == "CARGO_TARGET_DIR" || v == "CARGO_HOME")
        );
        let cmd = cargo(&BTreeMap::new());
        let unset: Vec<_> = cmd
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert!(unset.iter().any(|k| k == "CARGO_MANIFEST_DIR"), "{unset:?}");
    }

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

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn backends_become_features_of_the_packages_built() {
        let b = parse_backends(&strings(&["Vulkan", "flex"]), Vec::new).unwrap();
        assert_eq!(
            feature_flags(&["rekindle-model"], &b),
            [
                "--no-default-features",
                "--features",
                "rekindle-model/wgpu,rekindle-model/flex"
            ]
        );
        assert_eq!(
            feature_flags(&["a", "b"], &b)[2],
            "a/wgpu,a/flex,b/wgpu,b/flex"
        );
    }

    #[test]
    fn backend_lists_take_aliases_commas_and_repeats() {
        let b =
            parse_backends(&strings(&["flex,LibTorch", "torch", "lavapipe"]), Vec::new).unwrap();
        assert_eq!(joined(&b), "flex,tch,wgpu");
        let err = parse_backends(&strings(&["opencl"]), Vec::new)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown backend `opencl`") && err.contains("flex, ndarray"),
            "{err}"
        );
        assert_eq!(
            joined(&parse_backends(&[], offline_backends).unwrap()),
            "flex,ndarray,wgpu,tch"
        );
    }

    /// Cargo features cannot be generated: every crate's table must name exactly the backends of
    /// the one list, each turning on the same backend of the crates it depends on.
    #[test]
    fn every_crate_has_a_feature_per_backend_and_no_other() {
        let root = root();
        for krate in [
            "kernels", "model", "import", "train", "tune", "infer", "fuzz",
        ] {
            let text = std::fs::read_to_string(root.join(krate).join("Cargo.toml")).unwrap();
            let table = text
                .split("\n[features]\n")
                .nth(1)
                .and_then(|t| t.split("\n[").next())
                .unwrap_or_else(|| panic!("{krate}/Cargo.toml has no [features]"));
            let names: Vec<&str> = table
                .lines()
                .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
                .map(|l| l.split('=').next().unwrap().trim())
                .filter(|n| !matches!(*n, "default" | "testing"))
                .collect();
            let want: Vec<&str> = rekindle_backends::ALL.iter().map(|s| s.name).collect();
            assert_eq!(names, want, "{krate}/Cargo.toml [features]");
            for line in table
                .lines()
                .filter(|l| !l.starts_with("default") && !l.starts_with('#'))
            {
                let Some((name, deps)) = line.split_once('=') else {
                    continue;
                };
                let name = name.trim();
                for dep in deps.split('"').filter(|d| d.contains('/')) {
                    let feature = dep.rsplit('/').next().unwrap();
                    assert_eq!(feature, name, "{krate}: feature {name} turns on {dep}");
                }
            }
        }
    }
}
