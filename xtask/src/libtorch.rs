//! LibTorch for the `tch` backend, laid out from the fixtures venv's torch wheel.
//!
//! torch-sys 0.22 wants torch 2.9.0, and PyPI is the only place we can reach (the libtorch zip on
//! pytorch.org is not). The wheel's `torch/` folder is a complete LibTorch (`lib/`, `include/`):
//! hard links keep it free on disk, and the CUDA libraries are left out so that burn-tch links
//! the CPU build (libtorch_cpu still finds cudart/cupti through `../nvidia`, kept beside it).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Libraries that would make burn-tch link CUDA.
const CUDA_LIBS: &[&str] = &[
    "libtorch_cuda.so",
    "libtorch_cuda_linalg.so",
    "libc10_cuda.so",
    "libtorch_nvshmem.so",
    "libcaffe2_nvrtc.so",
];
/// Bumped when the layout below changes, so existing copies are laid out again.
const LAYOUT: &str = "layout 2";

/// torch's version as the lock pins it: the LibTorch we lay out is that wheel.
pub fn torch_version(root: &Path) -> Result<String> {
    let lock = root.join(crate::venv::LOCK);
    let text =
        std::fs::read_to_string(&lock).with_context(|| format!("reading {}", lock.display()))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("torch=="))
        .map(str::to_string)
        .with_context(|| format!("{} pins no torch", lock.display()))
}

/// Where LibTorch lives for a torch version: `<cache>/libtorch-<version>/torch`.
pub fn dir(cache: &Path, version: &str) -> PathBuf {
    cache.join(format!("libtorch-{version}")).join("torch")
}

/// Lays LibTorch out from the venv's site-packages unless a copy of this version and layout is
/// there; returns its `torch/` folder (what `LIBTORCH` names).
pub fn install(cache: &Path, python: &Path, version: &str) -> Result<PathBuf> {
    let torch = dir(cache, version);
    let top = torch.parent().context("libtorch dir")?.to_path_buf();
    let marker = top.join(".rekindle");
    let want = format!("torch {version}, {LAYOUT}");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == want) {
        return Ok(torch);
    }
    eprintln!("laying out LibTorch {version} at {}", top.display());
    let out = Command::new(python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .context("asking the venv for its site-packages")?;
    let site = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !site.join("torch/lib").is_dir() {
        bail!("no torch in {}: the venv is incomplete", site.display());
    }
    let _ = std::fs::remove_dir_all(&top);
    std::fs::create_dir_all(top.join("nvidia"))?;
    link_tree(&site.join("torch"), &torch)?;
    for d in ["cuda_runtime", "cuda_cupti"] {
        link_tree(&site.join("nvidia").join(d), &top.join("nvidia").join(d))?;
    }
    for f in CUDA_LIBS {
        let _ = std::fs::remove_file(torch.join("lib").join(f));
    }
    std::fs::write(&marker, want)?;
    Ok(torch)
}

/// `cp -al`, falling back to a real copy across filesystems (a hard link cannot cross them).
fn link_tree(from: &Path, to: &Path) -> Result<()> {
    let linked = Command::new("cp")
        .arg("-al")
        .args([from, to])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !linked {
        let _ = std::fs::remove_dir_all(to);
        crate::command::run(Command::new("cp").arg("-a").args([from, to]))?;
    }
    Ok(())
}
