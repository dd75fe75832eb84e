//! A `serve` process for the service tests: started on a free loopback port, its stderr kept
//! in a log file that every failure quotes, killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running service, killed if the test fails before it ends; its log is a file.
pub struct Service {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rekindle-infer serve` with no token from the environment the tests run in.
pub fn serve_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rekindle-infer"));
    cmd.arg("serve").env_remove("REKINDLE_TOKEN");
    cmd
}

impl Service {
    /// Runs `cmd` (a `serve` command line) with `--addr 127.0.0.1:0 --model MODEL EXTRA...`
    /// and waits until it prints the address it listens on.
    pub fn start(cmd: Command, model: &Path, extra: &[&str]) -> Service {
        Self::start_in(tempfile::tempdir().unwrap(), cmd, model, extra)
    }

    /// [`Service::start`] with a fresh [`super::model_file`], kept as long as the service.
    pub fn with_test_model(cmd: Command, extra: &[&str]) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.bpk");
        super::model_file(&model);
        Self::start_in(dir, cmd, &model, extra)
    }

    /// Starts the service with its log (and whatever else the caller put there) in `dir`.
    fn start_in(dir: tempfile::TempDir, mut cmd: Command, model: &Path, extra: &[&str]) -> Service {
        let log = dir.path().join("serve.log");
        let mut child = cmd
            .args(["--addr", "127.0.0.1:0", "--model"])
            .arg(model)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let status = child.wait().unwrap();
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("serve printed {line:?}, not its address ({status}); its stderr:\n{log}");
        };
        Service {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// What the service has written to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM (what `docker stop` and systemd send) and waits up to `limit` for the exit.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}: {sent}");
        let started = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                started.elapsed() < limit,
                "no exit {limit:?} after SIGTERM: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
