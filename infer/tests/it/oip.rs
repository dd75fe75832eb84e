//! The Open Inference Protocol (KServe v2) and `/metrics` against a running `serve`, with the
//! real clients: Triton's Python client (`tritonclient[http]`) for metadata, readiness and
//! inference (FP32 and BYTES inputs, batch 1 and 4, binary and JSON tensors, classification),
//! compared with the model run directly and with `/v1/predict`; bad requests refused with a
//! 4xx while the service stays up; `/metrics` parsed by prometheus_client's OpenMetrics parser
//! with counts matching what was sent. Python side: the committed `scripts/check_oip.py`.

use std::path::Path;
use std::process::Command;

use image::ImageFormat;
use rekindle_infer::Classifier;
use rekindle_model::burn::tensor::Device;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value;

use crate::common;
use common::service::{Service, serve_command};

const TOKEN: &str = "oip-test-token-0123456789";

fn floats(v: &Value) -> Vec<f32> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<f32>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            x => out.push(x.as_f64().unwrap() as f32),
        }
    }
    walk(v, &mut out);
    out
}

fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// The one sample of `name` whose labels include `labels`.
fn sample(metrics: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = metrics
        .iter()
        .filter(|s| s["name"] == name)
        .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0]
}

/// A raw request to the service: (status, JSON body).
fn http(svc: &Service, method: &str, path: &str, token: bool, body: &[u8]) -> (u16, Value) {
    http_with(svc, method, path, token, &[], body)
}

fn http_with(
    svc: &Service,
    method: &str,
    path: &str,
    token: bool,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if token {
        headers.push(("Authorization", auth.as_str()));
    }
    let raw = common::raw_request(svc.addr, method, path, &headers, body);
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn tritonclient_infers_and_metrics_count_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.bpk");
    common::model_file(&model);
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let svc = Service::start(
        serve_command(),
        &model,
        &[
            "--token-file",
            token.to_str().unwrap(),
            "--model-name",
            "colours",
            "--max-image-mb",
            "1",
        ],
    );

    // Four images: as PNG files for the BYTES input and /v1, and preprocessed for FP32.
    let classifier = Classifier::load(&model, &Device::flex()).unwrap();
    let images: Vec<_> = (0..4).map(common::image).collect();
    let mut files = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let f = dir.path().join(format!("{i}.png"));
        std::fs::write(&f, common::encode(img, ImageFormat::Png)).unwrap();
        files.push(f);
    }
    let pixels: Vec<f32> = images
        .iter()
        .flat_map(|i| classifier.preprocess(i))
        .collect();
    let bytes: Vec<u8> = pixels.iter().flat_map(|v| v.to_le_bytes()).collect();
    let input = dir.path().join("input.safetensors");
    let view = TensorView::new(Dtype::F32, vec![4, 3, 24, 24], &bytes).unwrap();
    safetensors::serialize_to_file([("input", view)], None, &input).unwrap();
    let want = classifier.outputs(pixels, 4);

    let python =
        std::env::var("REKINDLE_PYTHON").expect("REKINDLE_PYTHON (set by cargo xtask test)");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/check_oip.py");
    let out = Command::new(python)
        .arg(script)
        .args([&svc.addr.to_string(), "colours", TOKEN])
        .arg(&input)
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\nservice log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        svc.log()
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();

    // Health, readiness and metadata as the client reads them.
    for key in ["live", "ready", "model_ready", "live_after"] {
        assert_eq!(seen[key], true, "{key}: {seen}");
    }
    assert_eq!(seen["server_metadata"]["name"], "rekindle");
    let meta = &seen["model_metadata"];
    assert_eq!(meta["name"], "colours");
    assert_eq!(meta["versions"], serde_json::json!(["1"]));
    assert_eq!(
        meta["inputs"][0],
        serde_json::json!({"name": "input", "datatype": "FP32", "shape": [-1, 3, 24, 24]})
    );
    assert_eq!(
        meta["outputs"][0],
        serde_json::json!({"name": "logits", "datatype": "FP32", "shape": [-1, 3]})
    );

    // FP32 inputs: the model's own outputs, binary or JSON, batch 1 or 4.
    for n in [1usize, 4] {
        for how in ["binary", "json"] {
            let r = &seen[format!("fp32_{n}_{how}")];
            let logits: Vec<f32> = want[..n].iter().flat_map(|o| o.logits.clone()).collect();
            let probs: Vec<f32> = want[..n]
                .iter()
                .flat_map(|o| o.probabilities.clone())
                .collect();
            assert!(worst(&floats(&r["logits"]), &logits) < 1e-4, "{r}");
            assert!(worst(&floats(&r["probabilities"]), &probs) < 1e-5, "{r}");
            let classes = r["classes"].as_array().unwrap();
            assert_eq!(classes.len(), n);
            for (row, o) in classes.iter().zip(&want) {
                let top = classifier.predict_row(o, 2);
                let names: Vec<&str> = top.top.iter().map(|l| l.class.as_str()).collect();
                assert_eq!(row, &serde_json::json!(names), "top_k=2 classes");
            }
        }
    }

    // BYTES inputs (PNG files): what /v1/predict says for each, and Triton's classification.
    for n in [1usize, 4] {
        let r = &seen[format!("bytes_{n}")];
        let got = floats(&r["probabilities"]);
        for (i, f) in files[..n].iter().enumerate() {
            let (status, v1) = http(
                &svc,
                "POST",
                "/v1/predict?top_k=3",
                true,
                &std::fs::read(f).unwrap(),
            );
            assert_eq!(status, 200, "{v1}");
            for p in v1["predictions"].as_array().unwrap() {
                let index = p["index"].as_u64().unwrap() as usize;
                let v2 = got[i * 3 + index];
                assert!(
                    (p["probability"].as_f64().unwrap() as f32 - v2).abs() < 1e-5,
                    "{v1} {got:?}"
                );
            }
            let classification = r["classification"][i].as_array().unwrap();
            let best = &v1["predictions"][0];
            let first = classification[0].as_str().unwrap();
            assert!(
                first.ends_with(&format!(
                    ":{}:{}",
                    best["index"],
                    best["class"].as_str().unwrap()
                )),
                "{first} vs {best}"
            );
        }
    }

    // Refused with a 4xx naming what is wrong; the service stayed up (live_after above).
    let refused = &seen["refused"];
    for (what, status, says) in [
        ("wrong_shape", 400, "[N, 3, 24, 24]"),
        ("wrong_datatype", 400, "FP64"),
        ("unknown_model", 404, "no-such-model"),
        ("no_token", 401, "Bearer"),
        ("not_an_image", 400, "image 0"),
    ] {
        assert_eq!(
            refused[what]["status"],
            status.to_string(),
            "{what}: {refused}"
        );
        let message = refused[what]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{what}: {message}");
    }

    // /metrics counted exactly what the client sent.
    let m = seen["metrics"].as_array().unwrap();
    assert!(
        seen["metrics_content_type"]
            .as_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{}",
        seen["metrics_content_type"]
    );
    let infer = "/v2/models/{name}/infer";
    let count = |status: &str| {
        sample(
            m,
            "rekindle_http_requests_total",
            &[("route", infer), ("status", status)],
        )
    };
    let sent = &seen["sent"];
    assert_eq!(count("200"), sent["infer_ok"].as_f64().unwrap());
    assert_eq!(count("400"), 3.0);
    assert_eq!(count("404"), 1.0);
    assert_eq!(count("401"), 1.0);
    assert_eq!(
        sample(
            m,
            "rekindle_http_request_duration_seconds_count",
            &[("route", infer)]
        ),
        sent["infer_ok"].as_f64().unwrap() + 5.0
    );
    assert_eq!(sample(m, "rekindle_unauthorized_total", &[]), 1.0);
    // FP32: 1 + 1 + 4 + 4 images, BYTES: 1 + 4; refused requests never reach the model.
    assert_eq!(sample(m, "rekindle_images_total", &[]), 15.0);
    assert_eq!(
        sample(m, "rekindle_batch_size_count", &[]),
        sample(m, "rekindle_batches_total", &[])
    );
    assert_eq!(sample(m, "rekindle_batch_size_sum", &[]), 15.0);
    assert_eq!(sample(m, "rekindle_queue_depth", &[]), 0.0);
    assert!(sample(m, "rekindle_model_load_seconds", &[]) > 0.0);

    // What a client without tritonclient meets: the protocol's error JSON for a body over the
    // limit and an unknown route, and /metrics behind the token.
    let big = vec![b' '; 1_200_000];
    let (status, body) = http(&svc, "POST", "/v2/models/colours/infer", true, &big);
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");
    let (status, body) = http(&svc, "GET", "/v2/models/colours/versions/7", true, b"");
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("version"),
        "{body}"
    );
    let (status, body) = http(&svc, "GET", "/v2/nope", true, b"");
    assert!(
        status == 404 && body["error"].is_string(),
        "{status} {body}"
    );
    let (status, _) = http(&svc, "GET", "/metrics", false, b"");
    assert_eq!(status, 401);

    // More images in one request than the queue ever holds (64): refused at once, binary data
    // and all, rather than waiting for places that cannot all be free.
    let data = vec![0u8; 65 * 3 * 24 * 24 * 4];
    let head = format!(
        r#"{{"inputs":[{{"name":"input","shape":[65,3,24,24],"datatype":"FP32","parameters":{{"binary_data_size":{}}}}}]}}"#,
        data.len()
    );
    let length = head.len().to_string();
    let mut body = head.into_bytes();
    body.extend_from_slice(&data);
    let (status, answer) = http_with(
        &svc,
        "POST",
        "/v2/models/colours/infer",
        true,
        &[("Inference-Header-Content-Length", length.as_str())],
        &body,
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("at most 64"),
        "{answer}"
    );
    let (status, _) = http(&svc, "GET", "/v2/health/ready", false, b"");
    assert_eq!(status, 200, "probes are open");
}
