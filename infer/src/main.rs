//! `rekindle-infer`: predict with a rekindle model file from the command line (`predict`), or
//! serve it over HTTP (`serve`). Reached as `cargo xtask infer` and `cargo xtask serve`.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rekindle_infer::app::App;
use rekindle_infer::auth::{Token, TokenArgs};
use rekindle_infer::batcher::Batcher;
use rekindle_infer::limits::ServiceLimits;
use rekindle_infer::server::{serve, shutdown_signal};
use rekindle_infer::{Classifier, Limits, Prediction};
use rekindle_model::Backend;
use serde_json::json;

/// Keeps freed pages for reuse (see `rekindle_kernels::allocator`).
#[global_allocator]
static ALLOCATOR: rekindle_kernels::allocator::Allocator = rekindle_kernels::allocator::Allocator;

#[derive(Parser)]
#[command(
    name = "rekindle-infer",
    about = "Predict with a fine-tuned rekindle model, or serve it"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Top-k classes for image files and folders of images.
    Predict(PredictArgs),
    /// An HTTP service: POST /v1/predict, GET /v1/model, GET /healthz.
    Serve(ServeArgs),
}

#[derive(Args)]
struct ModelArgs {
    /// A rekindle model file (`model.bpk` from training, or the importer's output).
    #[arg(long)]
    model: PathBuf,
    #[arg(long, help = rekindle_model::backend::HELP, default_value_t = Backend::default_compiled(), value_parser = Backend::parse_arg)]
    backend: Backend,
    /// Largest encoded image, in MiB.
    #[arg(long, default_value_t = 32)]
    max_image_mb: usize,
    /// Largest decoded image, in megapixels.
    #[arg(long, default_value_t = 40.0)]
    max_megapixels: f64,
    /// Fold BatchNorm into the convolutions (same outputs within 1e-4, faster).
    #[arg(long)]
    fold_bn: bool,
}

impl ModelArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.max_image_mb << 20,
            max_pixels: (self.max_megapixels * 1e6) as u64,
            ..Limits::default()
        }
    }

    fn load(&self) -> Result<Classifier> {
        let device = self.backend.device()?;
        let c = Classifier::load(&self.model, &device)?.with_limits(self.limits());
        Ok(if self.fold_bn { c.fold_batchnorm() } else { c })
    }
}

#[derive(Args)]
struct PredictArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Image files, or folders searched recursively for .png/.jpg/.jpeg.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Classes per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// One JSON object per image on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (port 0: any free port; the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Most images in one forward pass.
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// Longest wait, in milliseconds, for more requests to fill a batch.
    #[arg(long, default_value_t = 5)]
    max_wait_ms: u64,
    /// Classes per prediction when the request has no `top_k`.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// The name the Open Inference Protocol serves the model as (`/v2/models/NAME`); default:
    /// the model file's name without its extension.
    #[arg(long)]
    model_name: Option<String>,
    /// Logs as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    #[command(flatten)]
    auth: TokenArgs,
    /// Connections served at once; further ones wait, unaccepted, until one closes.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Requests admitted at once (decoding, queued or in a forward pass); more get 503.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_queue: u64,
    /// Longest wait, in milliseconds, for a request's headers (and on an idle keep-alive
    /// connection).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_ms: u64,
    /// Longest wait, in milliseconds, for a request's body once its headers are in (then 408).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout_ms: u64,
    /// Longest time, in milliseconds, from a request's body read to its answer (then 504).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_ms: u64,
    /// Seconds a shed request (503) is told to wait before retrying.
    #[arg(long, default_value_t = 1)]
    retry_after_s: u64,
}

impl ServeArgs {
    /// `--model-name`, or the model file's stem; a name that cannot sit in a URL path segment
    /// is refused.
    fn model_name(&self) -> Result<String> {
        let name = match &self.model_name {
            Some(n) => n.clone(),
            None => self
                .model
                .model
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into()),
        };
        let ok = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if name.is_empty() || !name.chars().all(ok) {
            anyhow::bail!(
                "--model-name `{name}`: use letters, digits, `-`, `_` and `.` (it is a URL path \
                 segment in /v2/models/NAME)"
            );
        }
        Ok(name)
    }

    fn service_limits(&self) -> ServiceLimits {
        ServiceLimits {
            max_connections: self.max_connections as usize,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            retry_after_s: self.retry_after_s,
        }
    }

    /// The token, if one is set; a non-loopback address without one is refused.
    fn token(&self) -> Result<Option<Token>, Refusal> {
        self.auth.token_for(self.addr, "the model").map_err(Refusal)
    }
}

/// A configuration the service refuses to start with (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refusal(String);

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Files named on the command line, and image files under the folders named, sorted.
fn expand(inputs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut stack = vec![input.clone()];
            let mut found = Vec::new();
            // Folders already read, by their real path: a link back up (`loop -> .`) would
            // otherwise be walked again and again.
            let mut seen = std::collections::HashSet::new();
            while let Some(dir) = stack.pop() {
                if !seen.insert(std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone())) {
                    continue;
                }
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    // unreadable folder: reported when its path fails to open below
                    found.push(dir);
                    continue;
                };
                for e in entries.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if is_image(&p) {
                        found.push(p);
                    }
                }
            }
            found.sort();
            out.extend(found);
        } else {
            // Named explicitly: predicted (or reported) whatever its extension.
            out.push(input.clone());
        }
    }
    out
}

/// One table row: the path padded to `path_w`, then `class  p%` columns padded to `class_w`.
fn row(path: &Path, p: &Prediction, path_w: usize, class_w: usize) -> String {
    let labels: Vec<String> = p
        .top
        .iter()
        .map(|l| format!("{:<class_w$} {:5.1}%", l.class, 100.0 * l.probability))
        .collect();
    format!(
        "{:<path_w$}  {}",
        path.display().to_string(),
        labels.join("   ")
    )
}

fn predict(a: PredictArgs) -> Result<ExitCode> {
    let classifier = a.model.load()?;
    let files = expand(&a.inputs);
    if files.is_empty() {
        anyhow::bail!("no images found in {:?}", a.inputs);
    }
    let bar = ProgressBar::with_draw_target(Some(files.len() as u64), ProgressDrawTarget::stderr());
    if a.inputs.iter().any(|p| p.is_dir()) && std::io::stderr().is_terminal() {
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} images {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let path_w = files
        .iter()
        .map(|f| f.display().to_string().chars().count())
        .max()
        .unwrap_or(0);
    let class_w = classifier
        .metadata()
        .class_names
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0);
    let started = Instant::now();
    let mut stdout = std::io::stdout().lock();
    let mut failed = 0usize;
    for chunk in files.chunks(a.batch_size.max(1)) {
        for (path, r) in chunk.iter().zip(classifier.predict_paths(chunk, a.top_k)) {
            let line = match (&r, a.json) {
                (Ok(p), true) => {
                    json!({"path": path.to_string_lossy(), "predictions": p.top}).to_string()
                }
                (Ok(p), false) => row(path, p, path_w, class_w),
                (Err(e), json) => {
                    failed += 1;
                    bar.suspend(|| eprintln!("error: {e}"));
                    if !json {
                        continue;
                    }
                    json!({"path": path.to_string_lossy(), "error": e.to_string()}).to_string()
                }
            };
            bar.suspend(|| writeln!(stdout, "{line}"))?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} image(s) in {secs:.2} s ({:.1} images/s), {failed} failed",
        files.len(),
        files.len() as f64 / secs.max(1e-9)
    );
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn serve_cmd(a: ServeArgs) -> Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if a.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    let token = a.token()?;
    if token.is_none() {
        tracing::warn!(addr = %a.addr, "serving without a token: anyone who reaches the address may use it");
    }
    let loading = Instant::now();
    let classifier = a.model.load()?;
    let load_seconds = loading.elapsed().as_secs_f64();
    let model_name = a.model_name()?;
    let metadata = classifier.metadata().clone();
    let limits = *classifier.limits();
    let folded = classifier.is_folded();
    let (batcher, worker) = Batcher::spawn(
        classifier,
        a.max_batch,
        Duration::from_millis(a.max_wait_ms),
        a.max_queue as usize,
    );
    let mut app = App::new(batcher, metadata, limits);
    app.backend = a.model.backend.to_string();
    app.folded = folded;
    app.default_top_k = a.top_k.clamp(1, 1_000_000);
    app.token = token;
    app.service = a.service_limits();
    app.model_name = model_name;
    app.metrics.set_model_load_seconds(load_seconds);
    let app = Arc::new(app);
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(a.addr)
            .await
            .with_context(|| format!("cannot listen on {}", a.addr))?;
        let addr = listener.local_addr()?;
        tracing::info!(
            %addr,
            model = %a.model.model.display(),
            arch = %app.metadata.arch(),
            classes = app.metadata.class_names.len(),
            backend = %a.model.backend,
            auth = if app.token.is_some() { "bearer" } else { "none" },
            max_connections = app.service.max_connections,
            max_queue = app.batcher.max_queue,
            "serving"
        );
        println!("listening on http://{addr}");
        std::io::stdout().flush()?;
        serve(listener, app, shutdown_signal())
            .await
            .context("the HTTP server failed")
    })?;
    // Connections still open after the grace period end here, and with them the last handles
    // on the batcher: its sender is dropped and the model thread ends.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let _ = worker.join();
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    rekindle_kernels::allocator::keep_freed_pages();
    let result = match Cli::parse().command {
        Cmd::Predict(a) => predict(a),
        Cmd::Serve(a) => serve_cmd(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<Refusal>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
