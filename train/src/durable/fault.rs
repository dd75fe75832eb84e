//! The crash tests' fault hook: with `REKINDLE_FAULT=POINT` in the environment, the process
//! kills itself with SIGKILL when it reaches that point, as a power cut or the OOM killer
//! would stop it (no destructor, no flush). Unset (always, outside tests), it does nothing.
//!
//! Points: `step:S` before the run's optimiser step S (1-based, counted over the whole run),
//! `checkpoint:E` half-way through writing epoch E's model checkpoint, `export` after the
//! exported model is written but before it is published as `model.bpk`.

use std::sync::OnceLock;

/// The environment variable naming the point.
pub const VAR: &str = "REKINDLE_FAULT";

/// Kills the process if `REKINDLE_FAULT` names `name` (with `n`, as `name:n`, when `n` is
/// given).
pub fn point(name: &str, n: Option<usize>) {
    let here = match n {
        Some(n) => format!("{name}:{n}"),
        None => name.to_string(),
    };
    if armed().is_some_and(|p| p == here) {
        eprintln!("{VAR}: killing this process (SIGKILL) at {here}");
        die();
    }
}

/// The point the environment names, read once.
fn armed() -> Option<&'static str> {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    POINT
        .get_or_init(|| std::env::var(VAR).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// SIGKILL to this process: nothing runs after it, not even buffered writes.
fn die() -> ! {
    #[cfg(unix)]
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    // Elsewhere (or should the signal fail): the nearest thing, no unwinding or destructors.
    std::process::abort()
}
