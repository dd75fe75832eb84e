//! Running a child command with it shown first (`+ cmd args`), as every step of xtask does.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Runs `cmd` to the end, shown first; fails, naming it, when it cannot start or fails.
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

/// `cmd` as a shell line (program and arguments, space-separated).
pub fn render(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
