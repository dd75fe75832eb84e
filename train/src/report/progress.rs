//! What a person sees while a run trains: Burn's learner reports every metric to a renderer;
//! this one draws an indicatif bar per epoch split (one summary line per split when stderr is
//! not a terminal), hands every step and epoch to the CSV log, and stops the run on a NaN or
//! infinite loss.

use std::collections::HashMap;
use std::io::IsTerminal;
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

use crate::durable::dir::RunDir;
use crate::report::log::{EpochRow, MetricsLog};
use crate::run::ema::EmaWatch;
use crate::run::watch::Watch;

/// State shared between the renderer (on Burn's event thread) and the run.
#[derive(Default)]
pub struct Shared {
    /// Why the run stopped itself (non-finite loss), if it did.
    pub stop_reason: Option<String>,
    /// Every completed split so far in this process.
    pub epochs: Vec<EpochRow>,
    /// Told of each epoch's validation row; may halt the run.
    pub watch: Option<Box<dyn Watch>>,
    /// Why the watch halted the run, if it did.
    pub halted: Option<String>,
    /// The weight average's validation, logged after the raw weights'.
    pub ema: Option<Arc<EmaWatch>>,
}

/// Burn's renderer for a run: progress bars, CSV logs, NaN guard.
pub struct Renderer {
    names: HashMap<MetricId, String>,
    interrupter: Interrupter,
    shared: Arc<Mutex<Shared>>,
    log: MetricsLog,
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
    /// (a resumed run) and drops the rest; also into TensorBoard event files if asked.
    pub fn new(
        dir: &RunDir,
        keep_epochs: usize,
        tensorboard: bool,
        interrupter: Interrupter,
        shared: Arc<Mutex<Shared>>,
    ) -> std::io::Result<Self> {
        let log = MetricsLog::open(dir, keep_epochs, tensorboard)?;
        Ok(Self {
            names: HashMap::new(),
            interrupter,
            shared,
            log,
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
            let values = [get("loss"), get("accuracy"), get("lr"), speed];
            self.log.step(self.epoch, self.step, values);
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
        if interrupted {
            if let Some(ema) = &self.shared.lock().unwrap_or_else(|e| e.into_inner()).ema {
                ema.take(); // a partial validation: the resumed run validates again
            }
            self.log.flush();
            return;
        }
        self.log.epoch(&row);
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let halt = match &mut shared.watch {
            Some(watch) if !train => watch.epoch(&row),
            _ => None,
        };
        shared.epochs.push(row);
        if let (false, Some(ema)) = (train, shared.ema.clone()) {
            let row = ema.take().row(self.epoch, seconds);
            ema.record(row.epoch, row.accuracy);
            self.say(format!(
                "epoch {:>2}/{} {:<5}  loss {:.4}  acc {:5.1}%  top-5 {:5.1}%  (weight average)",
                row.epoch, self.total_epochs, "ema", row.loss, row.accuracy, row.top5
            ));
            self.log.epoch(&row);
            shared.epochs.push(row);
        }
        if let Some(reason) = halt {
            self.interrupter.stop(Some(&reason));
            shared.halted = Some(reason);
        }
    }

    fn end(&mut self) {
        self.log.flush();
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
