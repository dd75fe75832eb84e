//! The fuzzer end to end: every target survives a short seeded run, every input that ever
//! crashed a target (fuzz/regressions) and every hostile file we keep (fuzz/hostile) ends in
//! success or a clear error, and the harness itself reports a panic, an allocation past the
//! limit and a hang, each with its input saved.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXE: &str = env!("CARGO_BIN_EXE_rekindle-fuzz");

fn fuzz(args: &[&str], out: &Path) -> Output {
    let output = Command::new(EXE)
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run rekindle-fuzz");
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn reports(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).expect("the JSON report");
    serde_json::from_str(&text).expect("a JSON list of reports")
}

/// Inputs per target in the short run. A count, not seconds: the same work on every machine
/// (at 3 seconds a target, the bpk target, whose inputs are whole model files, ran 2 inputs on a
/// loaded 2-core EPYC and the test failed), and past the seeds of every target (request has 11).
const SHORT_RUNS: u64 = 20;

#[test]
fn every_target_survives_a_short_run() {
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("report.json");
    let json_arg = json.to_string_lossy().into_owned();
    let runs = SHORT_RUNS.to_string();
    // The seconds only stop a run that hangs without the harness noticing.
    let o = fuzz(
        &[
            "run",
            "--runs",
            &runs,
            "--seconds",
            "300",
            "--seed",
            "18",
            "--json",
            &json_arg,
        ],
        out.path(),
    );
    let reports = reports(&json);
    let names: Vec<&str> = reports
        .iter()
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "pth",
            "pth-legacy",
            "safetensors",
            "onnx",
            "bpk",
            "png",
            "jpeg",
            "config",
            "request"
        ]
    );
    for r in &reports {
        // Every target ran its count, got past its seeds into mutated inputs, and saw more
        // than one outcome.
        assert_eq!(r["execs"].as_u64().unwrap(), SHORT_RUNS, "{r}");
        assert!(r["seeds"].as_u64().unwrap() < SHORT_RUNS, "{r}");
        assert!(r["behaviours"].as_u64().unwrap() >= 2, "{r}");
        assert_eq!(r["crashes"].as_array().unwrap().len(), 0, "{r}");
    }
    assert!(o.status.success());
}

/// A replay worker that aborts is replaced: every file gets its own line, the one it died on
/// named as a crash, and the run fails; panics are counted without a restart.
#[test]
fn a_replay_names_each_file_that_ended_its_worker() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let path = dir.path().join(n);
            std::fs::write(&path, b"canary").unwrap();
            path
        })
        .collect();
    for (target, outcome) in [("canary-panic", "panic"), ("canary-alloc", "crash")] {
        let o = Command::new(EXE)
            .args(["replay", "--target", target, "--max-mb", "512"])
            .args(&files)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        let lines: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
            .collect();
        let named: Vec<&str> = lines.iter().map(|l| l["file"].as_str().unwrap()).collect();
        let want: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        assert_eq!(named, want, "{target}: {stdout}");
        assert!(
            lines.iter().all(|l| l["outcome"] == outcome),
            "{target}: {stdout}"
        );
        assert_eq!(o.status.code(), Some(1), "{target}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("3 inputs replayed, 3 crashed"),
            "{target}: {err}"
        );
    }
}

/// Every saved crash and hostile file ends in success or a clear error, one report line each,
/// and each hostile file below is refused by the check written for it, not by luck further on.
/// One replay serves both: the train side decodes the 144-megapixel PNG bomb as PIL would (it
/// is under training's limit), 12 s a replay here.
#[test]
fn saved_crashes_and_hostile_files_end_in_a_clear_error_each_for_its_reason() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dirs = ["regressions", "hostile"].map(|d| root.join(d));
    let o = Command::new(EXE)
        .arg("replay")
        .args(&dirs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    for dir in &dirs {
        let files = walk(dir);
        assert!(files > 0, "{} holds no files", dir.display());
        let replayed = lines
            .iter()
            .filter(|l| Path::new(l["file"].as_str().unwrap()).starts_with(dir))
            .count();
        assert_eq!(replayed, files, "one line per file in {}", dir.display());
    }
    for l in &lines {
        let outcome = l["outcome"].as_str().unwrap();
        assert!(outcome == "error" || outcome == "ok", "{l}");
    }
    assert!(o.status.success());
    let hostile = root.join("hostile");
    let expected = [
        (
            "onnx/external_etc_passwd.onnx",
            "outside the graph's folder",
        ),
        ("onnx/external_dotdot.onnx", "outside the graph's folder"),
        (
            "onnx/huge_dims.onnx",
            "more than the 4 GiB a weight may hold",
        ),
        (
            "onnx/dims_overflow.onnx",
            "more than the 4 GiB a weight may hold",
        ),
        ("onnx/identity_cycle.onnx", "(a cycle?)"),
        ("onnx/conv_without_weight.onnx", "it needs at least 2"),
        ("pth/huge_storage.pth", "would materialize"),
        ("pth/storage_shorter_than_view.pth", "needs 127 elements"),
        // Read as data, never run: the reader finds a function where weights should be.
        ("pth/os_system.pth", "Expected a dictionary"),
        ("safetensors/huge_shape.safetensors", "invalid shape"),
        ("safetensors/shape_overflow.safetensors", "overflow"),
        ("png/100000x100000.png", "over the limit"),
        ("png/bomb_12000x12000.png", "over the limit"),
        ("config/nan_lr.toml", "train.lr must be in (0, 1], got NaN"),
        ("config/nested_arrays.toml", "recursion"),
        ("request/many_headers.http", "431"),
        ("request/token_prefix.http", "401"),
        ("request/multipart_no_boundary.http", "400"),
        ("request/top_k_overflow.http", "400"),
    ];
    for (file, reason) in expected {
        let path = hostile.join(file);
        let line = lines
            .iter()
            .find(|l| Path::new(l["file"].as_str().unwrap()) == path)
            .unwrap_or_else(|| panic!("no outcome for {file}: {stdout}"));
        assert_eq!(line["outcome"], "error", "{line}");
        assert!(
            line["message"].as_str().unwrap().contains(reason),
            "{file}: {line}"
        );
    }
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            if p.is_dir() {
                walk(&p)
            } else {
                usize::from(p.extension().is_none_or(|e| e != "txt" && e != "md"))
            }
        })
        .sum()
}

#[test]
fn the_harness_reports_a_panic_an_allocation_and_a_hang_with_the_input() {
    let out = tempfile::tempdir().unwrap();
    for (target, kind, timeout) in [
        ("canary-panic", "panic", "10"),
        ("canary-alloc", "memory", "10"),
        ("canary-hang", "hang", "0.5"),
    ] {
        let json = out.path().join(format!("{target}.json"));
        let json_arg = json.to_string_lossy().into_owned();
        let o = fuzz(
            &[
                "run",
                target,
                "--seconds",
                "1",
                "--timeout",
                timeout,
                "--max-mb",
                "512",
                "--json",
                &json_arg,
            ],
            out.path(),
        );
        assert_eq!(o.status.code(), Some(1), "{target} must fail the run");
        let crashes = reports(&json)[0]["crashes"].as_array().unwrap().clone();
        // One bug is one crash, however often it was hit.
        assert_eq!(crashes.len(), 1, "{target}: {crashes:?}");
        assert_eq!(crashes[0]["kind"], kind, "{target}: {crashes:?}");
        let input = crashes[0]["input"].as_str().unwrap();
        assert_eq!(std::fs::read(input).unwrap(), b"canary", "{target}");
    }
}

#[test]
fn bad_arguments_are_refused_by_name() {
    let out = tempfile::tempdir().unwrap();
    let o = fuzz(&["run", "nonesuch"], out.path());
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nonesuch") && err.contains("safetensors"),
        "{err}"
    );
    for (bad, name) in [("--seconds=-1", "--seconds"), ("--runs=0", "--runs")] {
        let o = fuzz(&["run", "png", bad], out.path());
        assert_ne!(o.status.code(), Some(0), "{bad}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(name), "{bad}: {err}");
    }
}

/// The request target's seeds are what it says: requests the service answers with a 2xx
/// (`/v1` and the Open Inference Protocol alike), so mutations start from accepted requests.
#[test]
fn every_request_seed_is_answered_2xx() {
    let dir = tempfile::tempdir().unwrap();
    let service = rekindle_fuzz::request::Service::start(dir.path()).unwrap();
    let seeds = service.seeds();
    assert!(seeds.len() >= 11, "{}", seeds.len());
    for seed in &seeds {
        let head = String::from_utf8_lossy(&seed[..seed.len().min(60)]).into_owned();
        assert_eq!(service.send(seed), Ok(()), "{head}");
    }
}
