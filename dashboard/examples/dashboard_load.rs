//! How fast the dashboard answers at scale (`cargo xtask bench --dashboard`): a study of 1,000
//! trials (each a run directory, so the runs table has 1,001 rows) and a run of 100,000 logged
//! steps, made on the spot; every page and its data fetched over 127.0.0.1, the median and the
//! 90th percentile of 20 loads after one warm-up.

use std::path::Path;
use std::time::Instant;

use rekindle_train::TrainConfig;
use rekindle_tune::worker::{now, trial_dir};
use rekindle_tune::{RESOLVED, Storage, Store, Study, TrialState, propose};

#[path = "../tests/it/common.rs"]
#[allow(dead_code)]
mod common;

const TRIALS: usize = 1_000;
const STEPS: usize = 100_000;
const LOADS: usize = 20;

fn main() {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let root = tmp.path().join("runs");
    let made = Instant::now();
    long_run(&root.join("long"));
    big_study(tmp.path(), &root.join("search"));
    eprintln!(
        "made {TRIALS} trials and a run of {STEPS} steps in {:.1} s",
        made.elapsed().as_secs_f64()
    );
    let addr = common::serve(&root, None);
    let pages = [
        ("runs table (1,001 runs)", "/".to_string()),
        ("runs table as JSON", "/api/runs".to_string()),
        (
            "study page (1,000 trials)",
            "/study?id=runs/search".to_string(),
        ),
        ("study data", "/api/study?id=runs/search".to_string()),
        (
            "trials as CSV",
            "/api/study/trials?format=csv&id=runs/search".to_string(),
        ),
        ("run page (100,000 steps)", "/run?id=runs/long".to_string()),
        (
            "run curves (LTTB to 2,000)",
            "/api/run?id=runs/long".to_string(),
        ),
    ];
    println!("| page | bytes | median ms | p90 ms |\n|---|---|---|---|");
    for (name, path) in pages {
        let first = common::get(addr, &path, &[]);
        assert_eq!(first.status, 200, "{path}: {}", first.text());
        let mut ms: Vec<f64> = (0..LOADS)
            .map(|_| {
                let t = Instant::now();
                common::get(addr, &path, &[]);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        let (median, p90) = (ms[LOADS / 2], ms[LOADS * 9 / 10]);
        println!("| {name} | {} | {median:.1} | {p90:.1} |", first.body.len());
    }
}

/// A config that reads back (the runs table shows its settings).
fn config_text(dir: &Path, epochs: usize) -> String {
    let text = format!(
        "[model]\nsource = \"random\"\narch = \"resnet50\"\n[data]\nroot = \"data\"\n\
         [train]\nepochs = {epochs}\n[run]\ndir = \"{}\"\n",
        dir.display()
    );
    TrainConfig::from_toml(&text).expect("config").to_toml()
}

/// A run directory with `steps` logged steps over `epochs` epochs.
fn run_dir(dir: &Path, steps: usize, epochs: usize, seed: u64) {
    std::fs::create_dir_all(dir.join("checkpoint")).expect("run folder");
    std::fs::write(dir.join("config.toml"), config_text(dir, epochs)).expect("config");
    let per_epoch = steps / epochs;
    let mut log = String::from("epoch,step,loss,accuracy,lr,images_per_sec\n");
    for i in 0..steps {
        let x = i as f64 / steps as f64;
        let noise = ((i as u64 * 2_654_435_761 + seed) % 1_000) as f64 / 1e4;
        log += &format!(
            "{},{},{:.6},{:.4},{:.6e},{:.2}\n",
            i / per_epoch + 1,
            i % per_epoch + 1,
            2.3 * (-3.0 * x).exp() + noise,
            100.0 * (1.0 - (-4.0 * x).exp()),
            0.1 * (1.0 + (std::f64::consts::PI * x).cos()) / 2.0,
            120.0
        );
    }
    std::fs::write(dir.join("metrics-steps.csv"), log).expect("steps");
    let mut epochs_log = String::from("epoch,split,loss,accuracy,top5,lr,images_per_sec,seconds\n");
    for e in 1..=epochs {
        let x = e as f64 / epochs as f64;
        for split in ["train", "valid"] {
            epochs_log += &format!(
                "{e},{split},{:.4},{:.3},{:.3},0.01,120.0,30.0\n",
                2.0 * (-2.0 * x).exp(),
                90.0 * x,
                99.0
            );
        }
    }
    std::fs::write(dir.join("metrics-epochs.csv"), epochs_log).expect("epochs");
}

fn long_run(dir: &Path) {
    run_dir(dir, STEPS, 100, 1);
}

/// A random-search study of `TRIALS` finished trials with 10 reports each, stored as tune
/// stores them, each trial with a small run directory.
fn big_study(tmp: &Path, dir: &Path) {
    let file = tmp.join("study.toml");
    let text = format!(
        "[study]\ntrials = {TRIALS}\nsampler = \"random\"\nseed = 1\n\
         [base]\n{}\n[space]\n\"train.lr\" = {{ log-uniform = [1e-4, 0.3] }}\n\
         \"optim.name\" = {{ choice = [\"sgd\", \"adamw\"] }}\n\
         \"train.batch_size\" = {{ choice = [16, 32, 64] }}\n",
        "[base.model]\nsource = \"random\"\narch = \"resnet18\"\n[base.data]\nroot = \"data\"\n"
    );
    std::fs::write(&file, text).expect("study file");
    let study = Study::load(&file).expect("study");
    std::fs::create_dir_all(dir).expect("study folder");
    std::fs::write(dir.join(RESOLVED), study.resolved()).expect("resolved study");
    let mut store = Store::open(&Storage::sqlite(dir.join("study.db"))).expect("store");
    store.bind(&study.fingerprint()).expect("bind");
    for i in 0..TRIALS {
        let propose = |trials: &[_]| propose(&study, trials, trials.len());
        let t = store
            .start(TRIALS, "bench", now(), propose)
            .expect("start")
            .expect("a trial");
        for step in 1..=10 {
            let v = 30.0 + 6.0 * step as f64 + (i % 17) as f64;
            store.report(t.id, step, v).expect("report");
        }
        let value = 90.0 + (i % 17) as f64 / 2.0;
        let state = if i % 5 == 0 {
            TrialState::Pruned
        } else {
            TrialState::Complete
        };
        store
            .finish(t.id, "bench", state, Some(value), None)
            .expect("finish");
        run_dir(&trial_dir(dir, t.id), 30, 3, i as u64);
    }
}
