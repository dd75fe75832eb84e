//! The Python venv that makes the PyTorch reference fixtures, held to a committed lock file.
//!
//! The lock (`scripts/requirements.lock`) is the whole `pip freeze --all` of a venv that passes
//! the suite, transitive packages included. Every `cargo xtask test` compares the venv's freeze
//! with it, warm or cold, so a cache made months ago cannot pass where a fresh machine fails: a
//! difference is re-synced (`pip install --no-deps -r`, extras uninstalled) or, when installing
//! is off, is an error that lists it. pip itself has no "make this venv equal that list" command
//! (`pip-sync` is a separate tool with its own resolver), hence this module.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The committed lock file, relative to the workspace root.
pub const LOCK: &str = "scripts/requirements.lock";
/// What the lock was made from: the packages we ask for by name.
pub const REQUIREMENTS: &str = "scripts/requirements.in";

/// Package name (PEP 503 normalised) -> the freeze line that pins it.
type Pins = BTreeMap<String, String>;

/// PEP 503 normalisation: `Onnx_IR` and `onnx-ir` are the same project.
fn normalise(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Reads `name==version` lines (pip freeze's format); comments and blank lines are skipped. A
/// line pinned any other way (`@ file://`, `-e`) is kept whole, so it never equals a lock pin.
fn parse(text: &str) -> Pins {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let name = l
                .split(['=', ' ', '@', '<', '>', '~', '!'])
                .next()
                .unwrap_or(l);
            (normalise(name), l.to_string())
        })
        .collect()
}

/// Lines saying how `have` departs from `want`: `+ x==1` to install, `- x==2` to remove.
fn differences(want: &Pins, have: &Pins) -> Vec<String> {
    let mut out = Vec::new();
    for (name, pin) in want {
        match have.get(name) {
            Some(h) if pin_eq(h, pin) => {}
            Some(h) => out.push(format!("  {name}: venv has `{h}`, lock says `{pin}`")),
            None => out.push(format!("  {name}: missing, lock says `{pin}`")),
        }
    }
    for (name, h) in have {
        if !want.contains_key(name) {
            out.push(format!(
                "  {name}: `{h}` is in the venv but not in the lock"
            ));
        }
    }
    out
}

/// Two `name==version` pins are equal when the versions are and the names normalise alike.
fn pin_eq(a: &str, b: &str) -> bool {
    match (a.split_once("=="), b.split_once("==")) {
        (Some((na, va)), Some((nb, vb))) => normalise(na) == normalise(nb) && va == vb,
        _ => a == b,
    }
}

fn python(venv: &Path) -> PathBuf {
    venv.join("bin/python")
}

/// `pip freeze --all` of the venv, as pip writes it.
fn freeze_text(venv: &Path) -> Result<String> {
    let out = Command::new(python(venv))
        .args(["-m", "pip", "freeze", "--all"])
        .arg("--disable-pip-version-check")
        .output()
        .with_context(|| format!("cannot run pip in {}", venv.display()))?;
    if !out.status.success() {
        bail!(
            "`pip freeze` failed in {}: {}",
            venv.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn freeze(venv: &Path) -> Result<Pins> {
    Ok(parse(&freeze_text(venv)?))
}

/// `major.minor` of a Python interpreter.
fn python_version(python: &Path) -> Option<String> {
    let out = Command::new(python)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn pip(venv: &Path) -> Command {
    let mut cmd = Command::new(python(venv));
    // No pip cache: a sync is rare, and a cold run must really be cold (the wheels are ~4 GB).
    cmd.args(["-m", "pip", "--disable-pip-version-check", "--no-cache-dir"]);
    cmd
}

/// Makes `venv` hold exactly the lock's packages (when `install`), or checks that it does, and
/// returns its Python. Warm and in sync, this costs one `pip freeze` (about a second).
pub fn sync(root: &Path, venv: &Path, install: bool) -> Result<PathBuf> {
    let lock_path = root.join(LOCK);
    let lock_text = std::fs::read_to_string(&lock_path)
        .with_context(|| format!("reading {}", lock_path.display()))?;
    let want = parse(&lock_text);
    if !python(venv).exists() {
        if !install {
            bail!("no venv at {}: run `cargo xtask setup`", venv.display());
        }
        warn_on_other_python(&lock_text);
        eprintln!("creating the Python venv at {}", venv.display());
        crate::command::run(Command::new("python3").args(["-m", "venv"]).arg(venv))?;
    }
    let diff = differences(&want, &freeze(venv)?);
    if diff.is_empty() {
        return Ok(python(venv));
    }
    let report = diff.join("\n");
    if !install {
        bail!(
            "the venv at {} is not what {LOCK} pins:\n{report}\nrun `cargo xtask setup` to re-sync it",
            venv.display()
        );
    }
    eprintln!(
        "syncing the venv at {} with {LOCK} ({} differences; torch is a few GB the first time):\n{report}",
        venv.display(),
        diff.len()
    );
    crate::command::run(
        // --no-compile: byte-compiling every module of torch and its CUDA wheels took minutes of
        // CPU in a cold run; Python compiles what it imports, once, into the venv (xtask's
        // children run with PYTHONDONTWRITEBYTECODE cleared for that: `env::base_env`).
        pip(venv)
            .args(["install", "--no-deps", "--no-compile", "-q", "-r"])
            .arg(&lock_path),
    )?;
    let extras: Vec<String> = freeze(venv)?
        .into_keys()
        .filter(|n| !want.contains_key(n))
        .collect();
    if !extras.is_empty() {
        crate::command::run(pip(venv).args(["uninstall", "-y", "-q"]).args(extras))?;
    }
    let left = differences(&want, &freeze(venv)?);
    if !left.is_empty() {
        bail!(
            "the venv at {} still differs from {LOCK} after syncing:\n{}",
            venv.display(),
            left.join("\n")
        );
    }
    // `--no-deps` trusts the lock to be complete; pip check proves it is.
    crate::command::run(pip(venv).args(["check"]))?;
    Ok(python(venv))
}

/// The lock's wheels are built for the Python minor version its header names.
fn warn_on_other_python(lock_text: &str) {
    let want = lock_text
        .lines()
        .find_map(|l| l.strip_prefix("# python "))
        .map(str::trim);
    let have = python_version(Path::new("python3"));
    if let (Some(want), Some(have)) = (want, have)
        && want != have
    {
        eprintln!(
            "warning: {LOCK} was made with Python {want}, python3 here is {have}; \
             some pins may have no wheel for it"
        );
    }
}

/// Remakes the lock: a fresh venv from `scripts/requirements.in`, frozen whole. Run it after
/// changing the requirements, then run the suite and commit both files.
pub fn relock(root: &Path, scratch: &Path) -> Result<()> {
    let venv = scratch.join("relock-venv");
    let _ = std::fs::remove_dir_all(&venv);
    crate::command::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    crate::command::run(
        pip(&venv)
            .args(["install", "-q", "-r"])
            .arg(root.join(REQUIREMENTS)),
    )?;
    crate::command::run(pip(&venv).args(["check"]))?;
    let version = python_version(&python(&venv)).unwrap_or_default();
    let text = format!(
        "# The fixtures venv, pinned whole: `pip freeze --all` of a venv made from\n\
         # requirements.in by `cargo xtask relock`. Installed with --no-deps; edit requirements.in,\n\
         # not this file.\n# python {}\n{}",
        version,
        freeze_text(&venv)?
    );
    std::fs::write(root.join(LOCK), text)?;
    std::fs::remove_dir_all(&venv)?;
    eprintln!("wrote {LOCK}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise_as_pep_503() {
        assert_eq!(normalise("Onnx_IR"), "onnx-ir");
        assert_eq!(normalise("zope.interface"), "zope-interface");
        assert_eq!(normalise("a-_.b"), "a-b");
    }

    #[test]
    fn freeze_against_lock() {
        let lock = parse("# python 3.11\nonnx-ir==0.1.12\nnumpy==2.2.6\ntorch==2.9.0\n");
        let venv = parse("numpy==2.2.6\nonnx_ir==1.1.0\nsix==1.16.0\ntorch @ file:///w.whl\n");
        let diff = differences(&lock, &venv).join("\n");
        assert!(diff.contains("onnx-ir: venv has `onnx_ir==1.1.0`, lock says `onnx-ir==0.1.12`"));
        assert!(diff.contains("six: `six==1.16.0` is in the venv but not in the lock"));
        assert!(diff.contains("torch: venv has `torch @ file:///w.whl`"));
        assert!(!diff.contains("numpy"), "{diff}");
        let same = parse("Onnx_IR==0.1.12\nnumpy==2.2.6\ntorch==2.9.0");
        assert!(differences(&lock, &same).is_empty());
        assert_eq!(differences(&lock, &Pins::new()).len(), 3);
    }
}
