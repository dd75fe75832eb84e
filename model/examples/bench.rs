//! ResNet throughput (images/s) and peak memory per backend, optionally against PyTorch
//! measured in the same run. Driven by `cargo xtask bench`, which builds it with the right
//! backend features; every measurement runs in a child process so its peak RSS is its own.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use clap::Parser;
use rekindle_model::{Arch, Backend, ResNetConfig, backend};
use serde::{Deserialize, Serialize};

/// Keeps freed pages for reuse (see `rekindle_kernels::allocator`).
#[global_allocator]
static ALLOCATOR: rekindle_kernels::allocator::Allocator = rekindle_kernels::allocator::Allocator;

#[derive(Parser, Debug)]
#[command(about = "ResNet inference and train-step throughput, optionally vs PyTorch")]
struct Args {
    /// Backends to measure, comma-separated (default: every compiled one).
    #[arg(long, value_delimiter = ',')]
    backend: Vec<String>,
    /// Architecture.
    #[arg(long, default_value = "resnet50")]
    arch: String,
    /// Modes: inference, train.
    #[arg(long, value_delimiter = ',', default_value = "inference,train")]
    mode: Vec<Mode>,
    /// Square input resolutions.
    #[arg(long, value_delimiter = ',', default_value = "224,64")]
    res: Vec<usize>,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    batch: Vec<usize>,
    /// Keep measuring a row until this many seconds have passed (after the warm-up steps).
    #[arg(long, default_value_t = 3.0)]
    min_time: f64,
    /// Untimed steps first (kernel compilation, autotuning, the allocator's first pages).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed steps at least, however long they take.
    #[arg(long, default_value_t = 5)]
    min_steps: usize,
    /// Batches of random images and labels the steps cycle through, a new one each step, the
    /// same on both sides: one batch stepped over and over drives the loss to zero and the
    /// arithmetic into denormals, which is not training.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pool: u64,
    /// Flush denormals to zero on both sides: FTZ/DAZ on our compute threads
    /// (`rekindle_kernels::denormals`), `torch.set_flush_denormal(True)` on PyTorch's.
    #[arg(long)]
    flush_denormal: bool,
    /// Measure PyTorch (2 threads) right after each row and print the ratio.
    #[arg(long)]
    vs_pytorch: bool,
    /// Measure each row this many times, alternating with PyTorch (ours, PyTorch, ours, ...):
    /// the row reports medians and the ratio's spread, since one pass of each side can misstate
    /// a ratio several-fold on a shared machine.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Python with torch + torchvision (default: $REKINDLE_PYTHON, else python3).
    #[arg(long)]
    python: Option<String>,
    /// One JSON object per row instead of a table.
    #[arg(long)]
    json: bool,
    /// Internal: measure one row in this process (`backend:mode:res:batch`).
    #[arg(long, hide = true)]
    one: Option<String>,
    /// Internal: the row's batches, `PREFIX.images` (f32) and `PREFIX.labels` (i64).
    #[arg(long, hide = true)]
    pool_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Inference,
    Train,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Inference => "inference",
            Mode::Train => "train",
        }
    }
}

/// What one measurement reports (the Rust child and the PyTorch script print the same).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Measurement {
    images_per_s: f64,
    peak_rss_mb: f64,
    iters: usize,
    /// Each timed step, in milliseconds.
    step_ms: Vec<f64>,
}

#[derive(Serialize)]
struct Row<'a> {
    backend: &'a str,
    mode: &'a str,
    res: usize,
    batch: usize,
    images_per_s: f64,
    peak_rss_mb: f64,
    /// PyTorch's better layout: each repetition's faster of the two, then the median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pytorch_images_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pytorch_peak_rss_mb: Option<f64>,
    /// PyTorch in its default (NCHW) layout, median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pytorch_nchw_images_per_s: Option<f64>,
    /// PyTorch with the model and inputs in `channels_last`, median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pytorch_channels_last_images_per_s: Option<f64>,
    /// Median of the per-repetition ratios against the better PyTorch.
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_max: Option<f64>,
    /// Per-step milliseconds over every repetition: median, fastest, slowest.
    step_ms: Spread,
    #[serde(skip_serializing_if = "Option::is_none")]
    pytorch_step_ms: Option<Spread>,
    warmup: usize,
    pool: u64,
    flush_denormal: bool,
}

/// Median, minimum and maximum of some values.
#[derive(Clone, Copy, Serialize)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of<'a>(values: impl Iterator<Item = &'a f64>) -> Self {
        let v: Vec<f64> = values.copied().collect();
        Self {
            median: if v.is_empty() { f64::NAN } else { median(&v) },
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Peak resident memory of this process (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// How long to measure: warm-up steps, then timed ones until both bounds are met.
#[derive(Clone, Copy)]
struct Timing {
    warmup: usize,
    min_steps: usize,
    min_time: f64,
}

/// Runs `timing.warmup` untimed steps, then timed ones until `min_time` has passed and at least
/// `min_steps` ran; `step(i)` is the i-th step. Returns (images/s, per-step milliseconds).
fn time_steps(batch: usize, timing: Timing, mut step: impl FnMut(usize)) -> (f64, Vec<f64>) {
    for i in 0..timing.warmup {
        step(i);
    }
    let start = Instant::now();
    let mut step_ms = Vec::new();
    while step_ms.len() < timing.min_steps.max(1) || start.elapsed().as_secs_f64() < timing.min_time
    {
        let t = Instant::now();
        step(timing.warmup + step_ms.len());
        step_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let images_per_s = (step_ms.len() * batch) as f64 / start.elapsed().as_secs_f64();
    (images_per_s, step_ms)
}

/// Writes `pool` batches of random images (uniform in [0, 1)) and labels for a row, drawn from
/// a fixed seed on the CPU, to `PREFIX.images` and `PREFIX.labels`: both sides read the same.
fn write_pool(prefix: &Path, pool: usize, res: usize, batch: usize) -> Result<(), String> {
    let device = Device::flex();
    device.seed(7);
    let n = pool * batch;
    let images = Tensor::<4>::random([n, 3, res, res], Distribution::Default, &device)
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    let labels = Tensor::<1, Int>::random([n], Distribution::Uniform(0.0, 1000.0), &device)
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .map_err(|e| format!("{e:?}"))?;
    let write = |ext: &str, bytes: Vec<u8>| {
        std::fs::write(prefix.with_extension(ext), bytes).map_err(|e| e.to_string())
    };
    write(
        "images",
        images.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )?;
    write(
        "labels",
        labels.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

/// The row's batches on `device`: (images, labels) each.
fn read_pool(
    prefix: &Path,
    res: usize,
    batch: usize,
    device: &Device,
) -> Result<Vec<(Tensor<4>, Tensor<1, Int>)>, String> {
    let read = |ext: &str| std::fs::read(prefix.with_extension(ext)).map_err(|e| e.to_string());
    let images: Vec<f32> = read("images")?
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let labels: Vec<i64> = read("labels")?
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
        .collect();
    let per = 3 * res * res * batch;
    Ok(images
        .chunks_exact(per)
        .zip(labels.chunks_exact(batch))
        .map(|(x, y)| {
            (
                Tensor::<4>::from_data(TensorData::new(x.to_vec(), [batch, 3, res, res]), device),
                Tensor::<1, Int>::from_data(TensorData::new(y.to_vec(), [batch]), device),
            )
        })
        .collect())
}

fn measure_one(
    spec: &str,
    arch: Arch,
    timing: Timing,
    pool_file: &Path,
    flush: bool,
) -> Result<Measurement, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [backend, mode, res, batch] = parts[..] else {
        return Err(format!("bad row spec `{spec}`"));
    };
    let backend: Backend = backend.parse().map_err(|e| format!("{e}"))?;
    let mode = <Mode as clap::ValueEnum>::from_str(mode, true)?;
    let res: usize = res.parse().map_err(|e| format!("res: {e}"))?;
    let batch: usize = batch.parse().map_err(|e| format!("batch: {e}"))?;
    if flush && !rekindle_kernels::denormals::flush_denormals() {
        return Err("--flush-denormal: this CPU has no FTZ/DAZ".into());
    }
    let device = backend.device().map_err(|e| e.to_string())?;
    device.seed(0);
    let config = ResNetConfig::imagenet(arch);

    let (images_per_s, step_ms) = match mode {
        Mode::Inference => {
            // What `rekindle-infer` and the service run: BatchNorm folded into the convolutions.
            let model = config.init(&device).fold_batchnorm();
            let batches = read_pool(pool_file, res, batch, &device)?;
            time_steps(batch, timing, |i| {
                let (x, _) = &batches[i % batches.len()];
                // Reading the logits back waits for the whole forward pass.
                let _ = model.forward(x.clone()).into_data();
            })
        }
        Mode::Train => {
            let device = device.autodiff();
            let mut model = Some(config.init(&device));
            let mut optim = SgdConfig::new()
                .with_momentum(Some(
                    MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
                ))
                .init();
            let loss_fn = CrossEntropyLossConfig::new().init(&device);
            let batches = read_pool(pool_file, res, batch, &device)?;
            time_steps(batch, timing, |i| {
                let (x, y) = &batches[i % batches.len()];
                let m = model.take().expect("model is put back after every step");
                let loss = loss_fn.forward(m.forward(x.clone()), y.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &m);
                let m = optim.step(0.01, m, grads);
                // Reading a weight back waits for the optimiser step.
                let _ = m
                    .conv1
                    .weight
                    .val()
                    .slice([0..1, 0..1, 0..1, 0..1])
                    .into_data();
                model = Some(m);
            })
        }
    };
    Ok(Measurement {
        images_per_s,
        peak_rss_mb: peak_rss_mb(),
        iters: step_ms.len(),
        step_ms,
    })
}

fn run_child(cmd: &mut Command) -> Result<Measurement, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!(
            "{} ({})",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
            out.status
        ));
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line).map_err(|e| format!("unreadable result `{line}`: {e}"))
}

/// One repetition of a row: ours, then (with `--vs-pytorch`) PyTorch in its default memory
/// layout and in `channels_last`, which performance-minded PyTorch users set.
struct Rep {
    ours: Measurement,
    torch: Option<[Measurement; 2]>,
}

impl Rep {
    /// The faster of PyTorch's two layouts in this repetition.
    fn best_torch(&self) -> Option<&Measurement> {
        self.torch.as_ref().map(|[a, b]| {
            if a.images_per_s >= b.images_per_s {
                a
            } else {
                b
            }
        })
    }
}

/// Runs ours and (when `vs_pytorch`) PyTorch both ways alternately, `repeat` times;
/// `torch(channels_last)` is PyTorch's command.
fn alternate(
    repeat: usize,
    vs_pytorch: bool,
    ours: impl Fn() -> Command,
    torch: impl Fn(bool) -> Command,
) -> Result<Vec<Rep>, String> {
    let pytorch = |channels_last: bool| {
        run_child(&mut torch(channels_last)).map_err(|e| format!("PyTorch: {e}"))
    };
    (0..repeat.max(1))
        .map(|_| {
            let ours = run_child(&mut ours())?;
            let torch = if vs_pytorch {
                Some([pytorch(false)?, pytorch(true)?])
            } else {
                None
            };
            Ok(Rep { ours, torch })
        })
        .collect()
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_by<T>(items: &[T], f: impl Fn(&T) -> f64) -> f64 {
    median(&items.iter().map(f).collect::<Vec<_>>())
}

/// A row from its repetitions: medians, the ratio against the better PyTorch layout with its
/// spread, peaks, and per-step times.
fn summarize(
    backend: &'static str,
    mode: Mode,
    res: usize,
    batch: usize,
    reps: &[Rep],
    args: &Args,
) -> Row<'static> {
    let torch = |layout: usize| {
        args.vs_pytorch.then(|| {
            median_by(reps, |r| {
                r.torch
                    .as_ref()
                    .map_or(f64::NAN, |t| t[layout].images_per_s)
            })
        })
    };
    let best: Vec<&Measurement> = reps.iter().filter_map(Rep::best_torch).collect();
    let ratios: Vec<f64> = reps
        .iter()
        .zip(&best)
        .map(|(r, t)| r.ours.images_per_s / t.images_per_s)
        .collect();
    let vs = args.vs_pytorch;
    Row {
        backend,
        mode: mode.name(),
        res,
        batch,
        images_per_s: median_by(reps, |r| r.ours.images_per_s),
        peak_rss_mb: reps.iter().map(|r| r.ours.peak_rss_mb).fold(0.0, f64::max),
        pytorch_images_per_s: vs.then(|| median_by(&best, |t| t.images_per_s)),
        pytorch_peak_rss_mb: vs.then(|| best.iter().map(|t| t.peak_rss_mb).fold(0.0, f64::max)),
        pytorch_nchw_images_per_s: torch(0),
        pytorch_channels_last_images_per_s: torch(1),
        ratio: vs.then(|| median(&ratios)),
        ratio_min: vs.then(|| ratios.iter().copied().fold(f64::INFINITY, f64::min)),
        ratio_max: vs.then(|| ratios.iter().copied().fold(0.0, f64::max)),
        step_ms: Spread::of(reps.iter().flat_map(|r| &r.ours.step_ms)),
        pytorch_step_ms: vs.then(|| Spread::of(best.iter().flat_map(|t| &t.step_ms))),
        warmup: args.warmup,
        pool: args.pool,
        flush_denormal: args.flush_denormal,
    }
}

fn main() -> ExitCode {
    rekindle_kernels::allocator::keep_freed_pages();
    let args = Args::parse();
    let arch: Arch = match args.arch.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timing = Timing {
        warmup: args.warmup,
        min_steps: args.min_steps,
        min_time: args.min_time,
    };
    if let Some(spec) = &args.one {
        let Some(pool_file) = &args.pool_file else {
            eprintln!("error: --one needs --pool-file");
            return ExitCode::FAILURE;
        };
        return match measure_one(spec, arch, timing, pool_file, args.flush_denormal) {
            Ok(m) => {
                println!("{}", serde_json::to_string(&m).expect("plain struct"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }

    let backends: Vec<Backend> = if args.backend.is_empty() {
        Backend::compiled()
    } else {
        match args.backend.iter().map(|b| b.parse::<Backend>()).collect() {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    for b in &backends {
        if let Err(e) = b.device() {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let python = args
        .python
        .clone()
        .or_else(|| std::env::var("REKINDLE_PYTHON").ok())
        .unwrap_or_else(|| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/bench_pytorch.py");
    let exe = std::env::current_exe().expect("own path");
    let pools = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: a folder for the batches: {e}");
            return ExitCode::FAILURE;
        }
    };

    if !args.json {
        println!(
            "{arch}, backends: {}, threads: PyTorch 2, its faster layout (NCHW or channels_last) \
             each repetition; {} warm-up steps, then at least {} steps \
             and {} s a row, over {} batches of random images; denormals {}",
            backend::names(&backends),
            args.warmup,
            args.min_steps,
            args.min_time,
            args.pool,
            if args.flush_denormal {
                "flushed to zero on both sides"
            } else {
                "kept (both sides)"
            }
        );
        print!(
            "{:<8} {:<9} {:>4} {:>5} {:>10} {:>9}",
            "backend", "mode", "res", "batch", "images/s", "peak MB"
        );
        if args.vs_pytorch {
            print!(
                " {:>12} {:>6} {:>10} {:>7}  spread",
                "torch img/s", "layout", "torch MB", "ratio"
            );
        }
        println!();
    }
    let mut failures = 0;
    for &b in &backends {
        for &mode in &args.mode {
            for &res in &args.res {
                for &batch in &args.batch {
                    let spec = format!("{b}:{}:{res}:{batch}", mode.name());
                    let pool_file = pools.path().join(format!("{res}-{batch}"));
                    if !pool_file.with_extension("images").exists()
                        && let Err(e) = write_pool(&pool_file, args.pool as usize, res, batch)
                    {
                        failures += 1;
                        eprintln!("{spec}: the batches: {e}");
                        continue;
                    }
                    let timing_args = |c: &mut Command| {
                        c.args(["--min-time", &args.min_time.to_string()])
                            .args(["--warmup", &args.warmup.to_string()])
                            .args(["--min-steps", &args.min_steps.to_string()])
                            .arg("--pool-file")
                            .arg(&pool_file);
                        if args.flush_denormal {
                            c.arg("--flush-denormal");
                        }
                    };
                    let ours_cmd = || {
                        let mut c = Command::new(&exe);
                        c.args(["--one", &spec, "--arch", arch.name()]);
                        timing_args(&mut c);
                        c
                    };
                    let torch_cmd = |channels_last: bool| {
                        let mut c = Command::new(&python);
                        c.args([script, "--arch", arch.name(), "--mode", mode.name()])
                            .args(["--res", &res.to_string(), "--batch", &batch.to_string()]);
                        timing_args(&mut c);
                        if channels_last {
                            c.arg("--channels-last");
                        }
                        c
                    };
                    let reps = match alternate(args.repeat, args.vs_pytorch, ours_cmd, torch_cmd) {
                        Ok(p) => p,
                        Err(e) => {
                            failures += 1;
                            eprintln!("{spec}: failed: {e}");
                            continue;
                        }
                    };
                    let row = summarize(b.name(), mode, res, batch, &reps, &args);
                    if args.json {
                        println!("{}", serde_json::to_string(&row).expect("plain struct"));
                    } else {
                        print!(
                            "{:<8} {:<9} {:>4} {:>5} {:>10.2} {:>9.0}",
                            row.backend, row.mode, res, batch, row.images_per_s, row.peak_rss_mb
                        );
                        if let (Some(t), Some(r), Some(lo), Some(hi)) = (
                            row.pytorch_images_per_s,
                            row.ratio,
                            row.ratio_min,
                            row.ratio_max,
                        ) {
                            // Three decimals where two would round a slow backend to 0.00x.
                            let digits = if r < 0.1 { 3 } else { 2 };
                            let torch_mb = row.pytorch_peak_rss_mb.unwrap_or(f64::NAN);
                            let layout = match (
                                row.pytorch_nchw_images_per_s,
                                row.pytorch_channels_last_images_per_s,
                            ) {
                                (Some(nchw), Some(nhwc)) if nhwc > nchw => "NHWC",
                                _ => "NCHW",
                            };
                            print!(" {t:>12.2} {layout:>6} {torch_mb:>10.0} {r:>6.digits$}x");
                            print!("  {lo:.digits$}-{hi:.digits$}");
                        }
                        println!();
                    }
                    let _ = std::io::stdout().flush();
                }
            }
        }
    }
    if failures > 0 {
        eprintln!("{failures} measurement(s) failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
