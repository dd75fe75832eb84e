//! End-to-end tests through the `rekindle-train` binary: a full run's artefacts, exact resume
//! after a kill, feature extraction leaving the backbone untouched, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use image::RgbImage;
use rekindle_model::{ModelMetadata, Preprocess, ResNetConfig, load_model, save_model};

use crate::common;
use common::images::image_folder;
use common::{bin, named_bytes, random_model, run_ok, tensors, text};

fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().expect("start rekindle-train");
    let text = text(&out);
    assert!(!out.status.success(), "expected a failure:\n{text}");
    assert!(
        !text.contains("panicked"),
        "a panic instead of an error:\n{text}"
    );
    text
}

fn write_config(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn folder_config(data: &Path, run: &Path, extra: &str) -> String {
    format!(
        "[model]\nsource = \"random\"\narch = \"resnet18\"\n\
         [data]\nkind = \"folder\"\nroot = \"{}\"\nval_split = 0.25\nresize = 16\ncrop = 16\ncrop_scale_min = 0.5\n\
         [train]\nepochs = 2\nbatch_size = 8\nlr = 0.02\nseed = 3\n{extra}\n\
         [run]\ndir = \"{}\"\n",
        data.display(),
        run.display()
    )
}

#[test]
fn a_run_leaves_config_checkpoints_logs_plots_and_a_loadable_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    image_folder(&data, 12);
    let run = tmp.path().join("run");
    let text = folder_config(&data, &run, "") + "tensorboard = true\n";
    let cfg = write_config(&tmp.path().join("c.toml"), &text);
    let out = run_ok(bin().arg("run").arg("--config").arg(&cfg));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("<- best") && stdout.contains("valid acc"),
        "{stdout}"
    );
    for f in [
        "config.toml",
        "metrics-steps.csv",
        "metrics-epochs.csv",
        "loss.png",
        "accuracy.png",
        "lr.png",
        "model.bpk",
        "checkpoint/model-2.bpk",
        "checkpoint/optim-2.bpk",
        "checkpoint/scheduler-2.bpk",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    let steps = std::fs::read_to_string(run.join("metrics-steps.csv")).unwrap();
    // 27 training images in batches of 8: 4 steps per epoch, 2 epochs.
    assert_eq!(steps.lines().count(), 1 + 8, "{steps}");
    let epochs = std::fs::read_to_string(run.join("metrics-epochs.csv")).unwrap();
    assert_eq!(epochs.lines().count(), 1 + 4, "{epochs}");
    tensorboard_holds_the_csv_logs(&run, &steps, &epochs);
    let png = image::open(run.join("loss.png")).unwrap();
    assert!(png.width() > 100 && png.height() > 100);
    // What infer will load: the model file with class names and preprocessing.
    let (net, meta) = load_model(&run.join("model.bpk"), &Device::flex()).unwrap();
    assert_eq!(meta.class_names, ["blue", "green", "red"]);
    assert_eq!((meta.preprocess.resize, meta.preprocess.crop), (16, 16));
    assert_eq!(net.config().head.num_classes, 3);
    let saved = rekindle_train::TrainConfig::from_file(&run.join("config.toml")).unwrap();
    assert_eq!(saved.train.epochs, 2);
    // rekindle-infer loads it and, on the run's validation files, scores exactly the best
    // validation accuracy training logged: train's and infer's preprocessing agree.
    let data = rekindle_train::data::dataset::Dataset::load(&saved.data, saved.train.seed).unwrap();
    let (paths, labels): (Vec<PathBuf>, Vec<usize>) = data
        .val
        .iter()
        .map(|item| match &item.image {
            rekindle_train::data::dataset::ImageRef::File(p) => (p.clone(), item.label),
            other => panic!("{other:?} is not a file"),
        })
        .unzip();
    let classifier =
        rekindle_infer::Classifier::load(run.join("model.bpk"), &Device::flex()).unwrap();
    let predictions = classifier.predict_paths(&paths, 1);
    let correct = predictions
        .iter()
        .zip(&labels)
        .filter(|(p, l)| p.as_ref().unwrap().best().index == **l)
        .count();
    let best_logged = epochs
        .lines()
        .filter(|l| l.contains(",valid,"))
        .map(|l| l.split(',').nth(3).unwrap().parse::<f64>().unwrap())
        .fold(f64::MIN, f64::max);
    assert!(
        (100.0 * correct as f64 / paths.len() as f64 - best_logged).abs() < 1e-6,
        "infer: {correct}/{} right, training logged {best_logged}%",
        paths.len()
    );
    // The run ended with the evaluation report of that model on the validation split.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval/metrics.json")).unwrap())
            .unwrap();
    assert_eq!(report["images"], paths.len());
    let top1 = report["top1"].as_f64().unwrap();
    assert!(
        (100.0 * top1 - best_logged).abs() < 1e-6,
        "{top1} vs {best_logged}"
    );
    for f in [
        "per-class.csv",
        "confusion.csv",
        "predictions.csv",
        "confusion.png",
        "reliability.png",
    ] {
        assert!(run.join("eval").join(f).is_file(), "missing eval/{f}");
    }
    assert!(
        stdout.contains("report on the validation split"),
        "{stdout}"
    );
    // A second run into the same directory would mix two runs' checkpoints.
    let err = run_err(bin().arg("run").arg("--config").arg(&cfg));
    assert!(
        err.contains("--resume") && err.contains("already holds"),
        "{err}"
    );
}

/// TensorBoard's own reader (scripts/check_tensorboard.py) finds in the run's event files every
/// step's loss, accuracy and learning rate and every epoch's scores, as the CSV logs hold them.
fn tensorboard_holds_the_csv_logs(run: &Path, steps: &str, epochs: &str) {
    let python =
        std::env::var("REKINDLE_PYTHON").expect("REKINDLE_PYTHON (set by cargo xtask test)");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/check_tensorboard.py");
    let out = run_ok(
        Command::new(python)
            .arg(script)
            .arg(run.join("tensorboard")),
    );
    let scalars: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // TensorBoard keeps f32 values; serde_json's parse of their f64 text may miss by an f64 ulp,
    // which the cast back to f32 removes.
    let series = |tag: &str| -> Vec<(u64, f32)> {
        scalars[tag]
            .as_array()
            .unwrap_or_else(|| panic!("no {tag} in {scalars}"))
            .iter()
            .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap() as f32))
            .collect()
    };
    let rows: Vec<Vec<f64>> = steps
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    for (tag, column) in [("train/loss", 2), ("train/accuracy", 3), ("train/lr", 4)] {
        let want: Vec<(u64, f32)> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (i as u64, r[column] as f32))
            .collect();
        assert_eq!(series(tag), want, "{tag}");
    }
    // Each epoch's row on the step axis: at that epoch's last step.
    let last_step = |epoch: u64| rows.iter().filter(|r| r[0] as u64 <= epoch).count() as u64 - 1;
    for split in ["train", "valid"] {
        for (name, column) in [("loss", 2), ("accuracy", 3), ("top5", 4)] {
            let want: Vec<(u64, f32)> = epochs
                .lines()
                .skip(1)
                .map(|l| l.split(',').collect::<Vec<_>>())
                .filter(|f| f[1] == split)
                .map(|f| {
                    let epoch: u64 = f[0].parse().unwrap();
                    let value = f[column].parse::<f64>().unwrap() as f32;
                    (last_step(epoch), value)
                })
                .collect();
            let tag = format!("epoch/{split}/{name}");
            assert_eq!(series(&tag), want, "{tag}");
        }
    }
}

#[test]
fn eval_writes_the_report_and_names_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    image_folder(&data, 5);
    let model = tmp.path().join("m.bpk");
    random_model(&model);
    let out_dir = tmp.path().join("report");
    let out = run_ok(
        bin()
            .args(["eval", "--json", "--tta", "five-crop", "--model"])
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&out_dir),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["images"], 15);
    assert_eq!(v["tta"], "five-crop");
    let per_class = v["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 3);
    for c in per_class {
        for key in ["class", "precision", "recall", "f1", "support"] {
            assert!(c.get(key).is_some(), "per_class lacks {key}: {c}");
        }
        assert_eq!(c["support"], 5);
    }
    // Rows are true classes: each holds its class's 5 images.
    let confusion: Vec<Vec<u64>> = serde_json::from_value(v["confusion"].clone()).unwrap();
    assert!(confusion.iter().all(|row| row.iter().sum::<u64>() == 5));
    let (top1, top5, ece) = (
        v["top1"].as_f64().unwrap(),
        v["top5"].as_f64().unwrap(),
        v["ece"].as_f64().unwrap(),
    );
    let diagonal: u64 = (0..3).map(|i| confusion[i][i]).sum();
    assert!((top1 - diagonal as f64 / 15.0).abs() < 1e-12 && top5 == 1.0);
    assert!((0.0..=1.0).contains(&ece));
    for f in [
        "metrics.json",
        "per-class.csv",
        "confusion.csv",
        "predictions.csv",
        "confusion.png",
        "reliability.png",
    ] {
        assert!(out_dir.join(f).is_file(), "missing {f}");
    }
    let predictions = std::fs::read_to_string(out_dir.join("predictions.csv")).unwrap();
    assert_eq!(predictions.lines().count(), 16);
    // Mistakes are drawn exactly when there are some.
    assert_eq!(out_dir.join("mistakes.png").is_file(), diagonal < 15);

    // Bad input: a TTA that does not exist, a class the model does not know, no model file.
    let err = run_err(
        bin()
            .args(["eval", "--tta", "ten-crop", "--model"])
            .arg(&model)
            .arg("--data")
            .arg(&data),
    );
    assert!(
        err.contains("ten-crop") && err.contains("five-crop"),
        "{err}"
    );
    std::fs::create_dir_all(data.join("purple")).unwrap();
    RgbImage::new(8, 8).save(data.join("purple/0.png")).unwrap();
    let err = run_err(
        bin()
            .args(["eval", "--model"])
            .arg(&model)
            .arg("--data")
            .arg(&data),
    );
    assert!(
        err.contains("purple") && err.contains("blue, green, red"),
        "{err}"
    );
    let err = run_err(
        bin()
            .args(["eval", "--data"])
            .arg(&data)
            .arg("--model")
            .arg(tmp.path().join("none.bpk")),
    );
    assert!(err.contains("none.bpk"), "{err}");
}

fn fmnist_config(run: &Path, extra: &str) -> String {
    format!(
        "[data]\nclasses = [\"Sneaker\", \"Bag\"]\ntrain_per_class = 96\nval_per_class = 16\nresize = 16\ncrop = 16\n\
         [train]\nepochs = 3\nbatch_size = 16\nlr = 0.05\nseed = 9\n{extra}\n\
         [run]\ndir = \"{}\"\n",
        run.display()
    )
}

fn step_rows(run: &Path) -> Vec<Vec<f64>> {
    std::fs::read_to_string(run.join("metrics-steps.csv"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .map(|v| v.parse().unwrap_or(f64::NAN))
                .collect()
        })
        .collect()
}

#[test]
fn a_run_killed_mid_epoch_resumes_exactly() {
    let (_tmp, cut) =
        killed_mid_epoch_resumes_exactly(|run| fmnist_config(run, "") + "tensorboard = true\n");
    // The killed attempt's event file holds epoch 2's first steps; TensorBoard drops them at
    // the resumed run's start and shows each step once, as the CSV log does.
    let read = |name: &str| std::fs::read_to_string(cut.join(name)).unwrap();
    assert_eq!(
        std::fs::read_dir(cut.join("tensorboard")).unwrap().count(),
        2
    );
    tensorboard_holds_the_csv_logs(
        &cut,
        &read("metrics-steps.csv"),
        &read("metrics-epochs.csv"),
    );
}

/// The regularisation recipes draw at random every step (the balanced sampler's order, the
/// augmentation policy's operations, the jitter, the erased box, mixup's and cutmix's lam and
/// box, stochastic depth's mask) and the weights' moving average carries on: a resumed run
/// draws and averages the same.
#[test]
fn a_run_with_every_recipe_killed_mid_epoch_resumes_exactly() {
    killed_mid_epoch_resumes_exactly(|run| {
        fmnist_config(
            run,
            "[loss]\nlabel_smoothing = 0.1\nclass_weights = [1.0, 2.0]\n\
             [mixup]\nmixup_alpha = 0.4\ncutmix_alpha = 1.0\nprob = 0.8\n\
             [model]\ndrop_path = 0.2\n[ema]\ndecay = 0.9\n",
        )
        .replace(
            "[train]\n",
            "sampler = \"balanced\"\nauto_augment = \"trivial-augment-wide\"\n\
             color_jitter = [0.4, 0.4, 0.4, 0.1]\nrandom_erasing = 0.5\nerasing_fill = \"noise\"\n\
             [train]\n",
        )
    });
}

/// Trains `config(dir)` once uninterrupted and once killed in epoch 2 and resumed: the same
/// loss and rate at every step, the same weights at the end. Returns the resumed run's folder
/// (and the temporary folder that holds it).
fn killed_mid_epoch_resumes_exactly(
    config: impl Fn(&Path) -> String,
) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    let cfg = write_config(&tmp.path().join("a.toml"), &config(&full));
    run_ok(bin().arg("run").arg("--config").arg(&cfg));

    let cut = tmp.path().join("cut");
    let cfg = write_config(&tmp.path().join("b.toml"), &config(&cut));
    let mut child = bin()
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    // Kill during epoch 2, a few steps in (12 steps an epoch), once epoch 1's checkpoint is
    // on disk: Burn writes it on another thread while epoch 2 trains, later on a busy machine.
    let epoch_1_saved =
        || rekindle_train::durable::dir::RunDir::new(&cut).last_checkpoint() == Some(1);
    while !(step_rows(&cut).iter().any(|r| r[0] == 2.0 && r[1] >= 3.0) && epoch_1_saved()) {
        assert!(Instant::now() < deadline, "the run never reached epoch 2");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        rekindle_train::durable::dir::RunDir::new(&cut).last_checkpoint(),
        Some(1),
        "not killed mid-epoch 2"
    );
    assert!(!cut.join("model.bpk").exists());

    let out = run_ok(bin().arg("run").arg("--resume").arg(&cut));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming"));
    let (a, b) = (step_rows(&full), step_rows(&cut));
    assert_eq!(a.len(), 36);
    assert_eq!(a.len(), b.len(), "the resumed log has the same steps");
    for (ra, rb) in a.iter().zip(&b) {
        assert_eq!(ra[..2], rb[..2]);
        // loss and learning rate at every step, before and after the interruption
        assert!(
            (ra[2] - rb[2]).abs() <= 1e-5 * ra[2].abs().max(1.0),
            "loss {ra:?} vs {rb:?}"
        );
        assert!((ra[4] - rb[4]).abs() <= 1e-12, "lr {ra:?} vs {rb:?}");
    }
    let (wa, wb) = (
        tensors(&full.join("model.bpk")),
        tensors(&cut.join("model.bpk")),
    );
    assert_eq!(wa.len(), wb.len());
    for ((na, da), (nb, db)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        let (fa, fb) = (floats(da), floats(db));
        let worst = fa
            .iter()
            .zip(fb)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-5, "{na}: weights differ by {worst}");
    }
    (tmp, cut)
}

/// A tensor's bytes read as little-endian f32 (a ResNet's tensors are all float32).
fn floats(bytes: &[u8]) -> Vec<f32> {
    assert_eq!(bytes.len() % 4, 0);
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Saves `net` as a starting model file for 16x16 inputs with mean and std `norm`.
fn save_start(path: &Path, net: &rekindle_model::ResNet, norm: f32) {
    let classes = net.config().head.num_classes;
    let pre = Preprocess {
        resize: 16,
        crop: 16,
        mean: [norm; 3],
        std: [norm; 3],
    };
    let meta = ModelMetadata::new(
        net.config(),
        ModelMetadata::default_class_names(classes),
        pre,
    );
    save_model(path, net, &meta).unwrap();
}

/// A ResNet-18 starting model with `classes` outputs saved under `dir`, and a Fashion-MNIST
/// config for `epochs` epochs from it with the `[train]` lines `train`: (net, model, run, config).
fn start_model_run(
    dir: &Path,
    classes: usize,
    train: &str,
    epochs: usize,
) -> (rekindle_model::ResNet, PathBuf, PathBuf, PathBuf) {
    // A starting model with non-trivial BatchNorm statistics would make any drift visible;
    // a freshly initialised one (mean 0, var 1) already moves on the first training batch.
    let net = ResNetConfig::new(
        rekindle_model::Arch::Resnet18,
        rekindle_model::HeadConfig::new(classes),
    )
    .init(&Device::flex());
    let start = dir.join("start.bpk");
    save_start(&start, &net, 0.3);
    let run = dir.join("run");
    let cfg = write_config(
        &dir.join("run.toml"),
        &format!(
            "[model]\nsource = \"{}\"\n{}",
            start.display(),
            fmnist_config(&run, train).replace("epochs = 3", &format!("epochs = {epochs}"))
        ),
    );
    (net, start, run, cfg)
}

#[test]
fn feature_extraction_moves_only_the_head() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, start, run, cfg) =
        start_model_run(tmp.path(), 4, "strategy = \"feature-extraction\"", 1);
    run_ok(bin().arg("run").arg("--config").arg(&cfg));
    let (before, after) = (tensors(&start), tensors(&run.join("model.bpk")));
    let mut backbone = 0;
    for ((n, a), (_, b)) in before.iter().zip(&after) {
        if n.starts_with("head.") {
            continue;
        }
        assert!(a == b, "{n} changed under feature extraction");
        backbone += 1;
    }
    // ResNet-18: 20 convolutions and 20 BatchNorms (weight, bias, running mean and var).
    assert_eq!(backbone, 100, "compared {backbone} backbone tensors");
    let heads_after: Vec<_> = after
        .iter()
        .filter(|(n, _)| n.starts_with("head."))
        .collect();
    assert_eq!(heads_after.len(), 2);
    // The head went from 4 classes to the dataset's 2, and trained.
    let meta = rekindle_model::read_metadata(&run.join("model.bpk")).unwrap();
    assert_eq!(meta.class_names, ["Sneaker", "Bag"]);
    // mean/std come from the starting model, not from ImageNet
    assert_eq!(meta.preprocess.mean, [0.3; 3]);
}

/// Every tensor of a training checkpoint (`checkpoint/model-N.bpk`), by name, as raw bytes.
fn checkpoint_tensors(path: &Path, like: &rekindle_model::ResNet) -> Vec<(String, Vec<u8>)> {
    use burn::module::Module;
    let record = burn::store::ModuleRecord::load(path).unwrap();
    let trainee = rekindle_train::run::trainee::Trainee::new(like.clone()).load_record(record);
    named_bytes(&trainee.net)
}

#[test]
fn gradual_unfreezing_thaws_layer4_after_the_first_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let (net, start, run, cfg) = start_model_run(
        tmp.path(),
        2,
        "strategy = \"gradual\"\nunfreeze_every = 1",
        2,
    );
    let out = run_ok(bin().arg("run").arg("--config").arg(&cfg));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("epochs 1-1: feature extraction")
            && log.contains("epochs 2-2: stem+layer1+layer2+layer3 frozen, layer4 train"),
        "{log}"
    );
    // Epoch 2 ran in a second launch, resumed from epoch 1's checkpoint with layer4 thawed.
    let before = tensors(&start);
    let after = checkpoint_tensors(&run.join("checkpoint/model-2.bpk"), &net);
    assert_eq!(before.len(), after.len());
    let (mut frozen, mut moved) = (0, 0);
    for ((n, a), (m, b)) in before.iter().zip(&after) {
        assert_eq!(n, m);
        if n.starts_with("head.") {
            continue;
        }
        if n.starts_with("layer4.") {
            // weights and BatchNorm statistics of the thawed stage all trained
            assert!(a != b, "{n} did not move once thawed");
            moved += 1;
        } else {
            assert!(a == b, "{n} changed while frozen");
            frozen += 1;
        }
    }
    // layer4 of ResNet-18: 2 blocks of 2 conv+BN, and a downsample conv+BN: 5 x (1 + 4) tensors
    assert_eq!((frozen, moved), (75, 25));
    // Both epochs are logged once each, and the run exported its best epoch.
    let epochs = std::fs::read_to_string(run.join("metrics-epochs.csv")).unwrap();
    assert_eq!(epochs.lines().filter(|l| l.contains(",valid,")).count(), 2);
    assert!(run.join("model.bpk").exists());
}

#[test]
fn a_full_disk_while_checkpointing_keeps_the_previous_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let cfg = write_config(
        &tmp.path().join("d.toml"),
        &fmnist_config(&run, "[schedule]\nname = \"constant\"").replace("epochs = 3", "epochs = 1"),
    );
    run_ok(bin().arg("run").arg("--config").arg(&cfg));
    let ckpt = run.join("checkpoint");
    let read = |e: usize| {
        ["model", "optim", "scheduler"]
            .map(|k| std::fs::read(ckpt.join(format!("{k}-{e}.bpk"))).unwrap())
    };
    let epoch1 = read(1);

    // Epoch 2 under a 1 MiB file-size limit: writing its 45 MB checkpoint fails part-way, as on
    // a full disk (EFBIG instead of ENOSPC; SIGXFSZ ignored so that the write returns the error).
    // Burn writes the model and optimiser files on two threads: either may be the one reported.
    let limited = "trap '' XFSZ; ulimit -f 1024; exec \"$0\" run --resume \"$1\" --epochs 2";
    let err = run_err(
        Command::new("bash")
            .arg("-c")
            .arg(limited)
            .arg(env!("CARGO_BIN_EXE_rekindle-train"))
            .arg(&run),
    );
    let named = ["model-2.bpk", "optim-2.bpk"]
        .iter()
        .any(|f| err.contains(f));
    assert!(
        named && err.contains("File too large") && err.contains("--resume"),
        "{err}"
    );
    // No half-written file under a checkpoint's name; epoch 1 is intact and still the resume point.
    assert!(!ckpt.join("model-2.bpk").exists());
    assert!(!ckpt.join("optim-2.bpk").exists());
    assert_eq!(read(1), epoch1);
    assert_eq!(
        rekindle_train::durable::dir::RunDir::new(&run).last_checkpoint(),
        Some(1)
    );
    // The thread not reported may still have been writing when the process exited: its
    // temporary file is the next run's to remove (checked below).

    // With space again, the same command finishes the run from epoch 1's checkpoint.
    let out = run_ok(
        bin()
            .arg("run")
            .arg("--resume")
            .arg(&run)
            .arg("--epochs")
            .arg("2"),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming"));
    assert_eq!(
        rekindle_train::durable::dir::RunDir::new(&run).last_checkpoint(),
        Some(2)
    );
    let epochs = std::fs::read_to_string(run.join("metrics-epochs.csv")).unwrap();
    assert_eq!(epochs.lines().filter(|l| l.contains(",valid,")).count(), 2);
    rekindle_model::read_metadata(&run.join("model.bpk")).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&ckpt)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn data_parallel_training_runs_on_two_device_slots() {
    // The machine has one CPU device; listing it twice still runs Burn's multi-device
    // strategy (two workers, gradients gathered on the main device), the path a GPU box takes.
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("dp");
    let cfg = write_config(
        &tmp.path().join("dp.toml"),
        &fmnist_config(&run, "").replace("epochs = 3", "epochs = 2"),
    );
    run_ok(
        bin()
            .arg("run")
            .arg("--config")
            .arg(&cfg)
            .args(["--devices", "0,0"]),
    );
    let rows = step_rows(&run);
    assert_eq!(
        rows.len(),
        24,
        "a row per device batch: 12 an epoch for 2 epochs"
    );
    assert!(rows.iter().all(|r| r[2].is_finite()));
    // Each optimiser step takes a batch from both slots, 6 steps an epoch: the cosine schedule
    // is planned over those 12 and ends near 0, not half-way down at lr / 2.
    let (first, last) = (rows[0][4], rows[rows.len() - 1][4]);
    assert!(
        last < 0.1 * first,
        "lr {first} at the start, {last} at the end"
    );
    let meta = rekindle_model::read_metadata(&run.join("model.bpk")).unwrap();
    assert_eq!(meta.class_names, ["Sneaker", "Bag"]);
}

#[test]
fn bad_input_is_named_without_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let typo = write_config(&tmp.path().join("typo.toml"), "[train]\nepocs = 3\n");
    let err = run_err(bin().arg("run").arg("--config").arg(&typo));
    assert!(err.contains("epocs") && err.contains("typo.toml"), "{err}");

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = run_err(
        bin()
            .args(["run", "--data-kind", "folder", "--data"])
            .arg(&empty)
            .arg("--run-dir")
            .arg(tmp.path().join("r1")),
    );
    assert!(
        err.contains("no class folders") && err.contains("empty"),
        "{err}"
    );

    let one = tmp.path().join("one/cat");
    std::fs::create_dir_all(&one).unwrap();
    RgbImage::new(8, 8).save(one.join("a.png")).unwrap();
    RgbImage::new(8, 8).save(one.join("b.png")).unwrap();
    let err = run_err(
        bin()
            .args(["run", "--data-kind", "folder", "--data"])
            .arg(tmp.path().join("one"))
            .arg("--run-dir")
            .arg(tmp.path().join("r2")),
    );
    assert!(err.contains("at least 2 classes"), "{err}");

    let err = run_err(bin().args(["run", "--strategy", "most"]));
    assert!(err.contains("feature-extraction"), "{err}");
    let err = run_err(bin().args(["run", "--lr=-1"]));
    assert!(err.contains("train.lr"), "{err}");
    let err = run_err(
        bin()
            .args(["run", "--model"])
            .arg(tmp.path().join("missing.pth"))
            .arg("--run-dir")
            .arg(tmp.path().join("r3")),
    );
    assert!(err.contains("missing.pth"), "{err}");
    let err = run_err(
        bin()
            .arg("run")
            .arg("--resume")
            .arg(tmp.path().join("nothing")),
    );
    assert!(err.contains("nothing"), "{err}");
}

#[test]
fn a_nan_loss_stops_the_run_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let net = ResNetConfig::new(
        rekindle_model::Arch::Resnet18,
        rekindle_model::HeadConfig::new(2),
    )
    .init(&device);
    // Poison one BatchNorm scale: every forward pass then produces NaN logits.
    let mut net = net;
    net.bn1.gamma = net.bn1.gamma.map(|g| g.mul_scalar(f32::NAN));
    let start = tmp.path().join("nan.bpk");
    save_start(&start, &net, 0.5);
    let run = tmp.path().join("nan");
    let cfg = write_config(
        &tmp.path().join("nan.toml"),
        &format!(
            "[model]\nsource = \"{}\"\n{}",
            start.display(),
            fmnist_config(&run, "")
        ),
    );
    let err = run_err(bin().arg("run").arg("--config").arg(&cfg));
    assert!(err.contains("loss became NaN"), "{err}");
    assert!(!run.join("model.bpk").exists());
}

/// Zeros among the convolution and linear weights of a saved model, and its largest |weight|.
fn weight_stats(model: &Path) -> (usize, usize, f64) {
    let device = burn::tensor::Device::flex();
    let (net, _) = rekindle_model::load_model(model, &device).unwrap();
    let layers = rekindle_train::catalog::prune::sparsity(&net);
    let total = layers.iter().map(|l| l.total).sum();
    let zeros = layers.iter().map(|l| l.zeros).sum();
    struct Max(f64);
    impl rekindle_model::PathVisitor for Max {
        fn visit<const D: usize>(
            &mut self,
            path: &[String],
            p: &burn::module::Param<burn::tensor::Tensor<D>>,
        ) {
            if rekindle_train::catalog::prune::prunable(path) {
                let m: f32 = p.val().abs().max().into_scalar();
                self.0 = self.0.max(m as f64);
            }
        }
    }
    let mut m = Max(0.0);
    rekindle_model::visit_with_paths(&net, &mut m);
    (zeros, total, m.0)
}

#[test]
fn a_tuned_recipe_logs_exactly_the_rates_the_schedule_command_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    // AdamW, warmup + cosine per step, layer-wise decay, no decay for biases/norms, global
    // norm clipping, and a batch that grows at epoch 2 (fewer steps in the later epochs).
    let extra = "layer_decay = 0.5\nbatch_schedule = [[2, 32]]\n\
                 [optim]\nname = \"adamw\"\nweight_decay = 0.05\nno_decay_bias_norm = true\n\
                 clip_grad_norm = 1.0\n\
                 [schedule]\nname = \"cosine\"\nwarmup = 4\nmin_lr = 0.001\n\
                 [init]\nscheme = \"xavier-uniform\"\nbias = \"zeros\"";
    let cfg = write_config(&tmp.path().join("t.toml"), &fmnist_config(&run, extra));
    run_ok(bin().arg("run").arg("--config").arg(&cfg));
    let logged: Vec<f64> = step_rows(&run).iter().map(|r| r[4]).collect();
    // 192 images: 12 steps of 16 in epoch 1, then 6 of 32 in epochs 2 and 3.
    assert_eq!(logged.len(), 12 + 6 + 6);

    let out = run_ok(
        bin()
            .arg("schedule")
            .arg("--config")
            .arg(&cfg)
            .arg("--json")
            .arg("--plot")
            .arg(tmp.path().join("s.png")),
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), logged.len());
    for (i, (row, lr)) in rows.iter().zip(&logged).enumerate() {
        let head = row["lr"]["head"].as_f64().unwrap();
        assert!(
            (head - lr).abs() <= 1e-12 * head.abs().max(1e-12),
            "step {i}: {head} vs {lr}"
        );
        // Layer-wise decay: layer4 peaks at half the head's rate, the stem at 1/32; during
        // warmup the groups are exactly proportional (min_lr, as PyTorch's eta_min, is
        // shared by all groups, so the cosine parts are not).
        let l4 = row["lr"]["layer4"].as_f64().unwrap();
        let stem = row["lr"]["stem"].as_f64().unwrap();
        if i < 4 {
            assert!((l4 - head * 0.5).abs() < 1e-15 && (stem - head / 32.0).abs() < 1e-15);
        }
        assert!(stem < l4 && l4 < head, "step {i}: {stem} {l4} {head}");
    }
    assert!(
        logged[0] < logged[4] && logged[4] > logged[23],
        "{logged:?}"
    );
    assert!(tmp.path().join("s.png").exists());
}

#[test]
fn pruning_to_half_keeps_the_pruned_weights_at_zero_through_fine_tuning() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    // Gradual pruning to 50% over epochs 1-2, a plateau schedule (one launch per epoch) and
    // weight clipping; epoch 3 fine-tunes at the final sparsity.
    let extra = "[optim]\nname = \"sgd\"\nmomentum = 0.9\nweight_clip = [-0.5, 0.5]\n\
                 [schedule]\nname = \"plateau\"\nper = \"epoch\"\npatience = 0\n\
                 [prune]\nsparsity = 0.5\nschedule = \"gradual\"";
    let cfg = write_config(&tmp.path().join("p.toml"), &fmnist_config(&run, extra));
    let out = run_ok(bin().arg("run").arg("--config").arg(&cfg));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("sparsity of the exported model"),
        "{stdout}"
    );
    let (zeros, total, max) = weight_stats(&run.join("model.bpk"));
    assert!(
        zeros as f64 >= 0.5 * total as f64 - 1.0,
        "{zeros} of {total} weights are zero"
    );
    assert!(max <= 0.5 + 1e-6, "weight clipping: largest |w| {max}");
    // The exported epoch is at the final sparsity (2 or 3), never the denser epoch 1.
    assert!(!stdout.contains("best: epoch 1 "), "{stdout}");

    // One-shot pruning of the saved model, as `cargo xtask prune` runs it.
    let pruned = tmp.path().join("pruned.bpk");
    let out = run_ok(
        bin()
            .arg("prune")
            .arg(run.join("model.bpk"))
            .arg("--sparsity")
            .arg("0.7")
            .arg("--scope")
            .arg("layer")
            .arg("-o")
            .arg(&pruned),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("layer4.1.Basic.conv2.weight"));
    let (zeros, total, _) = weight_stats(&pruned);
    assert!(
        zeros as f64 >= 0.7 * total as f64 - 30.0,
        "{zeros} of {total}"
    );
    let err = run_err(
        bin()
            .arg("prune")
            .arg(&pruned)
            .arg("--sparsity")
            .arg("1.5")
            .arg("-o")
            .arg(tmp.path().join("x.bpk")),
    );
    assert!(err.contains("--sparsity"), "{err}");
}

#[test]
fn bad_tuning_settings_are_refused_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let err = run_err(bin().arg("run").arg("--optimizer").arg("adamx"));
    assert!(
        err.contains("adamx") && err.contains("rmsprop") && err.contains("adagrad"),
        "{err}"
    );
    let err = run_err(bin().arg("run").arg("--schedule").arg("cosin"));
    assert!(
        err.contains("one-cycle") && err.contains("plateau"),
        "{err}"
    );
    for (extra, word) in [
        (
            "[optim]\nname = \"adam\"\nmomentum = 0.9",
            "optim.momentum does not apply to adam",
        ),
        ("[optim]\nmomentum = 1.5", "optim.momentum"),
        (
            "[schedule]\nname = \"cosine\"\nwarmup = 1000",
            "schedule.warmup",
        ),
        ("[prune]\nsparsity = 1.0", "prune.sparsity"),
        (
            "[init]\nscope = \"matching\"\npattern = \"(\"",
            "init.pattern",
        ),
        ("[schedule]\nname = \"plateau\"", "per = \"epoch\""),
    ] {
        let cfg = write_config(&tmp.path().join("bad.toml"), &fmnist_config(&run, extra));
        let err = run_err(bin().arg("run").arg("--config").arg(&cfg));
        assert!(err.contains(word), "{extra}: {err}");
        assert!(
            !run.join("checkpoint").exists(),
            "{extra}: training started"
        );
    }
    // The negative learning rate is refused too.
    let err = run_err(bin().arg("run").arg("--lr=-0.1"));
    assert!(err.contains("train.lr"), "{err}");
}

#[test]
fn lr_find_sweeps_geometrically_stops_on_blow_up_and_suggests_a_rate_inside() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    image_folder(&data, 12);
    let cfg = write_config(
        &tmp.path().join("f.toml"),
        &folder_config(&data, &tmp.path().join("run"), "").replace("epochs = 2", "epochs = 1"),
    );
    let out_dir = tmp.path().join("lrf");
    let out = run_ok(
        bin()
            .args([
                "lr-find", "--start", "1e-5", "--end", "100", "--steps", "40", "--config",
            ])
            .arg(&cfg)
            .arg("--out")
            .arg(&out_dir),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let rows: Vec<Vec<f64>> = std::fs::read_to_string(out_dir.join("lr-find.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    let steps = json["steps"].as_u64().unwrap() as usize;
    assert_eq!(rows.len(), steps);
    // The rates the optimiser got: 1e-5 first, then x (100 / 1e-5)^(1/39) per step.
    let ratio = (100.0f64 / 1e-5).powf(1.0 / 39.0);
    assert!((rows[0][1] - 1e-5).abs() < 1e-12, "{:?}", rows[0]);
    for w in rows.windows(2) {
        assert!((w[1][1] / w[0][1] - ratio).abs() < 1e-6 * ratio, "{w:?}");
    }
    // SGD at rates up to 100 blows up: the sweep stops before its 40 steps, and says why.
    assert!(
        steps < 40 && json["stopped"].as_str().unwrap().contains("4x"),
        "{json}"
    );
    let last = rows.last().unwrap();
    for key in ["valley", "steep", "minimum"] {
        let lr = json[key].as_f64().unwrap();
        assert!(
            lr >= 1e-6 && lr < last[1],
            "{key} {lr} outside the sweep below {}",
            last[1]
        );
    }
    let png = std::fs::read(out_dir.join("lr-find.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let err = run_err(
        bin()
            .args(["lr-find", "--start", "0", "--config"])
            .arg(&cfg),
    );
    assert!(err.contains("--start"), "{err}");
}
