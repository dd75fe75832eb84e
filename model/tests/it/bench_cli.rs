//! End-to-end: the benchmark binary (`examples/bench.rs`, what `cargo xtask bench` runs)
//! measures, prints machine-readable rows, and refuses bad input with a clear message.

use std::path::PathBuf;
use std::process::Command;

/// `cargo test` builds the examples next to the test binaries: target/<profile>/examples/.
fn bench_exe() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let exe = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/bench");
    assert!(exe.exists(), "{} not built", exe.display());
    exe
}

#[test]
fn json_rows_carry_every_field() {
    let out = Command::new(bench_exe())
        .args([
            "--backend",
            "flex",
            "--arch",
            "resnet18",
            "--res",
            "32",
            "--batch",
            "2",
        ])
        .args(["--mode", "inference,train", "--min-time", "0", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    for (row, mode) in rows.iter().zip(["inference", "train"]) {
        assert_eq!(row["backend"], "flex");
        assert_eq!(row["mode"], mode);
        assert_eq!(row["res"], 32);
        assert_eq!(row["batch"], 2);
        assert!(row["images_per_s"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["peak_rss_mb"].as_f64().unwrap() > 10.0, "{row}");
        assert!(row.get("ratio").is_none(), "no ratio without --vs-pytorch");
        let s = &row["step_ms"];
        let (lo, mid, hi) = (s["min"].as_f64(), s["median"].as_f64(), s["max"].as_f64());
        assert!(lo > Some(0.0) && lo <= mid && mid <= hi, "{row}");
        assert_eq!(row["warmup"], 3);
        assert_eq!(row["pool"], 4);
    }
}

/// With --vs-pytorch the committed PyTorch script runs on the same batches, both ways
/// (default layout and channels_last), and the ratio is against the faster.
#[test]
fn pytorch_runs_both_layouts_on_the_same_batches() {
    let python =
        std::env::var("REKINDLE_PYTHON").expect("REKINDLE_PYTHON (set by cargo xtask test)");
    let out = Command::new(bench_exe())
        .args(["--backend", "flex", "--arch", "resnet18", "--res", "32"])
        .args([
            "--batch",
            "2",
            "--mode",
            "train",
            "--min-time",
            "0",
            "--repeat",
            "1",
        ])
        .args([
            "--vs-pytorch",
            "--flush-denormal",
            "--json",
            "--python",
            &python,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let row: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    let f = |k: &str| row[k].as_f64().unwrap_or_else(|| panic!("{k}: {row}"));
    let (nchw, nhwc) = (
        f("pytorch_nchw_images_per_s"),
        f("pytorch_channels_last_images_per_s"),
    );
    assert!(nchw > 0.0 && nhwc > 0.0, "{row}");
    assert_eq!(f("pytorch_images_per_s"), nchw.max(nhwc), "{row}");
    assert!(
        (f("ratio") - f("images_per_s") / nchw.max(nhwc)).abs() < 1e-9,
        "{row}"
    );
    assert!(
        row["pytorch_step_ms"]["median"].as_f64() > Some(0.0),
        "{row}"
    );
    assert_eq!(row["flush_denormal"], true);
}

#[test]
fn bad_names_are_clear_errors() {
    let run = |args: &[&str]| {
        let out = Command::new(bench_exe()).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    };
    let err = run(&["--arch", "resnet51"]);
    assert!(err.contains("unknown architecture `resnet51`"), "{err}");
    let err = run(&["--backend", "opencl"]);
    assert!(err.contains("unknown backend `opencl`"), "{err}");
    if !rekindle_model::Backend::Cuda.is_compiled() {
        let err = run(&["--backend", "cuda"]);
        assert!(err.contains("cargo feature `cuda`"), "{err}");
    }
}
