//! End-to-end tests through the `rekindle-tune` binary: several worker processes sharing one
//! SQLite study, a worker killed mid-trial whose trial another resumes, and bad input refused
//! before any trial starts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rekindle_train::TrainConfig;
use rekindle_tune::{Storage, Store, TrialState};

#[path = "../../../train/tests/it/common/images.rs"]
mod images;
use images::image_folder;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rekindle-tune"))
}

/// A study over a random ResNet-18 on 16x16 images (12 per class and epoch): `trials` trials
/// of `epochs` epochs, the learning rate from `lrs` (5.0 is refused by the train config),
/// heartbeats every second.
fn study(tmp: &Path, trials: usize, epochs: usize, lrs: &str, pruner: &str) -> PathBuf {
    let data = tmp.join("data");
    if !data.exists() {
        image_folder(&data, 12 * epochs as u32);
    }
    let text = format!(
        r#"[study]
trials = {trials}
sampler = "random"
pruner = "{pruner}"
seed = 11
heartbeat = 1

[base.model]
source = "random"
arch = "resnet18"
[base.data]
kind = "folder"
root = "{}"
val_split = 0.25
resize = 16
crop = 16
[base.train]
epochs = {epochs}
batch_size = 8
seed = 3

[space]
"train.lr" = {{ choice = {lrs} }}
"optim.name" = {{ choice = ["sgd", "adamw"] }}
"optim.momentum" = {{ uniform = [0.5, 0.9], when = {{ "optim.name" = "sgd" }} }}
"#,
        data.display()
    );
    let path = tmp.join("study.toml");
    std::fs::write(&path, text).expect("study file");
    path
}

fn worker(study: &Path, dir: &Path, workers: usize) -> Command {
    let mut c = bin();
    c.arg("run")
        .arg(study)
        .arg("--dir")
        .arg(dir)
        .arg("--workers")
        .arg(workers.to_string());
    c
}

/// Three `tune` processes of one worker each on the same study, side by side, to the end.
fn three_workers(study: &Path, dir: &Path, args: &[&str]) -> Vec<Output> {
    let children: Vec<Child> = (0..3)
        .map(|_| {
            worker(study, dir, 1)
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a worker")
        })
        .collect();
    children.into_iter().map(finished).collect()
}

fn finished(child: Child) -> Output {
    let out = child.wait_with_output().expect("worker");
    assert!(
        out.status.success(),
        "worker failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The JSON summary on the last stdout line.
fn summary(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a summary line");
    serde_json::from_str(last).expect("JSON")
}

/// The validation rows (epoch, loss, accuracy) of a run directory's epoch log.
fn valid_rows(run: &Path) -> Vec<(usize, f64, f64)> {
    std::fs::read_to_string(run.join("metrics-epochs.csv"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(",valid,"))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let num = |i: usize| f[i].parse::<f64>().expect("number");
            (num(0) as usize, num(2), num(3))
        })
        .collect()
}

#[test]
fn three_worker_processes_share_a_study_with_no_lost_or_duplicated_trial() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let study = study(tmp.path(), 9, 2, "[0.01, 0.05, 5.0]", "median");
    let dir = tmp.path().join("study");
    let outs = three_workers(&study, &dir, &[]);
    let store = Store::open(&Storage::sqlite(dir.join("study.db"))).expect("store");
    let trials = store.trials().expect("trials");
    assert_eq!(
        trials.iter().map(|t| t.id).collect::<Vec<_>>(),
        (0..9).collect::<Vec<_>>()
    );
    let workers: std::collections::BTreeSet<&str> =
        trials.iter().map(|t| t.worker.as_str()).collect();
    assert!(workers.len() > 1, "the work was shared: {workers:?}");
    let mut invalid = 0;
    for t in &trials {
        let run = dir.join("trials").join(format!("{:04}", t.id));
        let lr = t.point["train.lr"].as_float().expect("lr");
        if lr == 5.0 {
            // An impossible config is recorded with the train config's own reason, untrained.
            assert_eq!(t.state, TrialState::Invalid, "{t:?}");
            assert!(
                t.reason.as_deref().is_some_and(|r| r.contains("train.lr")),
                "{t:?}"
            );
            assert!(!run.join("metrics-epochs.csv").exists());
            invalid += 1;
            continue;
        }
        assert!(
            matches!(t.state, TrialState::Complete | TrialState::Pruned),
            "{t:?}"
        );
        // Each trial trained once: one validation row per epoch it reached, no repeats.
        let rows = valid_rows(&run);
        let epochs: Vec<usize> = rows.iter().map(|r| r.0).collect();
        let reached = if t.state == TrialState::Complete {
            2
        } else {
            epochs.len()
        };
        assert_eq!(epochs, (1..=reached).collect::<Vec<_>>(), "trial {}", t.id);
        let best = rows.iter().map(|r| r.2).fold(f64::MIN, f64::max);
        assert_eq!(
            t.value,
            Some(best),
            "trial {}: its value is its best epoch",
            t.id
        );
        if t.state == TrialState::Complete {
            assert!(run.join("model.bpk").exists(), "trial {}", t.id);
            assert!(!run.join("checkpoint").exists(), "checkpoints removed");
        }
        let conf = TrainConfig::from_file(&run.join("config.toml")).expect("config");
        assert_eq!(conf.train.lr, lr);
    }
    assert!(invalid > 0, "the seed draws some lr = 5.0");
    // The last worker to finish saw every trial end.
    let last = outs
        .iter()
        .map(summary)
        .max_by_key(|s| s["complete"].as_u64().unwrap_or(0) + s["pruned"].as_u64().unwrap_or(0))
        .expect("summaries");
    assert_eq!(last["trials"], 9);
    assert_eq!(last["invalid"], invalid);
    assert_eq!(last["failed"], 0);
    // The best is the first complete trial with the highest accuracy.
    let complete = trials.iter().filter(|t| t.state == TrialState::Complete);
    let top = complete
        .clone()
        .filter_map(|t| t.value)
        .fold(f64::MIN, f64::max);
    let first = complete
        .clone()
        .find(|t| t.value == Some(top))
        .expect("a complete trial");
    assert_eq!(last["best"]["trial"], first.id);
    assert_eq!(last["best"]["value"], top);
    let config = last["best"]["config"].as_str().expect("config path");
    assert!(TrainConfig::from_file(Path::new(config)).is_ok());
}

#[test]
fn a_trial_whose_worker_is_killed_is_resumed_by_another_and_ends_as_if_uninterrupted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let study = study(tmp.path(), 2, 3, "[0.02]", "none");
    let dir = tmp.path().join("study");
    let mut first = worker(&study, &dir, 1)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("first worker");
    let trial0 = dir.join("trials/0000");
    let deadline = Instant::now() + Duration::from_secs(300);
    // Kill the worker a few steps into trial 0's second epoch (11 steps an epoch), once
    // epoch 1's checkpoint is on disk (Burn writes it on another thread).
    let in_epoch_2 = || {
        let steps = std::fs::read_to_string(trial0.join("metrics-steps.csv")).unwrap_or_default();
        let saved = rekindle_train::durable::dir::RunDir::new(&trial0).last_checkpoint() == Some(1);
        saved && steps.lines().any(|l| l.starts_with("2,3,"))
    };
    while !in_epoch_2() {
        assert!(Instant::now() < deadline, "trial 0 never checkpointed");
        assert!(
            child_alive(&mut first),
            "the worker ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    // Its trial process dies with it, leaving the trial running with a stale heartbeat.
    std::thread::sleep(Duration::from_secs(1));
    let store = Store::open(&Storage::sqlite(dir.join("study.db"))).expect("store");
    let t0 = &store.trials().expect("trials")[0];
    assert_eq!(t0.state, TrialState::Running);
    assert!(
        valid_rows(&trial0).len() < 3,
        "killed before its last epoch"
    );

    let out = finished(
        worker(&study, &dir, 1)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("second worker"),
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("taking over trial 0"), "{log}");
    let trial_log = std::fs::read_to_string(trial0.join("trial.log")).expect("trial log");
    assert!(
        trial_log.contains("resuming"),
        "resumed from its checkpoint:\n{trial_log}"
    );
    let s = summary(&out);
    assert_eq!(
        (s["trials"].as_u64(), s["complete"].as_u64()),
        (Some(2), Some(2))
    );

    // The same config trained without interruption gives the same epochs.
    let mut cfg = TrainConfig::from_file(&trial0.join("config.toml")).expect("config");
    cfg.run.dir = tmp.path().join("reference");
    rekindle_train::train(&cfg, false).expect("reference run");
    let (got, want) = (valid_rows(&trial0), valid_rows(&cfg.run.dir));
    assert_eq!(got.len(), 3);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.0, w.0);
        assert!(
            (g.1 - w.1).abs() <= 1e-5 * w.1.abs().max(1.0),
            "loss {g:?} vs {w:?}"
        );
        assert_eq!(g.2, w.2, "accuracy {g:?} vs {w:?}");
    }
}

fn child_alive(child: &mut Child) -> bool {
    child.try_wait().expect("try_wait").is_none()
}

#[test]
fn bad_input_is_refused_before_any_trial_starts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let study = study(tmp.path(), 3, 1, "[0.01]", "none");
    let dir = tmp.path().join("study");
    let text = std::fs::read_to_string(&study).expect("read");
    let cases = [
        (
            text.replace("\"train.lr\"", "\"train.rate\""),
            vec![],
            "rate",
        ),
        (
            text.replace("[0.5, 0.9]", "[0.9, 0.9]"),
            vec![],
            "low < high",
        ),
        (
            text.replace("\"optim.name\" = {", "\"optim.kind\" = {"),
            vec![],
            "not searched",
        ),
        (
            text.clone(),
            vec!["--storage", "/nonexistent/dir/study.db"],
            "/nonexistent/dir/study.db",
        ),
        (
            text.clone(),
            vec!["--storage", "postgres://nobody:hunter2@127.0.0.1:1/x"],
            "postgres://nobody:***@127.0.0.1:1/x",
        ),
    ];
    for (i, (text, args, want)) in cases.into_iter().enumerate() {
        let path = tmp.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).expect("write");
        let out = worker(&path, &dir, 1).args(args).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{want}: accepted");
        assert!(
            err.contains(want) && !err.contains("panicked"),
            "{want}: {err}"
        );
        assert!(!dir.join("trials").exists(), "{want}: a trial started");
    }
    // A study directory holds one study: another space in it is refused.
    let other = tmp.path().join("other.toml");
    std::fs::write(&other, text.replace("[0.01]", "[0.02]")).expect("write");
    let _ = std::fs::create_dir_all(&dir);
    Store::open(&Storage::sqlite(dir.join("study.db")))
        .expect("store")
        .bind("a study from elsewhere")
        .expect("bind");
    let out = worker(&other, &dir, 1).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds another study"), "{err}");
}

#[test]
fn a_report_writes_the_best_configs_plots_and_seeded_reruns_ranked_by_mean() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let study = study(tmp.path(), 4, 2, "[0.01, 0.05]", "none");
    let dir = tmp.path().join("study");
    let out = worker(&study, &dir, 2).output().expect("study");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bin()
        .arg("report")
        .arg(&dir)
        .args([
            "--top",
            "2",
            "--rerun",
            "2",
            "--seeds",
            "2",
            "--workers",
            "2",
        ])
        .output()
        .expect("report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It says what it is about to train before training it.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("training the 2 best configs again with 2 seeds each: 4 runs, 2 at a time"),
        "{said}"
    );
    let report = summary(&out);
    let report_dir = dir.join("report");
    for png in ["history.png", "slices.png", "curves.png", "importance.png"] {
        let bytes = std::fs::read(report_dir.join(png)).expect(png);
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 5000, "{png}");
    }
    // The best trials, best first, each a config that runs somewhere new.
    let best = report["best"].as_array().expect("best");
    assert_eq!(best.len(), 2);
    assert!(best[0]["value"].as_f64() >= best[1]["value"].as_f64());
    let cfg = TrainConfig::from_file(Path::new(best[0]["config"].as_str().expect("path")))
        .expect("a ready-to-run config");
    assert!(
        cfg.run.dir.to_string_lossy().contains("best-1"),
        "{:?}",
        cfg.run.dir
    );
    // Two configs, two seeds each, trained again and ranked by their mean.
    let reruns = report["reruns"].as_array().expect("reruns");
    assert_eq!(reruns.len(), 2);
    let means: Vec<f64> = reruns
        .iter()
        .map(|r| r["mean"].as_f64().expect("mean"))
        .collect();
    assert!(means[0] >= means[1], "{means:?}");
    for r in reruns {
        let values = r["values"].as_array().expect("values");
        assert_eq!(values.len(), 2);
        let v: Vec<f64> = values.iter().map(|v| v.as_f64().expect("value")).collect();
        assert!((r["mean"].as_f64().expect("mean") - (v[0] + v[1]) / 2.0).abs() < 1e-9);
        let trial = r["trial"].as_i64().expect("trial");
        for seed in [1, 2] {
            let run = report_dir.join(format!("rerun-{trial:04}-seed-{seed}"));
            let cfg = TrainConfig::from_file(&run.join("config.toml")).expect("rerun config");
            assert_eq!(cfg.train.seed, seed);
            assert!(run.join("model.bpk").exists());
        }
    }
    let md = std::fs::read_to_string(report_dir.join("report.md")).expect("report.md");
    assert!(md.contains("Re-runs with other seeds"), "{md}");
    let err = bin()
        .arg("report")
        .arg(tmp.path())
        .output()
        .expect("report");
    let text = String::from_utf8_lossy(&err.stderr);
    assert!(
        !err.status.success() && text.contains("not a study directory"),
        "{text}"
    );
}

/// A throwaway PostgreSQL cluster (Debian's `postgresql`) on a free loopback port, stopped and
/// deleted when dropped.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").exists())
            .expect("no /usr/lib/postgresql/*/bin/initdb: install postgresql (cargo xtask setup)");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // PostgreSQL refuses to run as root: as root, run it as the postgres user.
        let root = Command::new("id").arg("-u").output().expect("id").stdout == b"0\n";
        if root {
            let ok = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(ok.success());
        }
        let c = Cluster { bin, dir, port };
        let data = c.dir.path().join("data");
        c.run(
            root,
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        );
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {}",
            c.dir.path().display()
        );
        let log = c.dir.path().join("log").display().to_string();
        let data = data.display().to_string();
        c.run(
            root,
            "pg_ctl",
            &["-D", &data, "-o", &opts, "-l", &log, "-w", "start"],
        );
        c
    }

    fn run(&self, root: bool, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd.args(args).output().expect("a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout == b"0\n");
        let data = self.dir.path().join("data").display().to_string();
        let _ = std::panic::catch_unwind(|| {
            self.run(root, "pg_ctl", &["-D", &data, "-m", "fast", "stop"])
        });
    }
}

#[test]
fn three_worker_processes_share_a_postgresql_study_with_no_lost_or_duplicated_trial() {
    let cluster = Cluster::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let study = study(tmp.path(), 6, 2, "[0.01, 0.05, 5.0]", "median");
    let dir = tmp.path().join("study");
    let outs = three_workers(&study, &dir, &["--storage", &cluster.url()]);
    assert!(!dir.join("study.db").exists(), "nothing went to SQLite");
    let storage = Storage::parse(Some(&cluster.url()), &dir, "study").expect("url");
    let store = Store::open(&storage).expect("store");
    let trials = store.trials().expect("trials");
    assert_eq!(
        trials.iter().map(|t| t.id).collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>()
    );
    for t in &trials {
        let lr = t.point["train.lr"].as_float().expect("lr");
        let want = if lr == 5.0 {
            vec![TrialState::Invalid]
        } else {
            vec![TrialState::Complete, TrialState::Pruned]
        };
        assert!(want.contains(&t.state), "{t:?}");
        let run = dir.join("trials").join(format!("{:04}", t.id));
        let epochs: Vec<usize> = valid_rows(&run).iter().map(|r| r.0).collect();
        assert_eq!(
            epochs,
            (1..=epochs.len()).collect::<Vec<_>>(),
            "trained once"
        );
    }
    let last = outs
        .iter()
        .map(summary)
        .max_by_key(|s| s["trials"].as_u64());
    assert_eq!(last.expect("summary")["trials"], 6);
    // A study of another name in the same database is a schema of its own, empty.
    let other = Storage::parse(Some(&cluster.url()), &dir, "other").expect("url");
    assert!(
        Store::open(&other)
            .expect("other")
            .trials()
            .expect("trials")
            .is_empty()
    );
    // An unreachable server is refused before any trial, naming the URL without a password.
    let out = worker(&study, &tmp.path().join("elsewhere"), 1)
        .args(["--storage", "postgres://postgres:pw@127.0.0.1:1/postgres"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot connect"),
        "{err}"
    );
    assert!(err.contains("postgres:***@127.0.0.1:1"), "{err}");
}
