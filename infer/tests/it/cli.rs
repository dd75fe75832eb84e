//! The `rekindle-infer predict` command: same top-k as the library, JSON and table output, and
//! an unreadable file reported with its path while the others are still predicted.

use crate::common;

use std::path::PathBuf;
use std::process::Command;

use image::ImageFormat;
use rekindle_infer::Classifier;
use rekindle_model::burn::tensor::Device;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rekindle-infer"))
}

#[test]
fn predict_matches_the_library_and_reports_bad_files() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.bpk");
    common::model_file(&model);
    let dir = tmp.path().join("images");
    std::fs::create_dir_all(dir.join("more")).unwrap();
    let mut files: Vec<PathBuf> = Vec::new();
    for i in 0..5 {
        let p = dir.join(format!("{i}.png"));
        common::image(i).save(&p).unwrap();
        files.push(p);
    }
    let jpg = dir.join("more/5.jpg");
    std::fs::write(&jpg, common::encode(&common::image(5), ImageFormat::Jpeg)).unwrap();
    files.push(jpg);
    let broken = dir.join("more/broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\n but then nothing").unwrap();
    std::fs::write(dir.join("notes.txt"), "not an image, and not picked up").unwrap();

    let out = bin()
        .args([
            "predict",
            "--top-k",
            "2",
            "--batch-size",
            "4",
            "--json",
            "--model",
        ])
        .arg(&model)
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a bad file must fail the run at the end"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("broken.png") && stderr.contains("1 failed"),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7, "{stdout}");

    // The library's answer for the same files.
    let c = Classifier::load(&model, &Device::flex()).unwrap();
    let want = c.predict_paths(&files, 2);
    for (file, w) in files.iter().zip(&want) {
        let line = lines
            .iter()
            .find(|l| l["path"] == file.display().to_string())
            .unwrap_or_else(|| panic!("{} not predicted:\n{stdout}", file.display()));
        let got = line["predictions"].as_array().unwrap();
        let w = w.as_ref().unwrap();
        assert_eq!(got.len(), 2);
        for (g, l) in got.iter().zip(&w.top) {
            assert_eq!(g["index"], l.index);
            assert_eq!(g["class"], l.class.as_str());
            let p = g["probability"].as_f64().unwrap() as f32;
            assert!((p - l.probability).abs() < 1e-5, "{line}");
        }
    }
    let bad = lines
        .iter()
        .find(|l| l["path"] == broken.display().to_string())
        .unwrap();
    assert!(bad["error"].as_str().unwrap().contains("broken.png"));

    // The table names each file and its classes with percentages.
    let out = bin()
        .args(["predict", "--top-k", "3", "--model"])
        .arg(&model)
        .args(&files[..2])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().count(), 2, "{table}");
    for l in table.lines() {
        assert!(l.contains("red") && l.contains("green") && l.contains("blue") && l.contains('%'));
    }
    let top = &want[0].as_ref().unwrap().top[0];
    assert!(table.lines().next().unwrap().contains(&top.class));
}

#[test]
fn a_missing_or_wrong_model_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("a.png");
    common::image(0).save(&img).unwrap();
    for model in [tmp.path().join("absent.bpk"), img.clone()] {
        let out = bin()
            .args(["predict", "--model"])
            .arg(&model)
            .arg(&img)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.contains(&*model.file_name().unwrap().to_string_lossy()),
            "{err}"
        );
    }
    let out = bin()
        .args(["predict", "--backend", "cuda", "--model"])
        .arg(tmp.path().join("absent.bpk"))
        .arg(&img)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cuda"));
}
