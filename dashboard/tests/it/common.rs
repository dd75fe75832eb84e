//! What the dashboard's tests share: real runs and a real study made with train's and tune's
//! libraries, the dashboard served on 127.0.0.1, and a small HTTP client (only the loopback).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rekindle_dashboard::{Roots, Settings, router};
use rekindle_infer::auth::Token;
use rekindle_train::TrainConfig;
use rekindle_tune::worker::{now, trial_dir};
use rekindle_tune::{
    RESOLVED, Storage, Store, Study, TrialState, budget, propose, run_trial, trial_config,
};

#[path = "../../../train/tests/it/common/images.rs"]
#[allow(dead_code)]
mod images;
pub use images::image_folder;

/// The directory name no page may show as markup.
pub const HOSTILE: &str = "<img src=x onerror=alert(1)>";

/// A config for a random ResNet-18 on the 16 px images at `data`, run in `run`.
pub fn config(data: &Path, run: &Path, epochs: usize) -> TrainConfig {
    let text = format!(
        "[model]\nsource = \"random\"\narch = \"resnet18\"\n\
         [data]\nkind = \"folder\"\nroot = \"{}\"\nval_split = 0.25\nresize = 16\ncrop = 16\n\
         [train]\nepochs = {epochs}\nbatch_size = 8\nlr = 0.02\nseed = 3\n\
         [run]\ndir = \"{}\"\n",
        data.display(),
        run.display()
    );
    TrainConfig::from_toml(&text).expect("test config")
}

/// Trains `epochs` epochs into `run` (with its evaluation report).
pub fn train(data: &Path, run: &Path, epochs: usize) {
    rekindle_train::train(&config(data, run, epochs), false).expect("training");
}

/// A study of four trials in `dir` (a grid of two learning rates and two optimisers), run here
/// as tune's workers run them; the learning rate 5.0 is refused by the train config, so two
/// trials are invalid. Returns its storage.
pub fn study(tmp: &Path, data: &Path, dir: &Path) -> Storage {
    let file = tmp.join("study.toml");
    let text = format!(
        "[study]\ntrials = 4\nsampler = \"grid\"\npruner = \"none\"\nseed = 5\n\
         [base.model]\nsource = \"random\"\narch = \"resnet18\"\n\
         [base.data]\nkind = \"folder\"\nroot = \"{}\"\nval_split = 0.25\nresize = 16\ncrop = 16\n\
         [base.train]\nepochs = 2\nbatch_size = 8\nseed = 3\n\
         [space]\n\"train.lr\" = {{ choice = [0.02, 5.0] }}\n\
         \"optim.name\" = {{ choice = [\"sgd\", \"adamw\"] }}\n",
        data.display()
    );
    std::fs::write(&file, text).unwrap();
    let study = Study::load(&file).expect("study file");
    std::fs::create_dir_all(dir).unwrap();
    let storage = Storage::sqlite(dir.join("study.db"));
    let mut store = Store::open(&storage).unwrap();
    store.bind(&study.fingerprint()).unwrap();
    std::fs::write(dir.join(RESOLVED), study.resolved()).unwrap();
    let propose = |trials: &[_]| propose(&study, trials, trials.len());
    while let Some(trial) = store.start(budget(&study), "test", now(), propose).unwrap() {
        match trial_config(&study.base, &trial.point) {
            Err(invalid) => {
                let reason = Some(invalid.0.as_str());
                store
                    .finish(trial.id, "test", TrialState::Invalid, None, reason)
                    .unwrap();
            }
            Ok(mut cfg) => {
                cfg.run.dir = trial_dir(dir, trial.id);
                std::fs::create_dir_all(&cfg.run.dir).unwrap();
                let path = cfg.run.dir.join("trial.toml");
                std::fs::write(&path, cfg.to_toml()).unwrap();
                let own = Store::open(&storage).unwrap();
                run_trial(&study, own, trial.id, "test", &path).unwrap();
            }
        }
    }
    storage
}

/// The dashboard over `root`, served on 127.0.0.1 from a thread of its own.
pub fn serve(root: &Path, token: Option<&str>) -> SocketAddr {
    let settings = Settings {
        roots: Roots::new(&[root.to_path_buf()], vec![]).unwrap(),
        token: token.map(|t| Token::new(t, "test").unwrap()),
        poll: Duration::from_millis(50),
        keep_points: 2_000,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, router(settings)).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

/// An HTTP answer.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let h = self
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name));
        h.map(|(_, v)| v.as_str())
    }
}

/// GET `path` with `headers`, on a connection of its own, within 60 s.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse(&raw)
}

/// A whole HTTP/1.1 answer (chunked bodies joined).
pub fn parse(raw: &[u8]) -> Answer {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..end]).unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[end + 2..end + 2 + size]);
        b = &b[end + 2 + size + 2..];
    }
    out
}

/// `?id=` for a dashboard id.
pub fn q(id: &str) -> String {
    form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

/// A temporary root holding `runs/` (and the dataset beside it, outside the root).
pub fn root() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    let data = tmp.path().join("data");
    image_folder(&data, 12);
    std::fs::create_dir_all(&root).unwrap();
    (tmp, root, data)
}
