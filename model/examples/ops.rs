//! Where a ResNet-50 step spends its time, operation by operation: every distinct convolution
//! (forward, input gradient, weight gradient) and BatchNorm (training forward, backward) at the
//! given resolutions, ours on flex against PyTorch's on the same shapes in the same run, with
//! GFLOP/s and the share of this machine's fp32 peak. Driven by `cargo xtask bench --ops`.

use std::io::Write;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use clap::Parser;
use rekindle_kernels::ConvGeom;
use rekindle_model::Arch;
use rekindle_model::shapes::{ConvLayer, distinct_conv_layers};
use serde::{Deserialize, Serialize};

/// Keeps freed pages for reuse (see `rekindle_kernels::allocator`).
#[global_allocator]
static ALLOCATOR: rekindle_kernels::allocator::Allocator = rekindle_kernels::allocator::Allocator;

#[derive(Parser, Debug)]
#[command(about = "Per-operation throughput of ResNet-50's convolutions and BatchNorms")]
struct Args {
    /// Square input resolutions.
    #[arg(long, value_delimiter = ',', default_value = "224,64")]
    res: Vec<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Measure each operation for at least this many seconds (after one warm-up call).
    #[arg(long, default_value_t = 0.3)]
    min_time: f64,
    /// Also measure PyTorch (2 threads) on the same shapes.
    #[arg(long)]
    vs_pytorch: bool,
    /// Python with torch (default: $REKINDLE_PYTHON, else python3).
    #[arg(long)]
    python: Option<String>,
    /// One JSON object per row instead of a table.
    #[arg(long)]
    json: bool,
}

/// One operation on one shape, as both sides read it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Op {
    /// `conv_forward`, `conv_x_grad`, `conv_weight_grad`, `bn_forward` or `bn_backward`.
    kind: String,
    /// Input `[n, c, h, w]`.
    x: [usize; 4],
    /// Convolution weight `[o, c, k, k]` (zeros for BatchNorm).
    w: [usize; 4],
    stride: usize,
    padding: usize,
    /// How many times ResNet-50 runs it per step.
    count: usize,
    /// Floating-point operations of one call (2 per multiply-add; BatchNorm: 0).
    flops: f64,
}

#[derive(Serialize)]
struct Row<'a> {
    res: usize,
    op: &'a Op,
    ms: f64,
    gflops: f64,
    peak_share: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pytorch_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
}

fn conv_ops(layer: ConvLayer, count: usize, batch: usize) -> Vec<Op> {
    let x = [batch, layer.in_channels, layer.size, layer.size];
    let w = [
        layer.out_channels,
        layer.in_channels,
        layer.kernel,
        layer.kernel,
    ];
    let flops = 2.0 * (layer.macs() * batch) as f64;
    ["conv_forward", "conv_x_grad", "conv_weight_grad"]
        .map(|kind| Op {
            kind: kind.into(),
            x,
            w,
            stride: layer.stride,
            padding: layer.padding(),
            count,
            flops,
        })
        .to_vec()
}

fn bn_ops(channels: usize, size: usize, count: usize, batch: usize) -> Vec<Op> {
    ["bn_forward", "bn_backward"]
        .map(|kind| Op {
            kind: kind.into(),
            x: [batch, channels, size, size],
            w: [0; 4],
            stride: 0,
            padding: 0,
            count,
            flops: 0.0,
        })
        .to_vec()
}

/// Every distinct operation of a ResNet-50 step at `res`.
fn ops(res: usize, batch: usize) -> Vec<Op> {
    let layers = distinct_conv_layers(Arch::Resnet50, res);
    let mut out: Vec<Op> = layers
        .iter()
        .flat_map(|&(l, n)| conv_ops(l, n, batch))
        .collect();
    let mut norms: Vec<([usize; 2], usize)> = Vec::new();
    for (l, n) in layers {
        let key = [l.out_channels, l.out_size()];
        match norms.iter_mut().find(|(k, _)| *k == key) {
            Some((_, c)) => *c += n,
            None => norms.push((key, n)),
        }
    }
    out.extend(
        norms
            .into_iter()
            .flat_map(|([c, s], n)| bn_ops(c, s, n, batch)),
    );
    out
}

/// Seconds per call of `f`, after one warm-up call, over at least `min_time` and 3 calls.
fn time(min_time: f64, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut calls = 0;
    while calls < 3 || start.elapsed().as_secs_f64() < min_time {
        f();
        calls += 1;
    }
    start.elapsed().as_secs_f64() / calls as f64
}

fn measure(op: &Op, min_time: f64, device: &Device) -> f64 {
    let random = |dims: [usize; 4]| Tensor::<4>::random(dims, Distribution::Default, device);
    let x = random(op.x);
    if op.kind.starts_with("bn") {
        let c = op.x[1];
        let gamma = Tensor::<1>::ones([c], device);
        let beta = Tensor::<1>::zeros([c], device);
        let forward = || {
            rekindle_kernels::batch_norm_train(
                x.clone(),
                gamma.clone(),
                beta.clone(),
                None,
                1e-5,
                false,
            )
        };
        let r = forward();
        let dy = random(op.x);
        let stats = (r.mean, r.variance);
        return match op.kind.as_str() {
            "bn_forward" => time(min_time, || {
                let _ = forward().output.into_data();
            }),
            _ => time(min_time, || {
                let g = rekindle_kernels::batch_norm_train_backward(
                    x.clone(),
                    gamma.clone(),
                    stats.clone(),
                    1e-5,
                    dy.clone(),
                    None,
                );
                let _ = g.x.into_data();
            }),
        };
    }
    let w = random(op.w);
    let geom = ConvGeom {
        stride: [op.stride; 2],
        padding: [op.padding; 2],
    };
    let dy = random(rekindle_kernels::conv2d(x.clone(), w.clone(), geom).dims());
    match op.kind.as_str() {
        "conv_forward" => time(min_time, || {
            let _ = rekindle_kernels::conv2d(x.clone(), w.clone(), geom).into_data();
        }),
        "conv_x_grad" => time(min_time, || {
            let g = rekindle_kernels::conv2d_x_backward(x.clone(), w.clone(), dy.clone(), geom);
            let _ = g.into_data();
        }),
        _ => time(min_time, || {
            let g =
                rekindle_kernels::conv2d_weight_backward(x.clone(), w.clone(), dy.clone(), geom);
            let _ = g.into_data();
        }),
    }
}

/// PyTorch's seconds per call for each op, from `scripts/bench_ops.py` in one process.
fn pytorch(python: &str, ops: &[Op], min_time: f64) -> Result<Vec<f64>, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/bench_ops.py");
    let mut child = Command::new(python)
        .args([script, "--min-time", &min_time.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {python}: {e}"))?;
    let input = serde_json::to_string(ops).map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(input.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("{script} failed ({})", out.status));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("unreadable PyTorch result: {e}"))
}

fn main() -> ExitCode {
    rekindle_kernels::allocator::keep_freed_pages();
    let args = Args::parse();
    let device = Device::flex();
    let peak = peak::Peak::of_this_machine();
    let python = args
        .python
        .clone()
        .or_else(|| std::env::var("REKINDLE_PYTHON").ok())
        .unwrap_or_else(|| "python3".into());
    if !args.json {
        println!("{}", peak.describe());
    }
    for &res in &args.res {
        let ops = ops(res, args.batch);
        let ours: Vec<f64> = ops
            .iter()
            .map(|op| measure(op, args.min_time, &device))
            .collect();
        let torch = match args
            .vs_pytorch
            .then(|| pytorch(&python, &ops, args.min_time))
        {
            Some(Err(e)) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            Some(Ok(t)) => Some(t),
            None => None,
        };
        let rows: Vec<Row> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| {
                let gflops = op.flops / ours[i] / 1e9;
                let pytorch_ms = torch.as_ref().map(|t| t[i] * 1e3);
                Row {
                    res,
                    op,
                    ms: ours[i] * 1e3,
                    gflops,
                    peak_share: gflops / peak.gflops(),
                    pytorch_ms,
                    ratio: torch.as_ref().map(|t| t[i] / ours[i]),
                }
            })
            .collect();
        if args.json {
            for row in &rows {
                println!("{}", serde_json::to_string(row).expect("plain struct"));
            }
        } else {
            print_table(res, args.batch, &rows, peak.gflops());
        }
    }
    ExitCode::SUCCESS
}

fn print_table(res: usize, batch: usize, rows: &[Row], peak: f64) {
    println!("\nResNet-50 at {res}x{res}, batch {batch} (x n: times per step)");
    println!(
        "{:<17} {:>22} {:>5} {:>3} {:>9} {:>8} {:>6} {:>9} {:>8} {:>6}",
        "op", "input / weight", "s/p", "n", "ms", "GFLOP/s", "peak", "torch ms", "GFLOP/s", "ratio"
    );
    let (mut ours, mut torch) = (0.0, 0.0);
    for r in rows {
        let o = &r.op;
        let shape = if o.flops > 0.0 {
            format!(
                "{}x{}x{} {}>{} k{}",
                o.x[1], o.x[2], o.x[3], o.w[1], o.w[0], o.w[2]
            )
        } else {
            format!("{}x{}x{}", o.x[1], o.x[2], o.x[3])
        };
        print!(
            "{:<17} {:>22} {:>5} {:>3} {:>9.3} {:>8.1} {:>5.0}%",
            o.kind,
            shape,
            format!("{}/{}", o.stride, o.padding),
            o.count,
            r.ms,
            r.gflops,
            100.0 * r.peak_share
        );
        ours += r.ms * o.count as f64;
        if let (Some(t), Some(ratio)) = (r.pytorch_ms, r.ratio) {
            torch += t * o.count as f64;
            print!(" {:>9.3} {:>8.1} {:>5.2}x", t, o.flops / t / 1e6, ratio);
        }
        println!();
    }
    print!("total per step: ours {ours:.1} ms");
    if torch > 0.0 {
        print!(", PyTorch {torch:.1} ms, ratio {:.2}x", torch / ours);
    }
    println!(" (peak {peak:.0} GFLOP/s)");
}

mod peak {
    //! This machine's fp32 peak from what /proc/cpuinfo says: cores x FMA width x clock.

    /// The numbers the peak is made of.
    pub struct Peak {
        cores: usize,
        ghz: f64,
        flops_per_cycle: f64,
        model: String,
        isa: &'static str,
    }

    impl Peak {
        /// Reads this machine's CPU model, clock and vector extensions.
        pub fn of_this_machine() -> Self {
            let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let field = |name: &str| {
                info.lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default()
            };
            let flags = field("flags");
            let has = |f: &str| flags.split_whitespace().any(|x| x == f);
            // Two FMA pipes per core. AMD's Zen 4 (family 25) runs 512-bit FMAs on 256-bit pipes;
            // Zen 5 (family 26) and Intel's AVX-512 parts have full-width ones.
            let zen4 = field("vendor_id") == "AuthenticAMD" && field("cpu family") == "25";
            let (isa, flops_per_cycle) = if has("avx512f") && !zen4 {
                ("AVX-512, 2x512-bit FMA", 64.0)
            } else if has("avx512f") {
                ("AVX-512 on 2x256-bit FMA pipes", 32.0)
            } else if has("fma") {
                ("AVX2, 2x256-bit FMA", 32.0)
            } else {
                ("SSE, no FMA", 8.0)
            };
            Self {
                cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
                ghz: field("cpu MHz").parse::<f64>().unwrap_or(0.0) / 1000.0,
                flops_per_cycle,
                model: field("model name"),
                isa,
            }
        }

        /// Peak fp32 GFLOP/s.
        pub fn gflops(&self) -> f64 {
            self.cores as f64 * self.flops_per_cycle * self.ghz
        }

        /// The peak and how it was worked out.
        pub fn describe(&self) -> String {
            format!(
                "{}: {} cores x {} FLOP/cycle ({}) x {:.2} GHz (nominal; boost can exceed it) \
                 = fp32 peak {:.0} GFLOP/s",
                self.model,
                self.cores,
                self.flops_per_cycle,
                self.isa,
                self.ghz,
                self.gflops()
            )
        }
    }
}
