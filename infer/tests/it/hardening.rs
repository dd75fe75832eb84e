//! The service's defences, each through a real socket on 127.0.0.1 against a `serve` process:
//! the bearer token, the refusal to serve a non-loopback address open, the header and body
//! timeouts, the request deadline, the bounded queue (load shedding) and the connection cap,
//! then a short soak with the same load generator as `scripts/soak.sh`.

use crate::common;
#[path = "../../examples/soak.rs"]
#[allow(dead_code)]
mod soak;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::service::{Service, serve_command};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use serde_json::Value;

const TOKEN: &str = "hardening-test-token-4d1f";

impl Service {
    /// `/v1/model`'s JSON (with the token).
    fn info(&self) -> Value {
        let (status, _, body) = request(self.addr, "GET", "/v1/model", Some(TOKEN), None, b"");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// A refusal count from `/v1/model`.
    fn refused(&self, what: &str) -> u64 {
        self.info()["service"]["refused"][what].as_u64().unwrap()
    }
}

/// Starts `serve` on a free loopback port with a fresh model, `REKINDLE_TOKEN` set to [`TOKEN`]
/// and `extra` flags, and waits until it listens.
fn start(extra: &[&str]) -> Service {
    let mut cmd = serve_command();
    cmd.env("REKINDLE_TOKEN", TOKEN);
    Service::with_test_model(cmd, extra)
}

/// A response: status, header lines (lower-cased names), JSON body (`null` if none).
type Answer = (u16, Vec<(String, String)>, Value);

fn parse(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, headers, json)
}

fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
    a.1.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// One request on a fresh connection; the body is written from another thread so that an
/// early refusal is still read.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    ctype: Option<&str>,
    body: &[u8],
) -> Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    if let Some(c) = ctype {
        headers.push(("Content-Type", c));
    }
    let raw = common::raw_request(addr, method, path, &headers, body);
    parse(&raw)
}

fn png(i: u32) -> Vec<u8> {
    common::encode(&common::image(i), ImageFormat::Png)
}

/// A `side` x `side` PNG that takes a while to decode and resize (tens of milliseconds).
fn big_png(side: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(side, side, |x, y| {
        Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8])
    });
    common::encode(&DynamicImage::ImageRgb8(img), ImageFormat::Png)
}

fn predict(addr: SocketAddr, token: Option<&str>, body: &[u8]) -> Answer {
    request(
        addr,
        "POST",
        "/v1/predict?top_k=1",
        token,
        Some("image/png"),
        body,
    )
}

#[test]
fn the_token_is_wanted_everywhere_but_healthz_and_never_logged() {
    let svc = start(&[]);
    let (addr, good) = (svc.addr, png(1));
    let wrong = "wrong-token-never-logged";
    let health = request(addr, "GET", "/healthz", None, None, b"");
    assert_eq!(health.0, 200, "liveness probes need no token");
    let refusals = [
        request(addr, "GET", "/v1/model", None, None, b""),
        request(addr, "GET", "/v1/model", Some(wrong), None, b""),
        predict(addr, None, &good),
        predict(addr, Some(wrong), &good),
        predict(addr, Some(&TOKEN[..TOKEN.len() - 1]), &good),
        request(addr, "GET", "/v3/elsewhere", None, None, b""),
    ];
    for (i, r) in refusals.iter().enumerate() {
        assert_eq!(r.0, 401, "case {i}: {}", r.2);
        assert_eq!(r.2["error"]["status"], 401, "case {i}");
        assert_eq!(r.2["error"]["kind"], "unauthorized", "case {i}");
        let challenge = header(r, "www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "case {i}: {challenge:?}");
    }
    // The Open Inference Protocol's routes want it too, and refuse in the protocol's format;
    // its probes, like /healthz, are open.
    for path in ["/v2", "/v2/models/m", "/v2/models/m/infer", "/metrics"] {
        let method = if path.ends_with("infer") {
            "POST"
        } else {
            "GET"
        };
        let r = request(addr, method, path, None, None, b"");
        assert_eq!(r.0, 401, "{path}: {}", r.2);
        if path.starts_with("/v2") {
            assert!(
                r.2["error"].as_str().unwrap().contains("Bearer"),
                "{path}: {}",
                r.2
            );
        }
        let challenge = header(&r, "www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{path}: {challenge:?}");
    }
    for path in ["/v2/health/live", "/v2/health/ready"] {
        assert_eq!(request(addr, "GET", path, None, None, b"").0, 200, "{path}");
    }
    for path in ["/v1/predict", "/healthz"] {
        let r = request(addr, "PUT", path, Some(TOKEN), None, b"");
        assert_eq!(r.0, 405, "{path}");
        assert_eq!(r.2["error"]["kind"], "method_not_allowed", "{path}");
    }
    let ok = predict(addr, Some(TOKEN), &good);
    assert_eq!(ok.0, 200, "{}", ok.2);
    assert_eq!(ok.2["predictions"].as_array().unwrap().len(), 1);
    let info = svc.info();
    assert_eq!(info["service"]["auth"], "bearer");
    assert_eq!(info["service"]["refused"]["unauthorized"], 6 + 4);
    let log = svc.log();
    assert!(log.contains("request refused"), "{log}");
    assert!(!log.contains(TOKEN) && !log.contains(wrong), "{log}");
}

#[test]
fn a_token_file_sets_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("token");
    std::fs::write(&file, "from-a-file-77\n").unwrap();
    let svc = start(&["--token-file", file.to_str().unwrap()]);
    let with = |t| request(svc.addr, "GET", "/v1/model", Some(t), None, b"").0;
    assert_eq!(with("from-a-file-77"), 200);
    assert_eq!(with(TOKEN), 401, "the file wins over REKINDLE_TOKEN");
}

/// The exit status and stderr of `serve` with `args` (and `REKINDLE_TOKEN` if given), or
/// `None` if it was still running after 60 s (killed).
fn refused_start(args: &[&str], env_token: Option<&str>) -> Option<(i32, String)> {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.bpk");
    common::model_file(&model);
    let mut cmd = serve_command();
    if let Some(t) = env_token {
        cmd.env("REKINDLE_TOKEN", t);
    }
    let mut child = cmd
        .args(["--model", model.to_str().unwrap()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    Some((child.wait().unwrap().code().unwrap_or(-1), err))
}

#[test]
fn a_non_loopback_address_without_a_token_is_refused_at_start() {
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let (code, err) = refused_start(&["--addr", addr], None).expect("refused, not serving");
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("refusing to serve"), "{err}");
        assert!(err.contains("--insecure-no-token"), "{err}");
    }
    // An empty token is no token: refused too, naming where it came from.
    let (code, err) = refused_start(&["--addr", "0.0.0.0:0"], Some("")).unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("REKINDLE_TOKEN") && err.contains("empty"),
        "{err}"
    );
    // The escape hatch starts it.
    let svc = start_open(&["--addr", "0.0.0.0:0", "--insecure-no-token"]);
    assert!(svc.starts_with("listening on http://0.0.0.0:"), "{svc}");
}

/// The first line `serve` prints with `args` and no token (then it is killed).
fn start_open(args: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.bpk");
    common::model_file(&model);
    let mut child = serve_command()
        .args(["--model", model.to_str().unwrap()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let _ = child.kill();
    let _ = child.wait();
    line
}

/// Sends `bytes` one at a time, `gap` apart, on `s`; the time the server cut the connection
/// off (or answered), if it did before all were sent.
fn trickle(s: &mut TcpStream, bytes: &[u8], gap: Duration) -> Option<Duration> {
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let mut probe = [0u8; 256];
    for b in bytes {
        if s.write_all(&[*b]).is_err() {
            return Some(started.elapsed());
        }
        match s.read(&mut probe) {
            Ok(_) => return Some(started.elapsed()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
        std::thread::sleep(gap);
    }
    None
}

#[test]
fn headers_trickled_past_the_header_timeout_are_cut_off() {
    let svc = start(&["--header-timeout-ms", "500"]);
    let req = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Slow: {}\r\n\r\n",
        svc.addr,
        "z".repeat(150)
    );
    // About 10 s of headers at 50 ms a byte, twenty times the timeout: being cut off at all is
    // the proof, so no upper bound on when (a loaded machine only makes everything later).
    let mut s = TcpStream::connect(svc.addr).unwrap();
    let cut = trickle(&mut s, req.as_bytes(), Duration::from_millis(50));
    let cut = cut.expect("the server waited for the whole trickle");
    assert!(
        cut >= Duration::from_millis(400),
        "cut before the timeout: {cut:?}"
    );
    // A prompt client on the same server is served.
    assert_eq!(request(svc.addr, "GET", "/healthz", None, None, b"").0, 200);
    assert_eq!(svc.refused("header_timeouts"), 1);
}

#[test]
fn a_stalled_body_gets_408_within_the_body_timeout() {
    let svc = start(&["--body-timeout-ms", "500"]);
    let mut s = TcpStream::connect(svc.addr).unwrap();
    let head = format!(
        "POST /v1/predict HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: image/png\r\nContent-Length: 10000\r\n\r\n",
        svc.addr
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&png(2)[..100]).unwrap();
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let waited = started.elapsed();
    let answer = parse(&raw);
    // The 408 itself says the body timeout fired (the read above gives up after 10 s); only
    // the lower bound is timing.
    assert_eq!(answer.0, 408, "{}", answer.2);
    assert_eq!(answer.2["error"]["kind"], "body_timeout");
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    // Trickled, but whole within the timeout: served.
    let body = png(3);
    let mut s = TcpStream::connect(svc.addr).unwrap();
    let head = format!(
        "POST /v1/predict HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\
         Content-Type: image/png\r\nContent-Length: {}\r\n\r\n",
        svc.addr,
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    for chunk in body.chunks(body.len() / 4 + 1) {
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(chunk).unwrap();
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert_eq!(parse(&raw).0, 200);
    assert_eq!(svc.refused("body_timeouts"), 1);
}

#[test]
fn an_answer_later_than_the_request_timeout_is_a_504() {
    let svc = start(&["--request-timeout-ms", "1"]);
    let r = predict(svc.addr, Some(TOKEN), &big_png(1500));
    assert_eq!(r.0, 504, "{}", r.2);
    assert_eq!(r.2["error"]["kind"], "deadline_exceeded");
    assert_eq!(svc.refused("deadline_exceeded"), 1);
    // The abandoned decode frees its place in the queue once it ends.
    let deadline = Instant::now() + Duration::from_secs(30);
    while svc.info()["service"]["queue_depth"] != 0 {
        assert!(Instant::now() < deadline, "the place was never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_full_queue_sheds_with_503_and_retry_after_while_others_are_served() {
    let svc = start(&[
        "--max-queue",
        "2",
        "--max-batch",
        "1",
        "--retry-after-s",
        "3",
    ]);
    let addr = svc.addr;
    let body = Arc::new(big_png(1200));
    let (mut ok, mut shed) = (0, 0);
    // Eight at once, each holding its place for tens of milliseconds of decoding: some shed.
    for _round in 0..3 {
        let barrier = Arc::new(Barrier::new(8));
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let (barrier, body) = (barrier.clone(), body.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    predict(addr, Some(TOKEN), &body)
                })
            })
            .collect();
        for c in clients {
            let r = c.join().unwrap();
            match r.0 {
                200 => ok += 1,
                503 => {
                    shed += 1;
                    assert_eq!(r.2["error"]["kind"], "overloaded", "{}", r.2);
                    assert_eq!(header(&r, "retry-after"), Some("3"));
                }
                s => panic!("status {s}: {}", r.2),
            }
        }
        if shed > 0 && ok > 0 {
            break;
        }
    }
    assert!(shed > 0 && ok >= 2, "ok {ok}, shed {shed}");
    let info = svc.info();
    assert_eq!(info["service"]["refused"]["shed"], shed);
    assert_eq!(info["service"]["max_queue"], 2);
    assert_eq!(
        predict(addr, Some(TOKEN), &png(4)).0,
        200,
        "served once the burst is over"
    );
}

/// A connection that has sent part of its headers: it holds a slot until the header timeout.
fn half_open(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    s
}

#[test]
fn the_connection_cap_holds_further_connections_until_one_closes() {
    let svc = start(&["--max-connections", "2", "--header-timeout-ms", "20000"]);
    let (a, b) = (half_open(svc.addr), half_open(svc.addr));
    // Both slots taken: the server says so once it has accepted two and waits for a third slot
    // (a fixed sleep here let a loaded machine accept the third connection before `b`).
    let waited = Instant::now();
    while !svc.log().contains("connection cap reached") {
        assert!(
            waited.elapsed() < Duration::from_secs(20),
            "the server never filled its two slots: {}",
            svc.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut third = TcpStream::connect(svc.addr).unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut raw = Vec::new();
    let early = third.read_to_end(&mut raw);
    assert!(
        early.is_err() && raw.is_empty(),
        "served over the cap: {raw:?}"
    );
    drop(a);
    // Served once a slot frees: the held connections' header timeout is 20 s, and this read
    // gives up after 10, so an answer at all is the proof (no tighter bound that load breaks).
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = third.read_to_end(&mut raw);
    assert_eq!(parse(&raw).0, 200);
    drop(b);
    let info = svc.info();
    assert_eq!(info["service"]["max_connections"], 2);
    assert!(
        info["service"]["refused"]["connection_waits"]
            .as_u64()
            .unwrap()
            >= 1,
        "{info}"
    );
}

#[test]
fn a_short_soak_has_no_500s_and_503s_only_from_shedding() {
    let svc = start(&[
        "--max-queue",
        "4",
        "--max-connections",
        "12",
        "--max-image-mb",
        "1",
        "--header-timeout-ms",
        "1000",
        "--body-timeout-ms",
        "1000",
    ]);
    let out = tempfile::tempdir().unwrap();
    let config = soak::Config {
        addr: svc.addr,
        token: TOKEN.into(),
        seconds: 12.0,
        concurrency: 16,
        pid: Some(svc.child.id()),
        out: Some(out.path().to_path_buf()),
        max_rss_growth_mb: 512.0,
        seed: 7,
        max_requests: 1_000_000,
    };
    let summary = soak::run(&config).unwrap();
    let text = serde_json::to_string_pretty(&summary).unwrap();
    assert_eq!(summary["status_500"], 0, "{text}");
    assert_eq!(summary["unexpected"], 0, "{text}");
    // Every 503 the clients saw is one the server counted as shed.
    assert_eq!(
        summary["status_503_shed"], summary["server"]["service"]["refused"]["shed"],
        "{text}"
    );
    assert_eq!(summary["ok"], true, "{text}");
    for kind in soak::KINDS {
        assert!(
            summary["requests"][kind].as_u64().unwrap() > 0,
            "no {kind}: {text}"
        );
    }
    assert!(
        summary["status_counts"]["200"].as_u64().unwrap() > 20,
        "{text}"
    );
    assert!(out.path().join("rss.png").exists() && out.path().join("summary.json").exists());
}

#[test]
fn sigterm_stops_the_service_despite_slow_clients() {
    let mut svc = start(&["--header-timeout-ms", "1000", "--body-timeout-ms", "1000"]);
    let _slow_headers = half_open(svc.addr);
    let mut stalled = TcpStream::connect(svc.addr).unwrap();
    let head = format!(
        "POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: image/png\r\nContent-Length: 5000\r\n\r\n"
    );
    stalled.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let status = svc.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status}: {}", svc.log());
}
