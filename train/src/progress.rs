//! What a person sees and what the run keeps: Burn's learner reports every metric to a
//! renderer; this one draws an indicatif bar per epoch split (one summary line per split when
//! stderr is not a terminal), writes every step and epoch to CSV, and stops the run on a
//! NaN or infinite loss.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};
use burn::train::{Interrupter, LearnerSummary};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Per-step log, one row per training step.
pub const STEPS_CSV: &str = "metrics-steps.csv";
/// Per-epoch log, one row per epoch and split.
pub const EPOCHS_CSV: &str = "metrics-epochs.csv";
const STEPS_HEADER: &str = "epoch,step,loss,accuracy,lr,images_per_sec";
const EPOCHS_HEADER: &str = "epoch,split,loss,accuracy,top5,lr,images_per_sec,seconds";

/// One epoch of one split, as logged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpochRow {
    /// 1-based epoch.
    pub epoch: usize,
    /// `train` or `valid`.
    pub split: String,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Top-1 accuracy in percent.
    pub accuracy: f64,
    /// Top-5 (or top-k for fewer classes) accuracy in percent.
    pub top5: f64,
    /// Learning rate at the end of the split (training only).
    pub lr: f64,
    /// Throughput.
    pub images_per_sec: f64,
    /// Wall time of the split.
    pub seconds: f64,
}

/// State shared between the renderer (on Burn's event thread) and the run.
#[derive(Debug, Default)]
pub struct Shared {
    /// Why the run stopped itself (non-finite loss), if it did.
    pub stop_reason: Option<String>,
    /// Every completed split so far in this process.
    pub epochs: Vec<EpochRow>,
}

/// Burn's renderer for a run: progress bars, CSV logs, NaN guard.
pub struct Renderer {
    names: HashMap<MetricId, String>,
    interrupter: Interrupter,
    shared: Arc<Mutex<Shared>>,
    steps: Option<BufWriter<File>>,
    epochs_log: Option<BufWriter<File>>,
    tty: bool,
    bar: Option<ProgressBar>,
    epoch: usize,
    total_epochs: usize,
    split: String,
    split_start: Instant,
    items: usize,
    step: usize,
    pending: HashMap<&'static str, f64>,
    finals: HashMap<&'static str, f64>,
    last_lr: f64,
}

impl Renderer {
    /// A renderer logging into `dir`, which keeps the rows of epochs up to `keep_epochs`
    /// (a resumed run) and drops the rest.
    pub fn new(
        dir: &Path,
        keep_epochs: usize,
        interrupter: Interrupter,
        shared: Arc<Mutex<Shared>>,
    ) -> std::io::Result<Self> {
        let steps = open_log(&dir.join(STEPS_CSV), STEPS_HEADER, keep_epochs)?;
        let epochs_log = open_log(&dir.join(EPOCHS_CSV), EPOCHS_HEADER, keep_epochs)?;
        Ok(Self {
            names: HashMap::new(),
            interrupter,
            shared,
            steps: Some(steps),
            epochs_log: Some(epochs_log),
            tty: std::io::stderr().is_terminal(),
            bar: None,
            epoch: keep_epochs + 1,
            total_epochs: 0,
            split: String::new(),
            split_start: Instant::now(),
            items: 0,
            step: 0,
            pending: HashMap::new(),
            finals: HashMap::new(),
            last_lr: 0.0,
        })
    }

    /// Our short key for one of Burn's metric names.
    fn key<'a>(&self, state: &'a MetricState) -> Option<(&'static str, Option<&'a NumericEntry>)> {
        let MetricState::Numeric(entry, value) = state else {
            return None;
        };
        let name = self.names.get(&entry.metric_id)?;
        let key = match name.as_str() {
            "Loss" => "loss",
            "Accuracy" => "accuracy",
            "Learning Rate" => "lr",
            n if n.starts_with("Top-K Accuracy") => "top5",
            _ => return None,
        };
        Some((key, value.as_ref()))
    }

    fn record(&mut self, state: MetricState, train: bool) {
        let Some((key, Some(value))) = self.key(&state) else {
            return;
        };
        let v = value.current();
        match value {
            NumericEntry::Final(_) => {
                self.finals.insert(key, v);
            }
            _ => {
                self.pending.insert(key, v);
                if key == "lr" {
                    self.last_lr = v;
                }
                if train && key == "loss" && !v.is_finite() {
                    self.stop_on_bad_loss(v);
                }
            }
        }
    }

    fn stop_on_bad_loss(&mut self, v: f64) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if shared.stop_reason.is_none() {
            let msg = format!(
                "the training loss became {v} at epoch {} step {}; lower train.lr or check the \
                 data. The last complete epoch's checkpoint is kept",
                self.epoch,
                self.step + 1
            );
            self.interrupter.stop(Some(&msg));
            shared.stop_reason = Some(msg);
        }
    }

    fn say(&self, line: String) {
        match &self.bar {
            Some(bar) if self.tty => bar.println(line),
            _ => eprintln!("{line}"),
        }
    }
}

/// Opens a CSV log for appending, keeping the header and the rows of epochs up to `keep`.
fn open_log(path: &Path, header: &str, keep: usize) -> std::io::Result<BufWriter<File>> {
    let kept: Vec<String> = match std::fs::read_to_string(path) {
        Ok(text) if keep > 0 => text
            .lines()
            .skip(1)
            .filter(|l| {
                l.split(',')
                    .next()
                    .and_then(|e| e.parse::<usize>().ok())
                    .is_some_and(|e| e <= keep)
            })
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let mut file = BufWriter::new(
        OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?,
    );
    writeln!(file, "{header}")?;
    for l in kept {
        writeln!(file, "{l}")?;
    }
    file.flush()?;
    Ok(file)
}

/// Reads the epoch log of a run directory.
pub fn read_epochs(dir: &Path) -> std::io::Result<Vec<EpochRow>> {
    let text = std::fs::read_to_string(dir.join(EPOCHS_CSV))?;
    let num = |s: Option<&str>| s.and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',');
            let epoch = f.next()?.parse().ok()?;
            let split = f.next()?.to_string();
            Some(EpochRow {
                epoch,
                split,
                loss: num(f.next()),
                accuracy: num(f.next()),
                top5: num(f.next()),
                lr: num(f.next()),
                images_per_sec: num(f.next()),
                seconds: num(f.next()),
            })
        })
        .collect())
}

/// Reads the step log: (global step, epoch, loss, accuracy, lr) per row.
pub fn read_steps(dir: &Path) -> std::io::Result<Vec<[f64; 5]>> {
    let text = std::fs::read_to_string(dir.join(STEPS_CSV))?;
    Ok(text
        .lines()
        .skip(1)
        .enumerate()
        .filter_map(|(i, l)| {
            let f: Vec<f64> = l
                .split(',')
                .map(|v| v.parse().unwrap_or(f64::NAN))
                .collect();
            (f.len() >= 5).then(|| [i as f64 + 1.0, f[0], f[2], f[3], f[4]])
        })
        .collect())
}

impl MetricsRendererTraining for Renderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(state, true);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state, false);
    }

    fn on_train_end(
        &mut self,
        _summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        // The run prints its own summary table from the epoch log.
        Ok(())
    }
}

impl TrainingProgressLogger for Renderer {
    fn start(&mut self, total: usize, starting: usize, _items: Option<usize>, _: Option<&str>) {
        self.total_epochs = total;
        self.epoch = starting;
    }

    fn update_epoch(&mut self, epoch: usize) {
        self.epoch = epoch + 1;
    }

    fn start_split(&mut self, split: &str, total_items: usize) {
        self.split = split.to_string();
        self.split_start = Instant::now();
        self.items = 0;
        self.step = 0;
        self.pending.clear();
        self.finals.clear();
        let bar = ProgressBar::with_draw_target(
            Some(total_items as u64),
            if self.tty {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>13} [{bar:30}] {pos}/{len} images  {per_sec:>10}  eta {eta:>4}  {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(format!(
            "epoch {}/{} {split}",
            self.epoch, self.total_epochs
        ));
        self.bar = Some(bar);
    }

    fn update_split(&mut self, items_processed: usize) {
        self.items = items_processed;
        let elapsed = self.split_start.elapsed().as_secs_f64().max(1e-9);
        let speed = items_processed as f64 / elapsed;
        let get = |k| self.pending.get(k).copied().unwrap_or(f64::NAN);
        if self.split == "train" {
            self.step += 1;
            if let Some(f) = &mut self.steps {
                let _ = writeln!(
                    f,
                    "{},{},{},{},{},{:.2}",
                    self.epoch,
                    self.step,
                    get("loss"),
                    get("accuracy"),
                    get("lr"),
                    speed
                );
                // Flushed per step: a killed run's log shows exactly how far it got.
                let _ = f.flush();
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_position(items_processed as u64);
            bar.set_message(format!(
                "loss {:.4}  acc {:.1}%",
                get("loss"),
                get("accuracy")
            ));
        }
    }

    fn end_split(&mut self) {
        let seconds = self.split_start.elapsed().as_secs_f64();
        let get = |k| self.finals.get(k).copied().unwrap_or(f64::NAN);
        let train = self.split == "train";
        let row = EpochRow {
            epoch: self.epoch,
            split: self.split.clone(),
            loss: get("loss"),
            accuracy: get("accuracy"),
            top5: get("top5"),
            lr: if train { self.last_lr } else { f64::NAN },
            images_per_sec: self.items as f64 / seconds.max(1e-9),
            seconds,
        };
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let interrupted = self.items == 0 || self.interrupter.should_stop();
        let line = format!(
            "epoch {:>2}/{} {:<5}  loss {:.4}  acc {:5.1}%  top-5 {:5.1}%{}  {:>7.1} img/s  {:>6.1} s{}",
            row.epoch,
            self.total_epochs,
            row.split,
            row.loss,
            row.accuracy,
            row.top5,
            if train {
                format!("  lr {:.2e}", row.lr)
            } else {
                String::new()
            },
            row.images_per_sec,
            row.seconds,
            if interrupted { "  (interrupted)" } else { "" }
        );
        self.say(line);
        if let Some(f) = &mut self.steps {
            let _ = f.flush();
        }
        if interrupted {
            return;
        }
        if let Some(f) = &mut self.epochs_log {
            let _ = writeln!(
                f,
                "{},{},{},{},{},{},{:.2},{:.3}",
                row.epoch,
                row.split,
                row.loss,
                row.accuracy,
                row.top5,
                row.lr,
                row.images_per_sec,
                row.seconds
            );
            let _ = f.flush();
        }
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .epochs
            .push(row);
    }

    fn end(&mut self) {
        for f in [&mut self.steps, &mut self.epochs_log]
            .into_iter()
            .flatten()
        {
            let _ = f.flush();
        }
    }

    fn log_event_training(&mut self, _event: String) {}
}

impl EvaluationProgressLogger for Renderer {
    fn start_global_progress(&mut self, _total_tests: usize) {}
    fn start_test(&mut self, _name: &str, _total_items: usize) {}
    fn update_test_progress(&mut self, _items_processed: usize) {}
    fn end_test(&mut self) {}
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, _event: String) {}
}

impl MetricsRendererEvaluation for Renderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
}

impl MetricsRenderer for Renderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names
            .insert(definition.metric_id, definition.name.to_string());
    }
}
