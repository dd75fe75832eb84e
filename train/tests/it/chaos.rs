//! Crash tests through the `rekindle-train` binary: a run SIGKILLed five times (mid-step,
//! mid-checkpoint-write, at random moments, mid-export) and resumed after each kill ends with
//! bitwise the weights of an uninterrupted run; a corrupted or truncated newest checkpoint is
//! passed over, named, and the run still ends identical; a second process on a run directory
//! in use is refused. The kills use the binary's fault hook (`REKINDLE_FAULT`, see
//! `rekindle_train::durable::fault`) and `Child::kill` (SIGKILL); every choice comes from a seeded
//! RNG (`REKINDLE_CHAOS_SEED` replays another schedule).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rekindle_model::load_model;
use rekindle_train::durable::checksum;
use rekindle_train::durable::dir::{Checkpoint, RunDir};
use rekindle_train::run::trainee::Trainee;

use crate::common;
use common::images::image_folder;
use common::{bin, named_bytes, tensors, text};

/// Epochs of every run here; the kill schedule needs five to stay ahead of the run.
const EPOCHS: usize = 5;
/// Optimiser steps an epoch: 36 training images (3 classes x 16, a quarter held out) at
/// batch 8.
const STEPS: usize = 5;
/// The longest any one process may take.
const PATIENCE: Duration = Duration::from_secs(240);

/// The one dataset every run here trains on, made once.
fn data() -> &'static Path {
    static DATA: OnceLock<tempfile::TempDir> = OnceLock::new();
    DATA.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        image_folder(tmp.path(), 16);
        tmp
    })
    .path()
}

/// A config file in `run`'s parent training into `run`: a random ResNet-18 at 16 px.
fn config(run: &Path) -> PathBuf {
    let text = format!(
        "[model]\nsource = \"random\"\narch = \"resnet18\"\n\
         [data]\nkind = \"folder\"\nroot = \"{}\"\nval_split = 0.25\nresize = 16\ncrop = 16\n\
         workers = 1\n\
         [train]\nepochs = {EPOCHS}\nbatch_size = 8\nlr = 0.02\nseed = 18\n\
         [run]\ndir = \"{}\"\n",
        data().display(),
        run.display()
    );
    let path = run.with_extension("toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `rekindle-train run` on `run`: from its config the first time, else `--resume`.
fn command(run: &Path, fault: Option<&str>) -> Command {
    let mut c = bin();
    c.arg("run");
    if run.join("config.toml").exists() {
        c.arg("--resume").arg(run);
    } else {
        c.arg("--config").arg(config(run));
    }
    if let Some(point) = fault {
        c.env("REKINDLE_FAULT", point);
    }
    c
}

/// Runs `run` to its end, which must be a success.
fn finish(run: &Path) -> String {
    let out = command(run, None).output().unwrap();
    assert!(out.status.success(), "the run failed:\n{}", text(&out));
    text(&out)
}

/// Runs `run` with the fault hook armed at `point`: the process must kill itself there.
fn killed_at(run: &Path, point: &str) -> String {
    let out = command(run, Some(point)).output().unwrap();
    let said = text(&out);
    assert_eq!(
        out.status.signal(),
        Some(9),
        "not killed at {point}:\n{said}"
    );
    assert!(said.contains(&format!("at {point}")), "{said}");
    said
}

/// The newest epoch whose checkpoint verifies (what a resume continues from), or 0.
fn done(run: &Path) -> usize {
    let dir = RunDir::new(run);
    (1..=EPOCHS)
        .rev()
        .find(|&e| checksum::verify(&dir, e).is_ok())
        .unwrap_or(0)
}

/// Runs `run` and SIGKILLs it `delay` after it starts, or as soon as epoch `cap`'s checkpoint
/// is complete if that comes first (so that the run never ends before the kill).
fn killed_after(run: &Path, delay: Duration, cap: usize) {
    let start = Instant::now();
    let mut child = command(run, None)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let capped = || checksum::verify(&RunDir::new(run), cap).is_ok();
    while start.elapsed() < delay && !capped() {
        assert!(
            start.elapsed() < PATIENCE,
            "the run never reached epoch {cap}"
        );
        let status = child.try_wait().unwrap();
        assert!(
            status.is_none(),
            "the run ended ({status:?}) before its kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
}

/// Every tensor of the checkpoint `checkpoint/model-N.bpk` of `run`, by name, as raw bytes.
fn checkpoint_tensors(run: &Path, epoch: usize) -> Vec<(String, Vec<u8>)> {
    let like = load_model(&run.join("model.bpk"), &Device::flex())
        .unwrap()
        .0;
    let path = RunDir::new(run).checkpoint(Checkpoint::Model, epoch);
    let record = ModuleRecord::load(&path).unwrap();
    named_bytes(&Trainee::new(like).load_record(record).net)
}

/// The uninterrupted run every other run must match, trained once per test binary, and its
/// pace: start-up time (to the first step) and time per epoch, to aim the random kills.
struct Reference {
    _tmp: tempfile::TempDir,
    run: PathBuf,
    startup: Duration,
    epoch: Duration,
}

/// The [`Reference`] run, trained on first use.
fn reference() -> &'static Reference {
    static RUN: OnceLock<Reference> = OnceLock::new();
    RUN.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        let start = Instant::now();
        let mut child = command(&run, None).stdout(Stdio::null()).spawn().unwrap();
        let first = RunDir::new(&run).checksums(1);
        let mut saved = None;
        while child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < PATIENCE,
                "the uninterrupted run never ended"
            );
            if saved.is_none() && first.exists() {
                saved = Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            run.join("model.bpk").exists(),
            "the uninterrupted run failed"
        );
        let saved = saved.expect("epoch 1's checksums");
        let epoch = start.elapsed().saturating_sub(saved) / EPOCHS as u32;
        Reference {
            _tmp: tmp,
            run,
            startup: saved.saturating_sub(epoch),
            epoch,
        }
    })
}

/// `run` ended with bitwise the weights of the uninterrupted run: the exported model and the
/// last epoch's checkpoint (optimiser steps are deterministic on the CPU backend, and a resume
/// restores every state they read: weights, optimiser moments, schedule, data order, RNG).
fn assert_identical(run: &Path) {
    let want = &reference().run;
    let (a, b) = (
        tensors(&want.join("model.bpk")),
        tensors(&run.join("model.bpk")),
    );
    assert_eq!(a.len(), b.len());
    for ((na, da), (nb, db)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(
            da == db,
            "exported {na} differs from the uninterrupted run's"
        );
    }
    assert!(
        checkpoint_tensors(want, EPOCHS) == checkpoint_tensors(run, EPOCHS),
        "epoch {EPOCHS}'s checkpoint differs from the uninterrupted run's"
    );
}

/// The temporary files in `dir` (a write cut short).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
fn a_run_killed_five_times_ends_with_the_weights_of_an_uninterrupted_run() {
    let seed = std::env::var("REKINDLE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(18);
    let mut rng = StdRng::seed_from_u64(seed);
    let Reference { startup, epoch, .. } = *reference();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut schedule = Vec::new();

    // 1. Mid-step, in epoch 1 or 2.
    let step = rng.random_range(1..=2 * STEPS);
    schedule.push(format!("step:{step}"));
    killed_at(&run, &format!("step:{step}"));
    assert!(done(&run) < step.div_ceil(STEPS), "{schedule:?}");

    // 2. Half-way through writing the model checkpoint of the next epoch or the one after.
    let e = done(&run) + rng.random_range(1..=2);
    schedule.push(format!("checkpoint:{e}"));
    killed_at(&run, &format!("checkpoint:{e}"));
    let ckpt = run.join("checkpoint");
    assert!(
        leftovers(&ckpt)
            .iter()
            .any(|n| n.starts_with(&format!("model-{e}.bpk."))),
        "no half-written model-{e}.bpk: {:?}",
        leftovers(&ckpt)
    );
    assert!(done(&run) < e, "{schedule:?}");

    // 3 and 4. At random moments, up to about two epochs in (and never past epoch 4, so that
    // the export is still to come).
    for _ in 0..2 {
        let ms = rng.random_range(0..(startup + 2 * epoch).as_millis() as u64);
        let cap = (done(&run) + 2).min(EPOCHS - 1);
        killed_after(&run, Duration::from_millis(ms), cap);
        schedule.push(format!(
            "after {ms} ms (or epoch {cap}): at epoch {}",
            done(&run)
        ));
    }

    // 5. Mid-export: the model written but not yet published as model.bpk.
    schedule.push("export".into());
    killed_at(&run, "export");
    assert_eq!(done(&run), EPOCHS);
    assert!(!run.join("model.bpk").exists(), "published before the kill");
    assert!(run.join("model.bpk.tmp").exists());

    let said = finish(&run);
    assert!(said.contains("exporting"), "{said}");
    assert!(leftovers(&run).is_empty() && leftovers(&ckpt).is_empty());
    eprintln!("seed {seed}: killed {schedule:?}");
    assert_identical(&run);
}

#[test]
fn a_corrupted_or_truncated_newest_checkpoint_is_named_passed_over_and_trained_again() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let dir = RunDir::new(&run);
    killed_at(&run, "export");

    // The optimiser state of the last epoch cut in half.
    let optim = dir.checkpoint(Checkpoint::Optim, EPOCHS);
    let bytes = std::fs::read(&optim).unwrap();
    std::fs::write(&optim, &bytes[..bytes.len() / 2]).unwrap();
    let said = killed_at(&run, "export");
    for expected in [
        format!("{} has {} bytes", optim.display(), bytes.len() / 2),
        format!("using the checkpoint of epoch {} instead", EPOCHS - 1),
        format!("after epoch {}", EPOCHS - 1),
    ] {
        assert!(said.contains(&expected), "no {expected:?} in:\n{said}");
    }

    // One flipped bit in the last epoch's weights (retrained above).
    let model = dir.checkpoint(Checkpoint::Model, EPOCHS);
    let mut bytes = std::fs::read(&model).unwrap();
    let at = bytes.len() - 1000;
    bytes[at] ^= 0x10;
    std::fs::write(&model, &bytes).unwrap();
    let said = finish(&run);
    for expected in [
        format!("{} is corrupted", model.display()),
        format!("using the checkpoint of epoch {} instead", EPOCHS - 1),
    ] {
        assert!(said.contains(&expected), "no {expected:?} in:\n{said}");
    }
    assert_identical(&run);
}

#[test]
fn a_second_process_on_a_run_directory_in_use_is_refused_naming_it_and_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut first = command(&run, None)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = RunDir::new(&run).lock();
    let pid = first.id().to_string();
    let start = Instant::now();
    while std::fs::read_to_string(&lock).unwrap_or_default().trim() != pid {
        assert!(
            start.elapsed() < PATIENCE,
            "the first run never took the lock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = bin()
        .arg("run")
        .arg("--config")
        .arg(config(&run))
        .output()
        .unwrap();
    let said = text(&out);
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run ended early"
    );
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("run directory {} is in use", run.display())),
        "{said}"
    );
    assert!(said.contains(&format!("(pid {pid})")), "{said}");
    assert!(!said.contains("panicked"), "{said}");

    // SIGKILLed, the first leaves no stale lock: the next process trains on.
    first.kill().unwrap();
    first.wait().unwrap();
    let dir = RunDir::new(&run);
    drop(rekindle_train::durable::lock::RunLock::acquire(&dir).unwrap());
}
