//! `cargo xtask tune report STUDY_DIR`: what a study found, for a person deciding what to
//! train next. The best complete trials as ready-to-run configs; plots of the search; and the
//! top configs trained again with several seeds, ranked by mean and spread, because one run of
//! a small fine-tune is noisy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rekindle_model::Backend;
use rekindle_train::TrainConfig;
use rekindle_train::durable::dir::RunDir;
use rekindle_train::report::log::read_epochs;

use crate::error::TuneError;
use crate::launch::RESOLVED;
use crate::plots::{self, Slice};
use crate::run::best;
use crate::space::Distribution;
use crate::sql::Storage;
use crate::store::{Store, Trial, TrialState};
use crate::study::Study;
use crate::worker::trial_dir;

/// What to put in the report.
pub struct ReportOptions {
    /// Best complete trials written out as configs.
    pub top: usize,
    /// Of those, how many are trained again.
    pub rerun: usize,
    /// Seeds per re-run config (`train.seed` = 1, 2, ...).
    pub seeds: usize,
    /// Re-runs side by side.
    pub workers: usize,
    /// Overrides the re-runs' `run.backend`.
    pub backend: Option<Backend>,
    /// The program whose `retrain` subcommand trains one config (this one).
    pub program: PathBuf,
    /// Where the study's trials are (`--storage` as given to `tune`; none: DIR/study.db).
    pub storage: Option<String>,
}

/// One config trained again with several seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct Rerun {
    /// The trial it came from.
    pub trial: i64,
    /// The objective of the trial itself.
    pub searched: f64,
    /// The objective of each seed's run.
    pub values: Vec<f64>,
}

impl Rerun {
    /// Mean of the seeds' values.
    pub fn mean(&self) -> f64 {
        self.values.iter().sum::<f64>() / self.values.len().max(1) as f64
    }

    /// Sample standard deviation of the seeds' values (0 for one seed).
    pub fn std(&self) -> f64 {
        let n = self.values.len();
        if n < 2 {
            return 0.0;
        }
        let m = self.mean();
        (self.values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    }
}

/// What the report found and wrote.
pub struct Report {
    /// The best complete trials, best first, with the config written for each.
    pub best: Vec<(Trial, PathBuf)>,
    /// Each searched key's share of the objective's variance, largest first.
    pub importance: Vec<(String, f64)>,
    /// The re-runs, ranked by mean (best first).
    pub reruns: Vec<Rerun>,
    /// The PNGs and the Markdown summary.
    pub files: Vec<PathBuf>,
}

/// Builds the report of the study in `dir` into `dir/report/`.
pub fn report(dir: &Path, opts: &ReportOptions) -> Result<Report, TuneError> {
    let study = Study::load(&dir.join(RESOLVED))?;
    let storage = Storage::parse(opts.storage.as_deref(), dir, &study.name).map_err(|message| {
        TuneError::Study {
            path: dir.to_path_buf(),
            message,
        }
    })?;
    let store = Store::open(&storage)?;
    let trials = store.trials()?;
    let reports = store.reports()?;
    let out = dir.join("report");
    std::fs::create_dir_all(&out).map_err(|source| TuneError::Io {
        path: out.clone(),
        source,
    })?;
    let maximize = study.section.objective.maximize();
    let mut complete: Vec<&Trial> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete && t.value.is_some_and(|v| !v.is_nan()))
        .collect();
    complete.sort_by(|a, b| {
        let (x, y) = (a.value.unwrap_or(0.0), b.value.unwrap_or(0.0));
        let order = if maximize {
            y.total_cmp(&x)
        } else {
            x.total_cmp(&y)
        };
        order.then(a.id.cmp(&b.id))
    });
    let mut best = Vec::new();
    for (rank, t) in complete.iter().take(opts.top).enumerate() {
        let path = out.join(format!("best-{}.toml", rank + 1));
        let mut cfg = trial_config(dir, t.id)?;
        cfg.run.dir = PathBuf::from("runs").join(format!("{}-best-{}", study.name, rank + 1));
        write(&path, &cfg.to_toml())?;
        best.push(((*t).clone(), path));
    }
    let importance = importance(&study, &complete);
    let files = draw(&out, &study, &trials, &reports, &importance)?;
    let reruns = rerun(
        dir,
        &study,
        &complete[..opts.rerun.min(complete.len())],
        opts,
    )?;
    let mut r = Report {
        best,
        importance,
        reruns,
        files,
    };
    let md = out.join("report.md");
    write(&md, &r.markdown(&study))?;
    r.files.push(md);
    Ok(r)
}

/// The effective train config of trial `id`.
fn trial_config(dir: &Path, id: i64) -> Result<TrainConfig, TuneError> {
    let path = trial_dir(dir, id).join("config.toml");
    TrainConfig::from_file(&path).map_err(|e| TuneError::Study {
        path,
        message: e.to_string(),
    })
}

fn write(path: &Path, text: &str) -> Result<(), TuneError> {
    std::fs::write(path, text).map_err(|source| TuneError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A searched value as a number on its axis: the value, its log10, or a choice's index.
fn coordinate(d: &Distribution, v: &toml::Value) -> Option<f64> {
    let n = v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
    match d {
        Distribution::Choice(values) => values.iter().position(|c| c == v).map(|i| i as f64),
        Distribution::LogUniform(..) => n.filter(|x| *x > 0.0).map(f64::log10),
        _ => n,
    }
}

/// Each key's first-order share of the objective's variance over the complete trials where
/// it was searched (the correlation ratio: between-group over total variance, a choice's
/// values as groups, a range cut into equal-count bins). A quick stand-in for Optuna's fANOVA,
/// which needs a random forest; 0 with fewer than 4 trials.
fn importance(study: &Study, complete: &[&Trial]) -> Vec<(String, f64)> {
    let mut shares: Vec<(String, f64)> = study
        .space
        .0
        .iter()
        .map(|(key, param)| {
            let mut xy: Vec<(f64, f64)> = complete
                .iter()
                .filter_map(|t| {
                    let x = coordinate(&param.distribution, t.point.get(key)?)?;
                    Some((x, t.value?))
                })
                .collect();
            (key.clone(), variance_share(&mut xy, &param.distribution))
        })
        .collect();
    shares.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    shares
}

/// The correlation ratio of `y` grouped by `x` (see [`importance`]).
fn variance_share(xy: &mut [(f64, f64)], d: &Distribution) -> f64 {
    let n = xy.len();
    if n < 4 {
        return 0.0;
    }
    xy.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut groups: Vec<Vec<f64>> = Vec::new();
    if matches!(d, Distribution::Choice(_)) {
        let mut by: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for (x, y) in xy.iter() {
            by.entry(*x as i64).or_default().push(*y);
        }
        groups.extend(by.into_values());
    } else {
        let bins = (n / 4).clamp(2, 5);
        for b in 0..bins {
            let group = &xy[b * n / bins..(b + 1) * n / bins];
            groups.push(group.iter().map(|p| p.1).collect());
        }
    }
    let mean = xy.iter().map(|p| p.1).sum::<f64>() / n as f64;
    let total: f64 = xy.iter().map(|p| (p.1 - mean).powi(2)).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let between: f64 = groups
        .iter()
        .filter(|g| !g.is_empty())
        .map(|g| {
            let m = g.iter().sum::<f64>() / g.len() as f64;
            g.len() as f64 * (m - mean).powi(2)
        })
        .sum();
    (between / total).clamp(0.0, 1.0)
}

/// history.png, slices.png, curves.png and importance.png in `out`.
fn draw(
    out: &Path,
    study: &Study,
    trials: &[Trial],
    reports: &BTreeMap<i64, crate::Reports>,
    importance: &[(String, f64)],
) -> Result<Vec<PathBuf>, TuneError> {
    let y = match study.section.objective {
        crate::Objective::ValidAccuracy => "validation accuracy (%)",
        crate::Objective::ValidLoss => "validation loss",
    };
    let maximize = study.section.objective.maximize();
    let ended: Vec<&Trial> = trials
        .iter()
        .filter(|t| matches!(t.state, TrialState::Complete | TrialState::Pruned))
        .collect();
    let points: Vec<_> = ended
        .iter()
        .filter_map(|t| Some((t.id as f64, t.value?, t.state == TrialState::Complete)))
        .collect();
    let mut best_so_far = Vec::new();
    let mut best: Option<f64> = None;
    for &(x, v, complete) in &points {
        if complete && !v.is_nan() {
            let better = best.is_none_or(|b| if maximize { v > b } else { v < b });
            if better {
                best = Some(v);
            }
        }
        if let Some(b) = best {
            best_so_far.push((x, b));
        }
    }
    let slices: Vec<Slice> = study
        .space
        .0
        .iter()
        .map(|(key, param)| {
            let d = &param.distribution;
            Slice {
                key: key.clone(),
                points: ended
                    .iter()
                    .filter_map(|t| {
                        let x = coordinate(d, t.point.get(key)?)?;
                        Some((x, t.value?, t.state == TrialState::Complete))
                    })
                    .collect(),
                log: matches!(d, Distribution::LogUniform(..)),
                labels: match d {
                    Distribution::Choice(v) => Some(v.iter().map(label).collect()),
                    _ => None,
                },
            }
        })
        .collect();
    let curves: Vec<(Vec<(f64, f64)>, bool)> = ended
        .iter()
        .filter_map(|t| {
            let r = reports.get(&t.id)?;
            let pts = r.iter().map(|(s, v)| (*s as f64, *v)).collect();
            Some((pts, t.state == TrialState::Complete))
        })
        .collect();
    let files = [
        (
            "history.png",
            plots::history(&out.join("history.png"), &points, &best_so_far, y),
        ),
        (
            "slices.png",
            plots::slices(&out.join("slices.png"), &slices, y),
        ),
        (
            "curves.png",
            plots::curves(&out.join("curves.png"), &curves, y),
        ),
        (
            "importance.png",
            plots::importance(&out.join("importance.png"), importance),
        ),
    ];
    files
        .into_iter()
        .map(|(name, result)| {
            let path = out.join(name);
            result
                .map(|()| path.clone())
                .map_err(|message| TuneError::Study { path, message })
        })
        .collect()
}

/// A value for a table: floats to 4 significant digits.
fn short(v: &toml::Value) -> String {
    match v.as_float() {
        Some(x) if x != 0.0 && !(1e-2..1e4).contains(&x.abs()) => format!("{x:.3e}"),
        Some(x) => format!("{:.4}", x),
        None => label(v),
    }
}

/// A choice's value as a short label (strings without their quotes).
fn label(v: &toml::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// Trains each of `top` again with seeds 1..=`opts.seeds`, side by side, each run in its own
/// process and directory (`report/rerun-TRIAL-seed-S`, resumed if a report was interrupted).
fn rerun(
    dir: &Path,
    study: &Study,
    top: &[&Trial],
    opts: &ReportOptions,
) -> Result<Vec<Rerun>, TuneError> {
    let mut jobs = Vec::new();
    for t in top {
        for seed in 1..=opts.seeds as u64 {
            let mut cfg = trial_config(dir, t.id)?;
            cfg.train.seed = seed;
            cfg.run.dir = dir
                .join("report")
                .join(format!("rerun-{:04}-seed-{seed}", t.id));
            if let Some(b) = opts.backend {
                cfg.run.backend = b;
            }
            jobs.push((t.id, cfg));
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / opts.workers.max(1)).max(1);
    let mut running: Vec<(Child, PathBuf)> = Vec::new();
    let mut queue = jobs.iter();
    loop {
        while running.len() < opts.workers.max(1) {
            let Some((id, cfg)) = queue.next() else { break };
            eprintln!("re-running trial {id} with seed {}", cfg.train.seed);
            running.push((spawn(cfg, threads, &opts.program)?, cfg.run.dir.clone()));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut still = Vec::new();
        for (mut child, run) in running {
            match child.try_wait() {
                Ok(Some(status)) if !status.success() => {
                    // Its value reads back as NaN (no epochs): the others still count.
                    eprintln!(
                        "warning: the re-run in {} failed ({status}); see its train.log",
                        run.display()
                    );
                }
                Ok(Some(_)) => {
                    // Its logs and model file are the result; the checkpoints are 10x that.
                    let _ = std::fs::remove_dir_all(RunDir::new(&run).checkpoints());
                }
                Ok(None) => still.push((child, run)),
                Err(source) => return Err(TuneError::Io { path: run, source }),
            }
        }
        running = still;
    }
    let mut reruns: Vec<Rerun> = top
        .iter()
        .map(|t| Rerun {
            trial: t.id,
            searched: t.value.unwrap_or(f64::NAN),
            values: jobs
                .iter()
                .filter(|(id, _)| *id == t.id)
                .map(|(_, cfg)| {
                    let rows = read_epochs(&RunDir::new(&cfg.run.dir)).unwrap_or_default();
                    best(study, &rows).unwrap_or(f64::NAN)
                })
                .collect(),
        })
        .collect();
    let maximize = study.section.objective.maximize();
    reruns.sort_by(|a, b| {
        let order = a.mean().total_cmp(&b.mean());
        if maximize { order.reverse() } else { order }
    });
    Ok(reruns)
}

/// One re-run in its own process: `rekindle-tune retrain --config F`.
fn spawn(cfg: &TrainConfig, threads: usize, program: &Path) -> Result<Child, TuneError> {
    let dir = &cfg.run.dir;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TuneError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let config = dir.join("rerun.toml");
    write(&config, &cfg.to_toml())?;
    let log = std::fs::File::create(dir.join("train.log")).map_err(io(dir))?;
    Command::new(program)
        .arg("retrain")
        .arg("--config")
        .arg(&config)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(io(program))
}

impl Report {
    /// `report.md`: the tables and the plots.
    pub fn markdown(&self, study: &Study) -> String {
        let mut s = format!("# Study report: {}\n\n## Best trials\n\n", study.name);
        s += "| rank | trial | value | point | config |\n|---|---|---|---|---|\n";
        for (rank, (t, path)) in self.best.iter().enumerate() {
            let point: Vec<String> = t
                .point
                .iter()
                .map(|(k, v)| format!("{k}={}", short(v)))
                .collect();
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            s += &format!(
                "| {} | {} | {:.4} | {} | `{file}` |\n",
                rank + 1,
                t.id,
                t.value.unwrap_or(f64::NAN),
                point.join(", ")
            );
        }
        if !self.reruns.is_empty() {
            s += "\n## Re-runs with other seeds, ranked by mean\n\n";
            s += "| trial | searched | mean | std | seeds |\n|---|---|---|---|---|\n";
            for r in &self.reruns {
                let v: Vec<String> = r.values.iter().map(|v| format!("{v:.2}")).collect();
                s += &format!(
                    "| {} | {:.2} | {:.2} | {:.2} | {} |\n",
                    r.trial,
                    r.searched,
                    r.mean(),
                    r.std(),
                    v.join(", ")
                );
            }
        }
        s += "\n## Parameter importance (first-order share of variance)\n\n| key | share |\n|---|---|\n";
        for (k, v) in &self.importance {
            s += &format!("| `{k}` | {v:.2} |\n");
        }
        s += "\n![history](history.png)\n![slices](slices.png)\n![curves](curves.png)\n\
              ![importance](importance.png)\n";
        s
    }

    /// One JSON object: best trials, re-runs, importance, files.
    pub fn json(&self) -> String {
        serde_json::json!({
            "best": self.best.iter().map(|(t, p)| serde_json::json!({
                "trial": t.id, "value": t.value, "config": p.display().to_string(),
            })).collect::<Vec<_>>(),
            "reruns": self.reruns.iter().map(|r| serde_json::json!({
                "trial": r.trial, "searched": r.searched, "values": r.values,
                "mean": r.mean(), "std": r.std(),
            })).collect::<Vec<_>>(),
            "importance": self.importance.iter().map(|(k, v)| serde_json::json!({
                "key": k, "share": v,
            })).collect::<Vec<_>>(),
            "files": self.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_decides_the_objective_explains_its_variance_and_noise_does_not() {
        let d = Distribution::Uniform(0.0, 1.0);
        let mut decisive: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, 2.0 * i as f64)).collect();
        assert!(variance_share(&mut decisive, &d) > 0.9);
        // y alternates regardless of x: every bin has the same mean.
        let mut noise: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, (i % 2) as f64)).collect();
        assert!(variance_share(&mut noise, &d) < 0.05);
        let c = Distribution::Choice(vec!["a".into(), "b".into()]);
        let mut by_choice: Vec<(f64, f64)> = (0..10)
            .map(|i| ((i % 2) as f64, (i % 2) as f64 * 5.0))
            .collect();
        assert!((variance_share(&mut by_choice, &c) - 1.0).abs() < 1e-12);
        assert_eq!(variance_share(&mut [(0.0, 1.0), (1.0, 2.0)], &d), 0.0);
    }

    #[test]
    fn reruns_rank_by_mean_with_the_sample_spread() {
        let r = Rerun {
            trial: 3,
            searched: 80.0,
            values: vec![78.0, 80.0, 82.0],
        };
        assert_eq!(r.mean(), 80.0);
        assert!((r.std() - 2.0).abs() < 1e-12);
    }
}
