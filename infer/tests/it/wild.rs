//! Images from the wild through `rekindle-infer predict` and the HTTP service: each file is
//! predicted by both or refused by both, the refusal naming the file (predict) or saying why
//! (the service: 400, or 413 for a header declaring a huge image); an EXIF-rotated photo is
//! predicted upright; nothing panics. The fixtures are train's (`scripts/make_wild_images.py`).

use crate::common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::service::{Service, serve_command};
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma};
use rekindle_infer::Classifier;
use rekindle_model::burn::tensor::Device;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../train/tests/data/wild")
}

/// Files both must predict.
const PREDICTED: [&str; 9] = [
    "exif-1.jpg",
    "exif-6.jpg",
    "png-exif-6.png",
    "cmyk.jpg",
    "ycck.jpg",
    "progressive.jpg",
    "palette.png",
    "palette-trns.png",
    "gray16.png",
];

/// Files both must refuse, with a word of the reason.
const REFUSED: [(&str, &str); 5] = [
    ("empty.png", "empty (0 bytes)"),
    ("huge.png", "100000x100000"),
    ("huge.jpg", "60000x50000"),
    ("text.jpg", "not an image"),
    ("truncated.jpg", "truncated"),
];

fn raw_name() -> &'static OsStr {
    OsStr::from_bytes(b"caf\xe9-\xff.png")
}

fn wild_files(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for name in PREDICTED.iter().chain(["huge.png", "huge.jpg"].iter()) {
        let src = fixtures().join(name);
        if src.exists() {
            std::fs::copy(&src, dir.join(name)).unwrap();
        }
    }
    let gray16 = ImageBuffer::from_fn(20, 12, |x, y| Luma([(x * 3000 + y * 500) as u16]));
    DynamicImage::ImageLuma16(gray16)
        .save(dir.join("gray16.png"))
        .unwrap();
    std::fs::write(dir.join("empty.png"), b"").unwrap();
    std::fs::write(
        dir.join("text.jpg"),
        b"a caption, saved with the wrong name",
    )
    .unwrap();
    let jpeg = common::encode(&common::image(3), ImageFormat::Jpeg);
    std::fs::write(dir.join("truncated.jpg"), &jpeg[..jpeg.len() * 2 / 3]).unwrap();
}

/// POSTs `body` as an image: (status, JSON answer).
fn post(addr: SocketAddr, body: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "POST /v1/predict HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let (headers, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = headers.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).expect("a JSON body"))
}

#[test]
fn predict_and_the_service_predict_or_refuse_each_wild_file_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.bpk");
    common::model_file(&model);
    let dir = tmp.path().join("wild");
    wild_files(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_rekindle-infer"))
        .args(["predict", "--json", "--top-k", "3", "--model"])
        .arg(&model)
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !out.status.success(),
        "refused files fail the run at the end"
    );
    assert!(
        stderr.contains(&format!("{} failed", REFUSED.len())),
        "{stderr}"
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), PREDICTED.len() + REFUSED.len());
    let svc = Service::start(serve_command(), &model, &[]);
    let c = Classifier::load(&model, &Device::flex()).unwrap();
    for line in &lines {
        let path = PathBuf::from(line["path"].as_str().unwrap());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (status, answer) = post(svc.addr, &std::fs::read(&path).unwrap());
        match REFUSED.iter().find(|(n, _)| *n == name) {
            Some((_, why)) => {
                let err = line["error"].as_str().unwrap_or_else(|| panic!("{line}"));
                assert!(err.contains(&name) && err.contains(why), "{err}");
                let want = if name.starts_with("huge") { 413 } else { 400 };
                let message = answer["error"]["message"].as_str().unwrap_or_default();
                assert_eq!(status, want, "{name}: {answer}");
                assert!(message.contains(why), "{name}: {answer}");
            }
            None => {
                assert_eq!(status, 200, "{name}: {answer}");
                let got = line["predictions"].as_array().unwrap();
                let served = answer["predictions"].as_array().unwrap();
                let want = c
                    .predict_paths(std::slice::from_ref(&path), 3)
                    .remove(0)
                    .unwrap();
                for ((g, s), w) in got.iter().zip(served).zip(&want.top) {
                    assert_eq!(g["index"], w.index, "{name}");
                    assert_eq!(s["index"], w.index, "{name}");
                    let (gp, sp) = (g["probability"].as_f64(), s["probability"].as_f64());
                    assert!((gp.unwrap() as f32 - w.probability).abs() < 1e-5, "{name}");
                    assert!((sp.unwrap() as f32 - w.probability).abs() < 1e-5, "{name}");
                }
            }
        }
    }
}

#[test]
fn an_exif_rotated_photo_is_served_upright() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.bpk");
    common::model_file(&model);
    let c = Classifier::load(&model, &Device::flex()).unwrap();
    let turned = c.load_image(&fixtures().join("exif-6.jpg")).unwrap();
    let stored = c.load_image(&fixtures().join("exif-1.jpg")).unwrap();
    assert_eq!((turned.width(), turned.height()), (16, 24));
    // Orientation 6 is a quarter turn clockwise of the stored pixels.
    assert!(turned == stored.rotate90());
    let upright = c.predict_images(&[stored.rotate90()], 3).remove(0);
    let served = c
        .predict_paths(&[fixtures().join("exif-6.jpg")], 3)
        .remove(0);
    assert_eq!(served.unwrap().top, upright.top);
}

/// `predict` (`--json`, or the table) on a folder holding a file whose name is not UTF-8.
fn predict_raw_name(json: bool) -> (std::process::Output, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.bpk");
    common::model_file(&model);
    let dir = tmp.path().join("images");
    std::fs::create_dir_all(&dir).unwrap();
    common::image(4)
        .save_with_format(dir.join(raw_name()), ImageFormat::Png)
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rekindle-infer"));
    cmd.args(["predict", "--model"]).arg(&model).arg(&dir);
    if json {
        cmd.arg("--json");
    }
    (cmd.output().unwrap(), tmp)
}

#[test]
fn a_file_name_that_is_not_utf8_is_predicted_under_its_lossy_name() {
    let (out, _tmp) = predict_raw_name(false);
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(text.contains("caf\u{FFFD}-\u{FFFD}.png"), "{text}");
}

#[test]
fn a_file_name_that_is_not_utf8_is_predicted_in_json_too() {
    let (out, _tmp) = predict_raw_name(true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("panicked"),
        "{stderr}"
    );
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = line["path"].as_str().unwrap_or_default();
    assert!(path.ends_with("caf\u{FFFD}-\u{FFFD}.png"), "{line}");
}

/// A folder holding links back up (to itself, to its parent): each image once, and an end.
#[test]
fn a_symlink_loop_in_a_folder_predicts_each_image_once() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.bpk");
    common::model_file(&model);
    let dir = tmp.path().join("images");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    common::image(1).save(dir.join("a.png")).unwrap();
    common::image(2).save(dir.join("sub/b.png")).unwrap();
    std::os::unix::fs::symlink(".", dir.join("loop")).unwrap();
    std::os::unix::fs::symlink("..", dir.join("sub/up")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rekindle-infer"))
        .args(["predict", "--json", "--model"])
        .arg(&model)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paths: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["path"].to_string())
        .collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
}
