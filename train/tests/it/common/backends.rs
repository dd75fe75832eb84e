//! The backends an end-to-end test runs on: every one compiled into this test build whose
//! device opens here. Shared with infer's end-to-end tests (which include this file by path:
//! test helpers cannot be a dependency).
//!
//! `cargo xtask test` builds flex, ndarray, wgpu (lavapipe on a CPU) and tch into the test
//! binaries and names them in `REKINDLE_REQUIRE_BACKENDS`: a backend listed there that is not
//! compiled in, or whose device does not open, fails the test instead of being skipped.

use std::io::Write;
use std::sync::Once;

use rekindle_model::Backend;

/// The backends `REKINDLE_REQUIRE_BACKENDS` (comma-separated names) says must run.
pub fn required() -> Vec<Backend> {
    std::env::var("REKINDLE_REQUIRE_BACKENDS")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|e| panic!("REKINDLE_REQUIRE_BACKENDS: {e}"))
        })
        .collect()
}

/// Every backend to test on, in `Backend::ALL`'s order (flex first when compiled in). A
/// required backend that is missing or does not open panics; any other backend left out is
/// named on stderr, once per test binary, with the reason (e.g. `cuda: not compiled into this
/// test build, not run`). Written past the test harness's capture so that a passing run shows
/// it too.
pub fn runnable() -> Vec<Backend> {
    let required = required();
    let mut run = Vec::new();
    let mut skipped = Vec::new();
    for b in Backend::ALL {
        let needed = required.contains(&b);
        if !b.is_compiled() {
            assert!(
                !needed,
                "backend {b} is required (REKINDLE_REQUIRE_BACKENDS) but not compiled into this \
                 test build"
            );
            skipped.push(format!("{b}: not compiled into this test build, not run"));
            continue;
        }
        match b.device() {
            Ok(_) => run.push(b),
            Err(e) if needed => {
                panic!("backend {b} is required (REKINDLE_REQUIRE_BACKENDS) but does not open: {e}")
            }
            Err(e) => skipped.push(format!("{b}: its device does not open here ({e}), not run")),
        }
    }
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        let mut err = std::io::stderr().lock();
        for line in &skipped {
            let _ = writeln!(err, "{line}");
        }
    });
    run
}
