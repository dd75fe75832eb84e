//! The install steps: Debian packages, the locked venv, LibTorch; each command installs only
//! what it needs (the backend's needs come from the one list, `rekindle-backends`).

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::Result;
use rekindle_backends::Spec;

use crate::command::run;
use crate::env::{cache_dir, root, use_libtorch};
use crate::{libtorch, venv};

/// What training, tuning and evaluation runs read: the demo's Fashion-MNIST and DejaVu for the
/// plots' labels.
pub const RUN_PACKAGES: &[&str] = &["dataset-fashion-mnist", "fonts-dejavu-core"];
/// What only the tests need: PostgreSQL's server (the tune crate starts a throwaway cluster),
/// and Chromium with its WebDriver (the dashboard's tests drive a real browser).
pub const TEST_PACKAGES: &[&str] = &["postgresql", "chromium", "chromium-driver"];

/// Installs the Debian packages among `packages` that are missing (apt-get runs only then).
pub fn debian(packages: &[&str]) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    run(Command::new("bash")
        .arg(root().join("scripts/system-packages.sh"))
        .args(packages))
}

/// The Debian packages `backends` need, then `extra`, each once.
pub fn packages_for(backends: &[&Spec], extra: &[&'static str]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for p in backends
        .iter()
        .flat_map(|b| b.debian_packages())
        .chain(extra.iter().copied())
    {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Everything the tests need for `backends`, idempotently: Debian packages, the venv synced with
/// the lock, LibTorch from the venv's torch when tch is among them. With `install` off, only
/// checks the venv against the lock.
pub fn setup(env: &mut BTreeMap<String, String>, install: bool, backends: &[&Spec]) -> Result<()> {
    if install {
        let mut extra = RUN_PACKAGES.to_vec();
        extra.extend_from_slice(TEST_PACKAGES);
        debian(&packages_for(backends, &extra))?;
    }
    let python = venv::sync(&root(), &cache_dir().join("venv"), install)?;
    env.insert("REKINDLE_PYTHON".into(), python.display().to_string());
    if install && backends.iter().any(|b| b.needs_libtorch()) {
        libtorch_into(env, &python)?;
    }
    Ok(())
}

/// LibTorch laid out from the venv's torch wheel, and `env` pointed at it (unless `LIBTORCH` is
/// set already, as a user with their own LibTorch has it).
pub fn libtorch_into(env: &mut BTreeMap<String, String>, python: &std::path::Path) -> Result<()> {
    if std::env::var_os("LIBTORCH").is_some() {
        return Ok(());
    }
    let version = libtorch::torch_version(&root())?;
    let lt = libtorch::install(&cache_dir(), python, &version)?;
    use_libtorch(env, lt.display().to_string());
    Ok(())
}

/// What a command running one binary on `backend` needs: its Debian packages (plus `extra`),
/// and LibTorch for tch, nothing else (no venv sync, no PostgreSQL).
pub fn for_command(
    env: &mut BTreeMap<String, String>,
    backend: &Spec,
    extra: &[&'static str],
) -> Result<()> {
    debian(&packages_for(&[backend], extra))?;
    if backend.needs_libtorch() && !env.contains_key("LIBTORCH") {
        let python = venv::sync(&root(), &cache_dir().join("venv"), true)?;
        libtorch_into(env, &python)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flex_needs_no_package_and_wgpu_needs_vulkan() {
        let flex = rekindle_backends::parse("flex").unwrap();
        let wgpu = rekindle_backends::parse("wgpu").unwrap();
        assert!(packages_for(&[flex], &[]).is_empty());
        assert_eq!(packages_for(&[flex], RUN_PACKAGES), RUN_PACKAGES);
        let both = packages_for(&[wgpu, flex, wgpu], TEST_PACKAGES);
        assert_eq!(
            both,
            [
                "mesa-vulkan-drivers",
                "libvulkan1",
                "postgresql",
                "chromium",
                "chromium-driver"
            ]
        );
    }
}
