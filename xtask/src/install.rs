//! The install step of `cargo xtask test` and `setup`: Debian packages, the locked venv,
//! LibTorch.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::Result;

use crate::env::{cache_dir, root, run, use_libtorch};
use crate::{libtorch, venv};

/// The Debian packages (only those missing; apt-get runs only then).
pub fn system_packages() -> Result<()> {
    run(Command::new("bash").arg(root().join("scripts/system-packages.sh")))
}

/// Everything the tests need, idempotently: Debian packages, the venv synced with the lock,
/// LibTorch from the venv's torch. With `install` off, only checks the venv against the lock.
pub fn setup(env: &mut BTreeMap<String, String>, install: bool) -> Result<()> {
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
