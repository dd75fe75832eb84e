//! A run followed while it trains: the events stream carries every new step once, in order,
//! from where the page's first read ended, then the run's end.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rekindle_train::durable::dir::RunDir;

use crate::common::{config, get, image_folder, q, serve};

#[test]
fn a_running_run_streams_its_new_steps_then_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, data) = (tmp.path().join("runs"), tmp.path().join("data"));
    image_folder(&data, 24);
    let run = root.join("live");
    std::fs::create_dir_all(&root).unwrap();
    let cfg = config(&data, &run, 3);
    let trainer = std::thread::spawn(move || rekindle_train::train(&cfg, false));
    let addr = serve(&root, None);
    let id = q("runs/live");

    // The page's first read, once the run has logged a step.
    let deadline = Instant::now() + Duration::from_secs(300);
    let first = loop {
        assert!(Instant::now() < deadline, "the run never logged a step");
        let r = get(addr, &format!("/api/run?id={id}"), &[]);
        if r.status == 200 {
            let j = r.json();
            if j["state"] == "running" && j["curves"]["steps"].as_u64() > Some(0) {
                break j["curves"]["steps"].as_u64().unwrap() as usize;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };

    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(
        s,
        "GET /api/run/events?from={first}&id={id} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    let mut lines = BufReader::new(s).lines();
    let (mut event, mut streamed, mut ended) = (String::new(), Vec::new(), None);
    let mut updates = 0;
    while let Some(Ok(line)) = lines.next() {
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            if event == "update" {
                let u: serde_json::Value = serde_json::from_str(data).unwrap();
                streamed.extend(
                    u["steps"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s[0].as_f64().unwrap()),
                );
                updates += 1;
            } else if event == "end" {
                ended = Some(data.to_string());
                break;
            }
        }
    }
    let outcome = trainer.join().unwrap();
    outcome.expect("training");
    assert_eq!(ended.as_deref(), Some("finished"));
    let logged = rekindle_train::report::log::read_steps(&RunDir::new(&run)).unwrap();
    let want: Vec<f64> = logged.iter().skip(first).map(|r| r[0]).collect();
    assert_eq!(streamed, want, "every later step once, in order");
    assert!(
        updates >= 2,
        "the steps came as they were logged, not at the end: {updates}"
    );
}
