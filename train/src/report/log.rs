//! The run's CSV logs: one row per training step, one per epoch and split. Written as the run
//! goes (flushed per row, so a killed run's log shows exactly how far it got) and read back for
//! resume, the summary, plots and the plateau schedule.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::durable::dir::RunDir;
use crate::report::tensorboard::EventWriter;

const STEPS_HEADER: &str = "epoch,step,loss,accuracy,lr,images_per_sec";
const EPOCHS_HEADER: &str = "epoch,split,loss,accuracy,top5,lr,images_per_sec,seconds";

/// One epoch of one split, as logged.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
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

/// The two logs of a run, open for appending, and its TensorBoard event file if asked for.
pub struct MetricsLog {
    steps: BufWriter<File>,
    epochs: BufWriter<File>,
    tensorboard: Option<EventWriter>,
    /// Steps logged so far over the whole run (TensorBoard's step axis).
    global_step: u64,
}

impl MetricsLog {
    /// Opens both logs of `dir`, keeping the rows of epochs up to `keep_epochs` (a resumed
    /// run) and dropping the rest; with `tensorboard`, also a new event file under
    /// `dir/tensorboard/` whose steps go on from the kept rows.
    pub fn open(dir: &RunDir, keep_epochs: usize, tensorboard: bool) -> std::io::Result<Self> {
        let (steps, kept_steps) = open_log(&dir.steps_csv(), STEPS_HEADER, keep_epochs)?;
        let tensorboard = if tensorboard {
            let mut events = EventWriter::create(&dir.tensorboard())?;
            events.start(kept_steps as u64)?;
            Some(events)
        } else {
            None
        };
        Ok(Self {
            steps,
            epochs: open_log(&dir.epochs_csv(), EPOCHS_HEADER, keep_epochs)?.0,
            tensorboard,
            global_step: kept_steps as u64,
        })
    }

    /// One training step: epoch, step in the epoch, loss, accuracy, lr, images per second.
    pub fn step(&mut self, epoch: usize, step: usize, values: [f64; 4]) {
        let [loss, accuracy, lr, speed] = values;
        let _ = writeln!(
            self.steps,
            "{epoch},{step},{loss},{accuracy},{lr},{speed:.2}"
        );
        let _ = self.steps.flush();
        if let Some(tb) = &mut self.tensorboard {
            let scalars = [
                ("train/loss", loss),
                ("train/accuracy", accuracy),
                ("train/lr", lr),
                ("train/images_per_sec", speed),
            ];
            let _ = tb.scalars(self.global_step, &scalars);
        }
        self.global_step += 1;
    }

    /// One finished epoch of one split.
    pub fn epoch(&mut self, row: &EpochRow) {
        let _ = writeln!(
            self.epochs,
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
        let _ = self.epochs.flush();
        if let Some(tb) = &mut self.tensorboard {
            // On the step axis too, at the epoch's last step: a resumed run's start at the next
            // step drops every later value of an earlier attempt and keeps this one.
            let tag = |name: &str| format!("epoch/{}/{name}", row.split);
            let scalars = [
                (tag("loss"), row.loss),
                (tag("accuracy"), row.accuracy),
                (tag("top5"), row.top5),
            ];
            let scalars: Vec<(&str, f64)> = scalars.iter().map(|(t, v)| (t.as_str(), *v)).collect();
            let _ = tb.scalars(self.global_step.saturating_sub(1), &scalars);
        }
    }

    /// Writes out whatever is buffered.
    pub fn flush(&mut self) {
        let _ = self.steps.flush();
        let _ = self.epochs.flush();
    }
}

/// Opens a CSV log for appending, keeping the header and the rows of epochs up to `keep`;
/// returns it and the number of rows kept.
fn open_log(path: &Path, header: &str, keep: usize) -> std::io::Result<(BufWriter<File>, usize)> {
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
    let rows = kept.len();
    // Rewritten whole before appending: a kill mid-rewrite must not lose the kept rows.
    let text: String = std::iter::once(header.to_string())
        .chain(kept)
        .map(|l| l + "\n")
        .collect();
    crate::durable::atomic::write(path, text.as_bytes())?;
    Ok((
        BufWriter::new(OpenOptions::new().append(true).open(path)?),
        rows,
    ))
}

/// Reads the epoch log of a run directory.
pub fn read_epochs(dir: &RunDir) -> std::io::Result<Vec<EpochRow>> {
    Ok(parse_epochs(&std::fs::read_to_string(dir.epochs_csv())?))
}

/// The rows of an epoch log's text (header first).
pub fn parse_epochs(text: &str) -> Vec<EpochRow> {
    let num = |s: Option<&str>| s.and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    text.lines()
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
        .collect()
}

/// Reads the step log: (global step, epoch, loss, accuracy, lr) per row.
pub fn read_steps(dir: &RunDir) -> std::io::Result<Vec<[f64; 5]>> {
    Ok(parse_steps(&std::fs::read_to_string(dir.steps_csv())?))
}

/// The rows of a step log's text (header first): (global step, epoch, loss, accuracy, lr).
pub fn parse_steps(text: &str) -> Vec<[f64; 5]> {
    text.lines()
        .skip(1)
        .enumerate()
        .filter_map(|(i, l)| {
            let f: Vec<f64> = l
                .split(',')
                .map(|v| v.parse().unwrap_or(f64::NAN))
                .collect();
            (f.len() >= 5).then(|| [i as f64 + 1.0, f[0], f[2], f[3], f[4]])
        })
        .collect()
}
