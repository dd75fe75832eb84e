//! `predict` and `serve` on every backend compiled into this test build (flex, ndarray, wgpu on
//! lavapipe and tch here): the same top class and probabilities as on flex, from the command
//! line and from the HTTP service.

use crate::common;

use common::backends::runnable;
use common::service::{Service, serve_command};

use std::path::{Path, PathBuf};
use std::process::Command;

use image::ImageFormat;
use rekindle_model::burn::tensor::Device;
use rekindle_model::{
    Arch, Backend, HeadConfig, ModelMetadata, Preprocess, ResNetConfig, save_model,
};
use serde_json::Value;

/// Largest difference allowed between a backend's probability of a class and flex's.
///
/// The forward pass differs by summation order only (logits within 1e-4 of flex's, model's
/// `backends` test); measured here on a 2-core Intel Xeon (AVX-512), `predict` / `serve`:
/// ndarray 6.0e-7 / 7.8e-7, wgpu (lavapipe) 6.0e-7 / 7.8e-7, tch 1.1e-6 / 1.9e-7. The top
/// class's probability is 0.57 to 0.96 and the second's 0.04 to 0.43, so a wrong operation
/// moves them by far more than 1e-4.
const PROB_TOL: f64 = 1e-4;

/// Images to classify.
const IMAGES: u32 = 4;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rekindle-infer"))
}

/// Writes the test model and images to `dir`: (model, image files). The model is
/// [`common::model_file`]'s (a ResNet-18 for red, green and blue at 24 px) with its weights
/// drawn on the CPU: the same every time, whichever tests share the process.
fn setup(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let model = dir.join("m.bpk");
    let config = ResNetConfig::new(Arch::Resnet18, HeadConfig::new(3));
    let net = common::weights::drawn(config.init(&Device::flex()), 13, 0.0);
    let pre = Preprocess {
        resize: 28,
        crop: 24,
        ..Preprocess::imagenet()
    };
    let names = ["red", "green", "blue"].map(String::from).to_vec();
    save_model(&model, &net, &ModelMetadata::new(config, names, pre)).unwrap();
    let files = (0..IMAGES)
        .map(|i| {
            let p = dir.join(format!("{i}.png"));
            common::image(i).save(&p).unwrap();
            p
        })
        .collect();
    (model, files)
}

/// Every class's probability, by class index, from one image's `predictions` array.
fn probabilities(predictions: &Value) -> Vec<f64> {
    let top = predictions.as_array().unwrap();
    let mut p = vec![f64::NAN; top.len()];
    for t in top {
        p[t["index"].as_u64().unwrap() as usize] = t["probability"].as_f64().unwrap();
    }
    p
}

/// Checks one image's answer against flex's: the same classes ranked first (unless flex's two
/// best are closer than the tolerance) and every probability within [`PROB_TOL`]. Returns the
/// largest difference.
fn same_answer(what: &str, want: &Value, got: &Value) -> f64 {
    let (w, g) = (probabilities(want), probabilities(got));
    assert_eq!(w.len(), g.len(), "{what}: {got} vs {want}");
    let worst = w
        .iter()
        .zip(&g)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst <= PROB_TOL, "{what}: {got} vs {want}: {worst:.2e}");
    let gap = want[0]["probability"].as_f64().unwrap() - want[1]["probability"].as_f64().unwrap();
    if gap > 2.0 * PROB_TOL {
        assert_eq!(got[0]["index"], want[0]["index"], "{what}: top class");
        assert_eq!(got[0]["class"], want[0]["class"], "{what}: top class");
    }
    worst
}

/// `predict --json --top-k 3` on `backend`: each file's `predictions`, in `files`' order.
fn predict(backend: Backend, model: &Path, files: &[PathBuf]) -> Vec<Value> {
    let out = bin()
        .args([
            "predict",
            "--json",
            "--top-k",
            "3",
            "--backend",
            backend.name(),
        ])
        .arg("--model")
        .arg(model)
        .args(files)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "predict on {backend}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    files
        .iter()
        .map(|f| {
            let line = lines
                .iter()
                .find(|l| l["path"] == f.display().to_string())
                .unwrap_or_else(|| panic!("{backend}: {} not predicted:\n{stdout}", f.display()));
            line["predictions"].clone()
        })
        .collect()
}

#[test]
fn predict_answers_alike_on_every_backend() {
    let backends = runnable();
    let tmp = tempfile::tempdir().unwrap();
    let (model, files) = setup(tmp.path());
    let reference = backends[0];
    let want = predict(reference, &model, &files);
    // Not a constant answer nor a saturated one: two classes come first (green for images 0
    // and 1, red for 2 and 3), none with a probability above 0.97.
    let firsts: std::collections::BTreeSet<String> =
        want.iter().map(|p| p[0]["class"].to_string()).collect();
    assert!(firsts.len() > 1, "one class for every image: {want:?}");
    assert!(
        want.iter()
            .all(|p| p[0]["probability"].as_f64().unwrap() < 0.97),
        "{want:?}"
    );
    for &b in &backends[1..] {
        let got = predict(b, &model, &files);
        let worst = files
            .iter()
            .zip(want.iter().zip(&got))
            .map(|(f, (w, g))| same_answer(&format!("{b}, {}", f.display()), w, g))
            .fold(0.0, f64::max);
        println!("predict on {b}: largest probability difference from {reference} {worst:.2e}");
    }
}

/// One HTTP request to the service; (status, JSON body).
fn http(svc: &Service, method: &str, path: &str, ctype: Option<&str>, body: &[u8]) -> (u16, Value) {
    let headers: Vec<_> = ctype.map(|c| ("Content-Type", c)).into_iter().collect();
    let raw = common::raw_request(svc.addr, method, path, &headers, body);
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response: {text:?}\n{}", svc.log()));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, json)
}

#[test]
fn serve_answers_alike_on_every_backend() {
    let backends = runnable();
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = setup(tmp.path());
    let images: Vec<Vec<u8>> = (0..2)
        .map(|i| common::encode(&common::image(i), ImageFormat::Png))
        .collect();
    let mut want: Vec<Value> = Vec::new();
    for &b in &backends {
        let svc = Service::start(serve_command(), &model, &["--backend", b.name()]);
        let (status, info) = http(&svc, "GET", "/v1/model", None, b"");
        assert_eq!(status, 200, "{b}: {info}");
        assert_eq!(info["backend"], b.name(), "{b}: {info}");
        let got: Vec<Value> = images
            .iter()
            .map(|png| {
                let (status, body) =
                    http(&svc, "POST", "/v1/predict?top_k=3", Some("image/png"), png);
                assert_eq!(status, 200, "{b}: {body}\n{}", svc.log());
                body["predictions"].clone()
            })
            .collect();
        if want.is_empty() {
            want = got;
            continue;
        }
        let worst = want
            .iter()
            .zip(&got)
            .map(|(w, g)| same_answer(&format!("serve on {b}"), w, g))
            .fold(0.0, f64::max);
        println!(
            "serve on {b}: largest probability difference from {} {worst:.2e}",
            backends[0]
        );
    }
}
