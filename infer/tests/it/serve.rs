//! The HTTP service through a real socket on 127.0.0.1: correct predictions to concurrent
//! clients (batched together), JSON 4xx errors for bad requests while it keeps serving, and a
//! clean exit on SIGTERM.

use crate::common;

use common::service::{Service, serve_command};

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use image::{DynamicImage, GrayImage, ImageFormat};
use rekindle_infer::Classifier;
use rekindle_model::burn::tensor::Device;
use serde_json::Value;

fn start(model: &std::path::Path, extra: &[&str]) -> Service {
    Service::start(serve_command(), model, extra)
}

/// One HTTP/1.1 request on a fresh connection: (status, JSON body). The body is written from
/// another thread so that a server refusing it early still gets its answer read.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ctype: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let headers: Vec<_> = ctype.map(|c| ("Content-Type", c)).into_iter().collect();
    let raw = common::raw_request(addr, method, path, &headers, body);
    let text = String::from_utf8_lossy(&raw);
    let (headers, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response: {text:?}"));
    let status = headers.split(' ').nth(1).unwrap().parse().unwrap();
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, json)
}

fn post_png(addr: SocketAddr, png: &[u8], query: &str) -> (u16, Value) {
    http(
        addr,
        "POST",
        &format!("/v1/predict{query}"),
        Some("image/png"),
        png,
    )
}

fn multipart(png: &[u8]) -> (String, Vec<u8>) {
    let boundary = "rekindle-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(png);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn assert_same(got: &Value, want: &rekindle_infer::Prediction) {
    let got = got["predictions"].as_array().unwrap();
    assert_eq!(got.len(), want.top.len());
    for (g, w) in got.iter().zip(&want.top) {
        assert_eq!(g["index"], w.index);
        assert_eq!(g["class"], w.class.as_str());
        assert!((g["probability"].as_f64().unwrap() as f32 - w.probability).abs() < 1e-5);
    }
}

#[test]
fn concurrent_clients_get_their_own_correct_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.bpk");
    common::model_file(&model);
    let svc = start(&model, &["--max-batch", "8", "--max-wait-ms", "200"]);
    let (status, health) = http(svc.addr, "GET", "/healthz", None, b"");
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, info) = http(svc.addr, "GET", "/v1/model", None, b"");
    assert_eq!(status, 200);
    assert_eq!(
        info["metadata"]["class_names"],
        serde_json::json!(["red", "green", "blue"])
    );

    let c = Classifier::load(&model, &Device::flex()).unwrap();
    let images: Vec<Vec<u8>> = (0..16)
        .map(|i| common::encode(&common::image(i), ImageFormat::Png))
        .collect();
    let want: Vec<_> = images
        .iter()
        .map(|b| c.predict_bytes(b, 2).unwrap())
        .collect();
    let images = Arc::new(images);
    let barrier = Arc::new(Barrier::new(16));
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let (images, barrier, addr) = (images.clone(), barrier.clone(), svc.addr);
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                for round in 0..3 {
                    barrier.wait();
                    let k = (i + round) % 16;
                    let r = if round == 1 {
                        let (ctype, body) = multipart(&images[k]);
                        http(addr, "POST", "/v1/predict?top_k=2", Some(&ctype), &body)
                    } else {
                        post_png(addr, &images[k], "?top_k=2")
                    };
                    answers.push((k, r));
                }
                answers
            })
        })
        .collect();
    let mut batches = Vec::new();
    for client in clients {
        for (k, (status, body)) in client.join().unwrap() {
            assert_eq!(status, 200, "{body}");
            assert_same(&body, &want[k]);
            batches.push(body["batch"].as_u64().unwrap());
        }
    }
    assert_eq!(batches.len(), 48);
    // Sixteen requests at once, with the model thread waiting up to 200 ms: shared batches.
    let (_, info) = http(svc.addr, "GET", "/v1/model", None, b"");
    assert_eq!(info["batching"]["images"], 48);
    assert!(
        info["batching"]["largest_batch"].as_u64().unwrap() > 1,
        "{info}"
    );
    assert!(batches.iter().all(|&b| (1..=8).contains(&b)), "{batches:?}");
}

#[test]
fn bad_requests_get_json_errors_and_the_service_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.bpk");
    common::model_file(&model);
    let svc = start(&model, &["--max-image-mb", "1"]);
    let addr = svc.addr;
    let good = common::encode(&common::image(3), ImageFormat::Png);
    let jpeg = common::encode(&common::image(4), ImageFormat::Jpeg);
    let bomb = common::encode(
        &DynamicImage::ImageLuma8(GrayImage::new(10_000, 10_000)),
        ImageFormat::Png,
    );
    let huge = vec![7u8; 3 << 20];
    let cases: Vec<(&str, u16, &str, (u16, Value))> = vec![
        (
            "not an image",
            400,
            "not an image",
            post_png(addr, b"GIF? no, just text", ""),
        ),
        (
            "truncated JPEG",
            400,
            "truncated",
            http(
                addr,
                "POST",
                "/v1/predict",
                Some("image/jpeg"),
                &jpeg[..jpeg.len() / 2],
            ),
        ),
        (
            "100 megapixels",
            413,
            "megapixels",
            post_png(addr, &bomb, ""),
        ),
        ("empty body", 400, "empty", post_png(addr, b"", "")),
        (
            "wrong content type",
            415,
            "text/plain",
            http(addr, "POST", "/v1/predict", Some("text/plain"), &good),
        ),
        ("huge body", 413, "limit", post_png(addr, &huge, "")),
        ("top_k 0", 400, "top_k", post_png(addr, &good, "?top_k=0")),
        (
            "top_k too big",
            400,
            "top_k",
            post_png(addr, &good, "?top_k=4"),
        ),
        (
            "top_k not a number",
            400,
            "top_k",
            post_png(addr, &good, "?top_k=two"),
        ),
        (
            "multipart without a file",
            400,
            "file part",
            http(
                addr,
                "POST",
                "/v1/predict",
                Some("multipart/form-data; boundary=b"),
                b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n",
            ),
        ),
        (
            "unknown route",
            404,
            "no such route",
            http(addr, "GET", "/v3/predict", None, b""),
        ),
    ];
    for (what, want_status, want_text, (status, body)) in cases {
        assert_eq!(status, want_status, "{what}: {body}");
        assert_eq!(body["error"]["status"], want_status, "{what}: {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(want_text), "{what}: {msg}");
        // still serving, correctly
        let (status, ok) = post_png(addr, &good, "?top_k=1");
        assert_eq!(status, 200, "after {what}: {ok}");
        assert_eq!(ok["predictions"].as_array().unwrap().len(), 1);
    }

    stops_cleanly_on_sigterm(svc);
}

/// SIGTERM (what `docker stop` and systemd send): a clean stop with exit status 0.
fn stops_cleanly_on_sigterm(mut svc: Service) {
    let status = svc.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}: {}", svc.log());
}

/// The README's `cargo xtask serve` hands its process over to the server once built (exec),
/// so the signal a supervisor sends to the process it started reaches the server, and the
/// graceful shutdown runs instead of leaving an orphaned server behind.
#[test]
fn sigterm_to_cargo_xtask_serve_stops_the_server_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.bpk");
    common::model_file(&model);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    // xtask execs this test build's own server (REKINDLE_BIN_DIR) rather than building a
    // flex-only one: that build was a second compile of Burn inside the suite.
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_rekindle-infer"))
        .parent()
        .unwrap();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root)
        .env("REKINDLE_BIN_DIR", bin_dir)
        .args(["xtask", "serve"]);
    let svc = Service::start(cmd, &model, &[]);
    let (status, health) = http(svc.addr, "GET", "/healthz", None, b"");
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    stops_cleanly_on_sigterm(svc);
}
