//! `rekindle-dashboard serve [PATH...]`: the dashboard over the runs, studies and evaluation
//! reports under the paths, until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rekindle_dashboard::{Roots, Settings, router};
use rekindle_infer::auth::TokenArgs;

#[derive(Parser)]
#[command(
    name = "rekindle-dashboard",
    version,
    about = "A live web dashboard for runs, studies and evaluation reports"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the dashboard over the run directories, studies and reports under PATH.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Folders to look in (default: `runs`, where runs and studies go unless told otherwise).
    paths: Vec<PathBuf>,
    /// Address to listen on; any but a loopback address wants a token (a browser opens
    /// /?token=TOKEN once and keeps it in a cookie).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    #[command(flatten)]
    auth: TokenArgs,
    /// The PostgreSQL database of studies run with `--storage postgres://...` (their folders
    /// hold no study.db).
    #[arg(long)]
    postgres: Option<String>,
    /// Milliseconds between two reads of a run a page watches live.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    poll_ms: u64,
}

fn main() -> ExitCode {
    let Cli {
        command: Command::Serve(args),
    } = Cli::parse();
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn serve(a: ServeArgs) -> Result<()> {
    let token = a
        .auth
        .token_for(a.addr, "every run and study")
        .map_err(anyhow::Error::msg)?;
    let paths = if a.paths.is_empty() {
        vec![PathBuf::from("runs")]
    } else {
        a.paths.clone()
    };
    let roots = Roots::new(&paths, a.postgres.into_iter().collect()).map_err(anyhow::Error::msg)?;
    let settings = Settings {
        roots,
        token,
        poll: Duration::from_millis(a.poll_ms),
        keep_points: 2_000,
    };
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.addr)
            .await
            .with_context(|| format!("cannot listen on {}", a.addr))?;
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "dashboard of {} on http://{}/ (Ctrl-C stops it)",
            shown.join(", "),
            listener.local_addr().unwrap_or(a.addr)
        );
        // Not a graceful shutdown: a page watching a run holds its event stream open for as
        // long as the run trains, and nothing is written that could be left half done.
        tokio::select! {
            served = axum::serve(listener, router(settings)) => served.context("the server stopped"),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
