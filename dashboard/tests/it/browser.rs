//! The dashboard in a real browser: Debian's Chromium, headless, driven over WebDriver by
//! chromedriver (both installed by `cargo xtask test`). A run trains while its page is open;
//! the page draws its new steps without a reload. Every page draws its charts without a script
//! error, compare overlays two runs, the trials' CSV link gives what the store holds, a log axis
//! switches on, and the hostile run name is text. `REKINDLE_SCREENSHOTS=DIR` also saves each
//! page as a PNG (how docs/dashboard/ is made).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use rekindle_tune::Store;
use serde_json::{Value, json};

use crate::common::{HOSTILE, config, get, image_folder, q, serve, study, train};

/// chromedriver on a free port of 127.0.0.1, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver, which `cargo xtask test` installs)");
    let driver = Driver { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    driver
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,1000"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

/// Opens `path`, waits (up to 60 s) for `ready` to be true in the page, checks it logged no
/// script error, and saves a screenshot when asked to.
async fn open(c: &Client, base: &str, path: &str, ready: &str, shot: &str) {
    c.goto(&format!("{base}{path}")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = c.execute(&format!("return !!({ready});"), vec![]).await;
        if done.ok() == Some(Value::Bool(true)) {
            break;
        }
        assert!(Instant::now() < deadline, "{path}: never ready ({ready})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let errors = eval(c, "return window.__errors;").await;
    assert_eq!(errors, json!([]), "{path}: script errors");
    if let Some(dir) = std::env::var_os("REKINDLE_SCREENSHOTS") {
        let png = c.screenshot().await.unwrap();
        std::fs::write(PathBuf::from(dir).join(format!("{shot}.png")), png).unwrap();
    }
}

async fn eval(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

fn chart(id: &str) -> String {
    format!("window.__charts[{id:?}]")
}

#[test]
fn the_pages_draw_live_in_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, data) = (tmp.path().join("runs"), tmp.path().join("data"));
    image_folder(&data, 24);
    std::fs::create_dir_all(&root).unwrap();
    train(&data, &root.join("pets"), 2);
    train(&data, &root.join(HOSTILE), 1);
    let storage = study(tmp.path(), &data, &root.join("search"));
    let live: &Path = &root.join("live");
    // Long enough never to end by itself while the page watches; halted once seen.
    let cfg = config(&data, live, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let watch = Box::new(HaltWhen(stop.clone()));
    let trainer =
        std::thread::spawn(move || rekindle_train::train_watched(&cfg, false, Some(watch)));
    let addr = serve(&root, None);
    let base = format!("http://{addr}");
    let driver = chromedriver();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = browser(&driver).await;

        // The runs table: the hostile name is a link's text, and no image came of it.
        open(
            &c,
            &base,
            "/",
            "document.querySelector('#runs tbody tr')",
            "runs",
        )
        .await;
        let names = eval(
            &c,
            "return [...document.querySelectorAll('#runs td.id a')].map(a => a.textContent);",
        )
        .await;
        assert!(
            names
                .as_array()
                .unwrap()
                .contains(&json!(format!("runs/{HOSTILE}"))),
            "{names}"
        );
        assert!(
            c.find_all(Locator::Css("#runs img"))
                .await
                .unwrap()
                .is_empty()
        );

        // The running run's page gains steps without a reload.
        let wait_running = Instant::now() + Duration::from_secs(300);
        while get(addr, &format!("/api/run?id={}", q("runs/live")), &[]).json()["curves"]["steps"]
            .as_u64()
            < Some(2)
        {
            assert!(Instant::now() < wait_running, "the live run never logged");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let loss = chart("chart-step-loss");
        open(
            &c,
            &base,
            &format!("/run?id={}", q("runs/live")),
            &loss,
            "run-live",
        )
        .await;
        let before = eval(&c, &format!("return {loss}.points();"))
            .await
            .as_u64()
            .unwrap();
        let marker = eval(&c, "window.__same_page = 1; return 1;").await;
        assert_eq!(marker, json!(1));
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let now = eval(&c, &format!("return {loss}.points();"))
                .await
                .as_u64()
                .unwrap();
            if now > before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no new step reached the page ({before})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            eval(&c, "return window.__same_page;").await,
            json!(1),
            "the page reloaded"
        );

        // A log axis switches on.
        c.find(Locator::Css("#chart-step-loss input.log-y"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert_eq!(
            eval(&c, &format!("return {loss}.log();")).await,
            json!(true)
        );

        // A finished run with its report; compare overlays two runs.
        let pets = format!("/run?id={}", q("runs/pets"));
        open(&c, &base, &pets, &chart("chart-epoch-accuracy"), "run").await;
        // A small table's download is made in the page from its cells.
        let csv = c
            .execute_async(
                "const done = arguments[0]; \
                 fetch(document.querySelector('a[download=\"checkpoints.csv\"]').href) \
                 .then(r => r.text()).then(done);",
                vec![],
            )
            .await
            .unwrap();
        let ckpts = rekindle_train::durable::dir::RunDir::new(root.join("pets")).checkpoints();
        let kept = std::fs::read_dir(ckpts).unwrap().filter_map(Result::ok);
        let models = kept.filter(|e| e.file_name().to_string_lossy().starts_with("model-"));
        let want = 1 + models.count();
        let got: Vec<&str> = csv.as_str().unwrap().lines().collect();
        assert_eq!((got[0], got.len()), ("epoch,files", want), "{csv}");
        let both = format!("/compare?id={}&id={}", q("runs/pets"), q("runs/live"));
        let acc = chart("chart-compare-accuracy");
        open(&c, &base, &both, &acc, "compare").await;
        assert_eq!(eval(&c, &format!("return {acc}.series();")).await, json!(2));

        // The study: its charts, and the CSV its link gives is what the store holds.
        let study_page = format!("/study?id={}", q("runs/search"));
        let ready = format!("{} && window.__charts.parallel", chart("chart-history"));
        open(&c, &base, &study_page, &ready, "study").await;
        let href = eval(
            &c,
            "return document.querySelector('.toolbar a[download]').href;",
        )
        .await;
        let csv = c
            .execute_async(
                "const [url, done] = arguments; fetch(url).then(r => r.text()).then(done);",
                vec![href],
            )
            .await
            .unwrap();
        let mut reader = csv::Reader::from_reader(csv.as_str().unwrap().as_bytes());
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        let trials = Store::open_read_only(&storage).unwrap().trials().unwrap();
        assert_eq!(rows.len(), trials.len());
        for (r, t) in rows.iter().zip(&trials) {
            assert_eq!((&r[0], &r[1]), (t.id.to_string().as_str(), t.state.name()));
            assert_eq!(r[2].parse::<f64>().ok(), t.value);
        }
        c.close().await.unwrap();
    });
    stop.store(true, Ordering::SeqCst);
    let halted = trainer.join().unwrap();
    assert!(
        matches!(halted, Err(rekindle_train::TrainError::Halted(_))),
        "{halted:?}"
    );
}

/// Halts a run after the epoch in which `.0` was set.
struct HaltWhen(Arc<AtomicBool>);

impl rekindle_train::Watch for HaltWhen {
    fn epoch(&mut self, _: &rekindle_train::report::log::EpochRow) -> Option<String> {
        self.0
            .load(Ordering::SeqCst)
            .then(|| "the test has seen enough".into())
    }
}
