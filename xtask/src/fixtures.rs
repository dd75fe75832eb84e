//! The PyTorch reference fixtures, made by the locked venv and regenerated only when their
//! script or the lock changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::command::run;
use crate::env::{cache_dir, root};
use crate::venv;

/// Generates the PyTorch fixtures unless the ones on disk came from the same scripts run by the
/// same locked venv: the models (`make_fixtures.py`), the tuning catalog's answers
/// (`tuning_reference.py`), Optuna's pruning decisions (`optuna_reference.py`) and TPE (`tpe_reference.py`), the training
/// recipes' losses (`recipe_reference.py`) and ResNet-50 training steps taken as a run takes
/// them (`train_step_reference.py`).
pub fn fixtures(env: &BTreeMap<String, String>, force: bool) -> Result<PathBuf> {
    let dir = cache_dir().join("fixtures");
    let lock = std::fs::read(root().join(venv::LOCK))?;
    for (name, output) in [
        ("make_fixtures.py", "reference.json"),
        ("tuning_reference.py", "tuning.json"),
        ("optuna_reference.py", "optuna.json"),
        ("tpe_reference.py", "tpe.json"),
        ("recipe_reference.py", "recipe.json"),
        ("train_step_reference.py", "step_parity.json"),
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
            let python_env = env.iter().filter(|(k, _)| k.starts_with("PYTHON"));
            run(Command::new(python).arg(&script).arg(&dir).envs(python_env))?;
            std::fs::write(&stamp, &source)?;
        } else {
            eprintln!("{output} up to date in {}", dir.display());
        }
    }
    Ok(dir)
}
