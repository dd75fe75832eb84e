//! Soak load generator for `rekindle-infer serve` on 127.0.0.1: `--concurrency` clients send a
//! seeded mix of good, bad (garbage bytes, wrong content type, bad top_k, no token), slow
//! (trickled body, stalled body, trickled headers) and oversized requests for `--seconds`,
//! while the server's RSS is sampled from /proc/PID/status every second. Writes `summary.json`
//! and `rss.png` into `--out`; exits non-zero on any 500, any answer a request's kind does not
//! allow (a 503 that is not load shedding among them), or RSS growth past the bound.
//!
//!   cargo run --release --example soak -- --addr 127.0.0.1:PORT --token-file F --pid PID \
//!       --seconds 600 --concurrency 64 --out docs/soak
//!   cargo run --release --example soak -- --write-model m.bpk   (the small model it serves)
//!
//! `scripts/soak.sh` runs both; `infer/tests/hardening.rs` reuses [`run`] for a short soak.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The request kinds, in the order of [`WEIGHTS`].
pub const KINDS: [&str; 9] = [
    "good",
    "slow_body",
    "garbage",
    "wrong_type",
    "bad_top_k",
    "no_token",
    "stalled_body",
    "oversized",
    "slow_headers",
];

/// How often each kind is drawn, out of 100.
const WEIGHTS: [u32; 9] = [50, 8, 10, 6, 8, 8, 3, 5, 2];

/// Body size of an oversized request: over the 1 MiB limit `scripts/soak.sh` serves with.
const OVERSIZED: usize = (1 << 20) + (1 << 19);

/// What a soak does.
#[derive(Clone, Debug)]
pub struct Config {
    /// The server (loopback only).
    pub addr: SocketAddr,
    /// The server's bearer token.
    pub token: String,
    /// How long to send requests.
    pub seconds: f64,
    /// Clients sending at once.
    pub concurrency: usize,
    /// The server's process, for its RSS.
    pub pid: Option<u32>,
    /// Where summary.json and rss.png go.
    pub out: Option<PathBuf>,
    /// Most RSS growth allowed, in MiB, from the end of the warm-up to the end.
    pub max_rss_growth_mb: f64,
    /// Seed of the request mix.
    pub seed: u64,
    /// Most requests in all (a bound besides the time).
    pub max_requests: u64,
}

/// How a request ended.
#[derive(Clone, Debug)]
enum Outcome {
    /// An HTTP answer: status, error kind (for JSON errors), whether `Retry-After` came.
    Answer(u16, Option<String>, bool),
    /// The server closed the connection without an answer (a cut-off slow client).
    Closed,
    /// A socket error before any answer.
    Failed(String),
}

/// SplitMix64: a seeded stream of choices, one per client.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Encoded test images of a few sizes, shared by the clients.
struct Payloads {
    images: Vec<Vec<u8>>,
    oversized: Vec<u8>,
}

impl Payloads {
    fn new() -> Self {
        let images = (0..8u32)
            .map(|i| {
                let side = 24 + 40 * i;
                let img = RgbImage::from_fn(side, side + i, |x, y| {
                    Rgb([
                        (x * 7 + i * 31) as u8,
                        (y * 5 + i) as u8,
                        ((x ^ y) + i * 50) as u8,
                    ])
                });
                let mut out = std::io::Cursor::new(Vec::new());
                let format = if i % 2 == 0 {
                    ImageFormat::Png
                } else {
                    ImageFormat::Jpeg
                };
                DynamicImage::ImageRgb8(img)
                    .write_to(&mut out, format)
                    .expect("encode a test image in memory");
                out.into_inner()
            })
            .collect();
        let mut oversized = vec![0u8; OVERSIZED];
        oversized[..8].copy_from_slice(b"\x89PNG\r\n\x1a\n");
        Self { images, oversized }
    }
}

/// One request to send.
struct Plan {
    path: String,
    token: Option<String>,
    ctype: &'static str,
    body: Vec<u8>,
    /// Declared length when it differs from the body sent (a stalled body).
    declared: Option<usize>,
    /// Pause between body chunks (a trickled body).
    trickle: Option<Duration>,
    /// Trickle the headers a byte at a time, this far apart.
    slow_headers: Option<Duration>,
}

fn plan(kind: &str, rng: &mut Rng, p: &Payloads, token: &str) -> Plan {
    let image = p.images[rng.below(p.images.len() as u64) as usize].clone();
    let mut plan = Plan {
        path: "/v1/predict?top_k=2".into(),
        token: Some(token.to_string()),
        ctype: "image/png",
        body: image,
        declared: None,
        trickle: None,
        slow_headers: None,
    };
    match kind {
        "good" => {}
        "slow_body" => plan.trickle = Some(Duration::from_millis(40 + rng.below(60))),
        "garbage" => {
            let n = 1 + rng.below(4096) as usize;
            plan.body = (0..n).map(|_| rng.next() as u8).collect();
        }
        "wrong_type" => plan.ctype = "text/plain",
        "bad_top_k" => {
            plan.path = [
                "/v1/predict?top_k=0",
                "/v1/predict?top_k=99",
                "/v1/predict?top_k=x",
            ][rng.below(3) as usize]
                .into()
        }
        "no_token" => {
            plan.token = (rng.below(2) == 0).then(|| format!("{token}-not"));
        }
        "stalled_body" => {
            plan.declared = Some(plan.body.len() + 1000);
        }
        "oversized" => plan.body = p.oversized.clone(),
        "slow_headers" => plan.slow_headers = Some(Duration::from_millis(100)),
        other => unreachable!("unknown kind {other}"),
    }
    plan
}

/// Whether `outcome` is an answer `kind` allows. Load shedding (503 `overloaded` with
/// `Retry-After`) and a passed deadline (504) are allowed only where a request reaches the
/// queue (a whole body, a good token, content type and top_k).
fn allowed(kind: &str, outcome: &Outcome) -> bool {
    let shed = |o: &Outcome| matches!(o, Outcome::Answer(503, Some(k), true) if k == "overloaded");
    let late =
        |o: &Outcome| matches!(o, Outcome::Answer(504, Some(k), _) if k == "deadline_exceeded");
    let status = match outcome {
        Outcome::Answer(s, ..) => Some(*s),
        _ => None,
    };
    match kind {
        "good" | "slow_body" => status == Some(200) || shed(outcome) || late(outcome),
        "garbage" => status == Some(400) || shed(outcome) || late(outcome),
        "wrong_type" => status == Some(415),
        "bad_top_k" => status == Some(400),
        "no_token" => status == Some(401),
        "stalled_body" => status == Some(408),
        // The 413 comes before the body is read: the server may reset before it is seen.
        "oversized" => status == Some(413) || matches!(outcome, Outcome::Failed(_)),
        // Cut off at the header timeout: a close, hyper's bare 408, or a reset when bytes the
        // client trickled in meanwhile were left unread (3 in 3,237 in the 10-minute soak).
        "slow_headers" => match outcome {
            Outcome::Closed | Outcome::Answer(408, None, _) => true,
            Outcome::Failed(e) => e.contains("reset") || e.contains("Broken pipe"),
            Outcome::Answer(..) => false,
        },
        _ => false,
    }
}

fn head(addr: SocketAddr, plan: &Plan) -> String {
    let mut h = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        plan.path,
        plan.ctype,
        plan.declared.unwrap_or(plan.body.len())
    );
    if let Some(t) = &plan.token {
        h.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    h.push_str("\r\n");
    h
}

/// Sends `plan` on a fresh connection and reads the answer (until the server closes).
async fn send(addr: SocketAddr, plan: Plan) -> Outcome {
    let stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("connect: {e}")),
    };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let head = head(addr, &plan);
    // The writer runs beside the reader: a server answering early is still heard.
    let writer = tokio::spawn(async move {
        if let Some(gap) = plan.slow_headers {
            for b in head.as_bytes() {
                wr.write_all(&[*b]).await?;
                tokio::time::sleep(gap).await;
            }
        } else {
            wr.write_all(head.as_bytes()).await?;
        }
        match plan.trickle {
            Some(gap) => {
                for chunk in plan.body.chunks(plan.body.len().div_ceil(8).max(1)) {
                    tokio::time::sleep(gap).await;
                    wr.write_all(chunk).await?;
                }
            }
            None => wr.write_all(&plan.body).await?,
        }
        // A stalled body: keep the connection open, send nothing more.
        if plan.declared.is_some() {
            std::future::pending::<()>().await;
        }
        Ok::<_, std::io::Error>(wr)
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let error = loop {
        match rd.read(&mut buf).await {
            Ok(0) => break None,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => break Some(e.to_string()),
        }
    };
    writer.abort();
    match (parse(&raw), error) {
        (Some(answer), _) => answer,
        (None, None) if raw.is_empty() => Outcome::Closed,
        (None, Some(e)) if raw.is_empty() => Outcome::Failed(e),
        (None, _) => Outcome::Failed(format!(
            "unreadable answer: {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        )),
    }
}

/// Status, JSON error kind and `Retry-After` of a whole answer.
fn parse(raw: &[u8]) -> Option<Outcome> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let retry_after = lines.any(|l| l.to_ascii_lowercase().starts_with("retry-after:"));
    let kind = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["kind"].as_str().map(String::from));
    Some(Outcome::Answer(status, kind, retry_after))
}

/// Everything the clients saw.
#[derive(Default)]
struct Tally {
    requests: BTreeMap<String, u64>,
    by_kind: BTreeMap<String, BTreeMap<String, u64>>,
    status: BTreeMap<String, u64>,
    unexpected: BTreeMap<String, u64>,
    good_ms: Vec<f64>,
}

impl Tally {
    fn record(&mut self, kind: &str, outcome: &Outcome, ms: f64) {
        let label = match outcome {
            Outcome::Answer(s, ..) => s.to_string(),
            Outcome::Closed => "closed".into(),
            Outcome::Failed(_) => "failed".into(),
        };
        *self.requests.entry(kind.into()).or_default() += 1;
        *self.status.entry(label.clone()).or_default() += 1;
        *self
            .by_kind
            .entry(kind.into())
            .or_default()
            .entry(label)
            .or_default() += 1;
        if !allowed(kind, outcome) {
            let what = match outcome {
                Outcome::Failed(e) => format!("{kind}: failed: {e}"),
                other => format!("{kind}: {other:?}"),
            };
            *self.unexpected.entry(what).or_default() += 1;
        }
        if kind == "good" && matches!(outcome, Outcome::Answer(200, ..)) {
            self.good_ms.push(ms);
        }
    }
}

/// One client: draws a kind, sends it, records the outcome, until the deadline.
async fn client(
    cfg: Arc<Config>,
    payloads: Arc<Payloads>,
    tally: Arc<Mutex<Tally>>,
    sent: Arc<std::sync::atomic::AtomicU64>,
    mut rng: Rng,
    deadline: Instant,
) {
    use std::sync::atomic::Ordering;
    let total: u32 = WEIGHTS.iter().sum();
    while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < cfg.max_requests {
        let mut pick = rng.below(total as u64) as u32;
        let i = WEIGHTS
            .iter()
            .position(|&w| {
                let hit = pick < w;
                pick = pick.saturating_sub(w);
                hit
            })
            .unwrap_or(0);
        let kind = KINDS[i];
        let plan = plan(kind, &mut rng, &payloads, &cfg.token);
        let started = Instant::now();
        let outcome =
            match tokio::time::timeout(Duration::from_secs(60), send(cfg.addr, plan)).await {
                Ok(o) => o,
                Err(_) => Outcome::Failed("no answer within 60 s".into()),
            };
        let ms = started.elapsed().as_secs_f64() * 1e3;
        tally
            .lock()
            .expect("no client panics holding the tally")
            .record(kind, &outcome, ms);
    }
}

/// The resident set size of `pid` in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// `/v1/model`'s JSON.
async fn model_info(cfg: &Config) -> Result<Value> {
    let mut s = TcpStream::connect(cfg.addr).await?;
    let req = format!(
        "GET /v1/model HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\r\n",
        cfg.addr, cfg.token
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    serde_json::from_str(body).with_context(|| format!("GET /v1/model answered {text:?}"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Runs the soak; the summary's `ok` says whether it passed (no 500, nothing unexpected,
/// RSS growth within the bound).
pub fn run(cfg: &Config) -> Result<Value> {
    if !cfg.addr.ip().is_loopback() {
        bail!("refusing to soak {}: loopback addresses only", cfg.addr);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cfg = Arc::new(cfg.clone());
    let payloads = Arc::new(Payloads::new());
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(cfg.seconds);
    let rss = Arc::new(Mutex::new(Vec::<(f64, f64)>::new()));
    let sampler = cfg.pid.map(|pid| {
        let rss = rss.clone();
        std::thread::spawn(move || {
            while Instant::now() < deadline + Duration::from_secs(1) {
                if let Some(m) = rss_mib(pid) {
                    let t = started.elapsed().as_secs_f64();
                    rss.lock().expect("sampler alone writes").push((t, m));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    });
    let info = runtime.block_on(async {
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let clients: Vec<_> = (0..cfg.concurrency)
            .map(|i| {
                let rng = Rng(cfg.seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
                tokio::spawn(client(
                    cfg.clone(),
                    payloads.clone(),
                    tally.clone(),
                    sent.clone(),
                    rng,
                    deadline,
                ))
            })
            .collect();
        for c in clients {
            c.await?;
        }
        model_info(&cfg).await
    })?;
    if let Some(s) = sampler {
        let _ = s.join();
    }
    let wall = started.elapsed().as_secs_f64();
    let tally = tally.lock().expect("clients are done");
    let rss = rss.lock().expect("sampler is done").clone();
    summarise(&cfg, &tally, &rss, &info, wall)
}

/// RSS over the run: start, end, max, the value after the warm-up (a fifth of the run) and
/// the growth from there to the end.
fn rss_summary(rss: &[(f64, f64)], seconds: f64) -> Value {
    if rss.is_empty() {
        return Value::Null;
    }
    let warm = rss
        .iter()
        .find(|(t, _)| *t >= seconds * 0.2)
        .unwrap_or(&rss[0])
        .1;
    let end = rss[rss.len() - 1].1;
    let max = rss.iter().map(|r| r.1).fold(f64::MIN, f64::max);
    json!({
        "samples": rss.len(),
        "start": rss[0].1,
        "after_warmup": warm,
        "end": end,
        "max": max,
        "growth_after_warmup": end - warm,
    })
}

fn summarise(
    cfg: &Config,
    tally: &Tally,
    rss: &[(f64, f64)],
    info: &Value,
    wall: f64,
) -> Result<Value> {
    let mut good = tally.good_ms.clone();
    good.sort_by(f64::total_cmp);
    let count = |s: &str| tally.status.get(s).copied().unwrap_or(0);
    let shed = tally
        .by_kind
        .values()
        .filter_map(|m| m.get("503"))
        .sum::<u64>();
    let unexpected: u64 = tally.unexpected.values().sum();
    let rss_json = rss_summary(rss, cfg.seconds);
    let growth = rss_json["growth_after_warmup"].as_f64().unwrap_or(0.0);
    let rss_ok = growth <= cfg.max_rss_growth_mb;
    let status_500 = count("500");
    let total: u64 = tally.requests.values().sum();
    let summary = json!({
        "seconds": cfg.seconds,
        "wall_seconds": wall,
        "concurrency": cfg.concurrency,
        "seed": cfg.seed,
        "requests_total": total,
        "requests_per_second": total as f64 / wall.max(1e-9),
        "requests": tally.requests,
        "status_counts": tally.status,
        "by_kind": tally.by_kind,
        "status_500": status_500,
        "status_503_shed": shed,
        "unexpected": unexpected,
        "unexpected_outcomes": tally.unexpected,
        "good_latency_ms": {
            "count": good.len(),
            "p50": percentile(&good, 0.50),
            "p99": percentile(&good, 0.99),
            "max": good.last().copied().unwrap_or(f64::NAN),
        },
        "rss_mib": rss_json,
        "rss_growth_bound_mib": cfg.max_rss_growth_mb,
        "server": {
            "service": info["service"],
            "batching": info["batching"],
        },
        "ok": status_500 == 0 && unexpected == 0 && rss_ok,
    });
    if let Some(out) = &cfg.out {
        std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
        let path = out.join("summary.json");
        std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
        if !rss.is_empty() {
            plot_rss(&out.join("rss.png"), rss, cfg).map_err(anyhow::Error::msg)?;
        }
    }
    Ok(summary)
}

/// Fonts tried for the plot labels (Debian's fonts-dejavu-core).
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn font() -> Result<(), String> {
    use plotters::style::{FontStyle, register_font};
    static FONT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    FONT.get_or_init(|| {
        for path in FONTS {
            if let Ok(bytes) = std::fs::read(path) {
                // plotters keeps a 'static reference: the font lives as long as the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(format!(
            "no font for the plot (looked for {})",
            FONTS.join(", ")
        ))
    })
    .clone()
}

/// The server's RSS over time as a PNG at `path`.
fn plot_rss(path: &Path, rss: &[(f64, f64)], cfg: &Config) -> Result<(), String> {
    use plotters::prelude::*;
    font()?;
    const SIZE: (u32, u32) = (900, 480);
    let x1 = rss.last().map_or(1.0, |r| r.0).max(1.0);
    let y1 = rss.iter().map(|r| r.1).fold(0.0, f64::max) * 1.15 + 1.0;
    let mut buf = vec![255u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let e = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let title = format!(
            "rekindle-infer serve RSS, soak of {:.0} s at concurrency {}",
            cfg.seconds, cfg.concurrency
        );
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x1, 0.0..y1)
            .map_err(|x| e(&x))?;
        c.configure_mesh()
            .x_desc("seconds")
            .y_desc("RSS (MiB)")
            .draw()
            .map_err(|x| e(&x))?;
        c.draw_series(LineSeries::new(rss.iter().copied(), BLUE.stroke_width(2)))
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    image::save_buffer(path, &buf, SIZE.0, SIZE.1, image::ColorType::Rgb8)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a random ResNet-18 with classes red/green/blue for 24x24 inputs to `path` (the
/// tests' model, seeded).
fn write_model(path: &Path) -> Result<()> {
    use rekindle_infer::rekindle_model::burn::tensor::Device;
    use rekindle_infer::rekindle_model::{
        Arch, HeadConfig, ModelMetadata, Preprocess, ResNetConfig, save_model,
    };
    let device = Device::flex();
    device.seed(13);
    let config = ResNetConfig::new(Arch::Resnet18, HeadConfig::new(3));
    let net = config.init(&device);
    let pre = Preprocess {
        resize: 28,
        crop: 24,
        ..Preprocess::imagenet()
    };
    let names = ["red", "green", "blue"].map(String::from).to_vec();
    save_model(path, &net, &ModelMetadata::new(config, names, pre))
        .with_context(|| format!("write the model {}", path.display()))
}

#[derive(clap::Parser)]
#[command(
    name = "soak",
    about = "Soak load generator for rekindle-infer serve (loopback only)"
)]
struct Args {
    /// Write the small test model to this path and exit.
    #[arg(long)]
    write_model: Option<PathBuf>,
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// File holding the server's bearer token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The server's process id, for its RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// How long to send requests.
    #[arg(long, default_value_t = 600.0)]
    seconds: f64,
    /// Clients sending at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Where summary.json and rss.png go.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Most RSS growth allowed, in MiB, from the end of the warm-up (a fifth of the run).
    #[arg(long, default_value_t = 64.0)]
    max_rss_growth_mb: f64,
    /// Seed of the request mix.
    #[arg(long, default_value_t = 18)]
    seed: u64,
    /// Most requests in all.
    #[arg(long, default_value_t = 5_000_000)]
    max_requests: u64,
}

fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    match soak(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn soak(args: Args) -> Result<bool> {
    if let Some(path) = &args.write_model {
        write_model(path)?;
        return Ok(true);
    }
    let token = match &args.token_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("read the token file {}", f.display()))?
            .trim_end()
            .to_string(),
        None => std::env::var("REKINDLE_TOKEN").unwrap_or_default(),
    };
    let cfg = Config {
        addr: args.addr,
        token,
        seconds: args.seconds,
        concurrency: args.concurrency.max(1),
        pid: args.pid,
        out: args.out,
        max_rss_growth_mb: args.max_rss_growth_mb,
        seed: args.seed,
        max_requests: args.max_requests,
    };
    let summary = run(&cfg)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(summary["ok"] == true)
}
