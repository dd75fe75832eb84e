//! The token: every request wants it, a browser keeps it in a cookie once it opened
//! `/?token=`, and the binary refuses a non-loopback address without one. Traffic goes to
//! 127.0.0.1 only (a server bound to 0.0.0.0 answers there too).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{get, serve};

#[test]
fn every_request_wants_the_token_and_a_browser_keeps_it_in_a_cookie() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = serve(tmp.path(), Some("s3cret"));
    for path in [
        "/",
        "/api/runs",
        "/api/run/events?id=x",
        "/assets/uplot.js",
        "/study?id=x",
    ] {
        assert_eq!(get(addr, path, &[]).status, 401, "{path}");
        let wrong = get(addr, path, &[("Authorization", "Bearer nope")]);
        assert_eq!(wrong.status, 401, "{path}");
        assert_eq!(
            get(addr, path, &[("Cookie", "rekindle_token=nope")]).status,
            401
        );
    }
    assert_eq!(
        get(addr, "/", &[("Authorization", "Bearer s3cret")]).status,
        200
    );
    let opened = get(addr, "/run?id=a&token=s3cret", &[]);
    assert_eq!(opened.status, 303);
    assert_eq!(opened.header("location"), Some("/run?id=a"));
    let cookie = opened.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    assert_eq!(get(addr, "/", &[("Cookie", pair)]).status, 200);
}

fn dashboard() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rekindle-dashboard"));
    c.env_remove("REKINDLE_TOKEN");
    c
}

#[test]
fn a_non_loopback_address_wants_a_token_and_then_checks_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = dashboard()
        .args(["serve", "--addr", "0.0.0.0:0"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("refusing to serve 0.0.0.0:0 without a token"),
        "{err}"
    );

    // With a token it serves, and a request without the token gets 401.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = dashboard()
        .args([
            "serve",
            "--addr",
            &format!("0.0.0.0:{port}"),
            "--token",
            "s3cret",
        ])
        .arg(tmp.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    assert!(banner.contains(&format!("0.0.0.0:{port}")), "{banner}");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(get(addr, "/", &[]).status, 401);
    assert_eq!(
        get(addr, "/", &[("Authorization", "Bearer s3cret")]).status,
        200
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
