//! Manifests (`data.kind = "manifest"`, `rekindle-train eval --data list.csv`): CSV and JSON
//! lines with relative paths and a split column, several roots merged, and every bad input
//! named by its file, line and value.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use rekindle_train::config::{BadImage, DataKind, DataSection};
use rekindle_train::data::dataset::{Dataset, ImageRef};

use crate::common;
use common::{bin, random_model};

/// A tiny PNG at `dir/rel`, shaded by `shade`.
fn png(dir: &Path, rel: &str, shade: u8) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_pixel(8, 8, Rgb([shade, 40, 200 - shade]))
        .save(path)
        .unwrap();
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

fn manifest_cfg(root: &Path, roots: &[PathBuf]) -> DataSection {
    DataSection {
        kind: DataKind::Manifest,
        root: root.to_path_buf(),
        roots: roots.to_vec(),
        val_split: 0.25,
        on_bad_image: BadImage::Fail,
        ..DataSection::default()
    }
}

fn files(items: &[rekindle_train::data::dataset::Item]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = items
        .iter()
        .map(|it| match &it.image {
            ImageRef::File(p) => p.clone(),
            ImageRef::Memory(i) => panic!("in-memory image {i} from a manifest"),
        })
        .collect();
    v.sort();
    v
}

fn load_err(cfg: &DataSection) -> String {
    Dataset::load(cfg, 0).unwrap_err().to_string()
}

#[test]
fn csv_manifest_with_split_column_and_relative_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for (i, rel) in ["imgs/c1.png", "imgs/c2.png", "imgs/d1.png", "imgs/d2.png"]
        .iter()
        .enumerate()
    {
        png(d, rel, 10 * i as u8);
    }
    // An absolute path is kept as it is.
    let abs = d.join("elsewhere/d3.png");
    png(d, "elsewhere/d3.png", 90);
    let m = write(
        d,
        "lists/m.csv",
        &format!(
            "path,label,split\n../imgs/c1.png,cat,train\n../imgs/d1.png,dog,train\n\
             ../imgs/c2.png,cat,val\n../imgs/d2.png,dog,val\n{},dog,train\n",
            abs.display()
        ),
    );
    let ds = Dataset::load(&manifest_cfg(&m, &[]), 7).unwrap();
    assert_eq!(ds.class_names, ["cat", "dog"]);
    let base = d.join("lists/../imgs");
    // Sorted: `elsewhere/` before `lists/`.
    assert_eq!(
        files(&ds.train),
        [abs, base.join("c1.png"), base.join("d1.png")]
    );
    assert_eq!(files(&ds.val), [base.join("c2.png"), base.join("d2.png")]);
    assert_eq!(ds.class_counts(), [1, 2]);
}

#[test]
fn jsonl_manifest_without_split_uses_the_stratified_val_split() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut lines = String::new();
    for c in ["a", "b"] {
        for i in 0..4 {
            png(d, &format!("{c}{i}.png"), 20 * i);
            lines += &format!("{{\"path\": \"{c}{i}.png\", \"label\": \"{c}\"}}\n");
        }
    }
    let m = write(d, "m.jsonl", &lines);
    let ds = Dataset::load(&manifest_cfg(&m, &[]), 1).unwrap();
    assert_eq!(ds.class_names, ["a", "b"]);
    assert_eq!((ds.train.len(), ds.val.len()), (6, 2));
    // One of each class held out (0.25 of 4), the same ones for the same seed.
    assert_eq!(ds.val.iter().filter(|i| i.label == 0).count(), 1);
    let again = Dataset::load(&manifest_cfg(&m, &[]), 1).unwrap();
    assert_eq!(files(&ds.val), files(&again.val));
}

#[test]
fn two_manifests_merge_and_data_classes_fixes_the_order() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for rel in ["one/x.png", "one/y.png", "two/z.png", "two/w.png"] {
        png(d, rel, 50);
    }
    let a = write(
        d,
        "one/a.csv",
        "path,label,split\nx.png,owl,train\ny.png,owl,val\n",
    );
    let b = write(
        d,
        "two/b.jsonl",
        "{\"path\":\"z.png\",\"label\":\"bat\",\"split\":\"train\"}\n\
         {\"path\":\"w.png\",\"label\":\"bat\",\"split\":\"val\"}\n",
    );
    let ds = Dataset::load(&manifest_cfg(&a, std::slice::from_ref(&b)), 0).unwrap();
    assert_eq!(ds.class_names, ["bat", "owl"]);
    assert_eq!(files(&ds.train), [d.join("one/x.png"), d.join("two/z.png")]);
    let mut cfg = manifest_cfg(&a, &[b]);
    cfg.classes = vec!["owl".into(), "bat".into()];
    let ds = Dataset::load(&cfg, 0).unwrap();
    assert_eq!(ds.class_names, ["owl", "bat"]);
    let owl = ds.train.iter().find(|i| i.label == 0).unwrap();
    assert_eq!(owl.image, ImageRef::File(d.join("one/x.png")));
}

#[test]
fn two_class_folder_roots_merge_by_class_name() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for i in 0..4 {
        png(d, &format!("r1/cat/{i}.png"), 1);
        png(d, &format!("r2/dog/{i}.png"), 2);
        png(d, &format!("r2/cat/{i}.png"), 3);
    }
    let cfg = DataSection {
        kind: DataKind::Folder,
        root: d.join("r1"),
        roots: vec![d.join("r2")],
        val_split: 0.25,
        ..DataSection::default()
    };
    let ds = Dataset::load(&cfg, 0).unwrap();
    assert_eq!(ds.class_names, ["cat", "dog"]);
    assert_eq!((ds.train.len(), ds.val.len()), (9, 3));
    assert_eq!(ds.val.iter().filter(|i| i.label == 0).count(), 2);
}

#[test]
fn bad_manifests_are_named_with_file_line_and_value() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    png(d, "ok.png", 1);
    png(d, "ok2.png", 2);
    let cases = [
        (
            "cols.csv",
            "path,label,weight\nok.png,a,1\n",
            &["cols.csv", "`weight`", "path, label, split"][..],
        ),
        (
            "missing.csv",
            "path,label\nok.png,a\nnope.png,b\n",
            &["missing.csv", "line 3", "nope.png"],
        ),
        (
            "split.csv",
            "path,label,split\nok.png,a,train\nok2.png,b,test\n",
            &["split.csv", "line 3", "`test`"],
        ),
        (
            "keys.jsonl",
            "{\"path\":\"ok.png\",\"label\":\"a\",\"id\":4}\n",
            &["keys.jsonl", "`id`", "path, label, split"],
        ),
        (
            "mixed.csv",
            "path,label,split\nok.png,a,train\nok2.png,b,\n",
            &["mixed.csv", "line 3", "no split"],
        ),
        ("nolabel.csv", "path\nok.png\n", &["nolabel.csv", "`label`"]),
        ("list.txt", "", &["list.txt", ".csv or .jsonl"]),
    ];
    for (name, text, words) in cases {
        let m = write(d, name, text);
        let err = load_err(&manifest_cfg(&m, &[]));
        for w in words {
            assert!(err.contains(w), "{name}: `{w}` not in: {err}");
        }
    }
    // A label outside data.classes names the label, the manifest and the line.
    let m = write(d, "labels.csv", "path,label\nok.png,a\nok2.png,zebra\n");
    let mut cfg = manifest_cfg(&m, &[]);
    cfg.classes = vec!["a".into(), "b".into()];
    let err = load_err(&cfg);
    for w in ["`zebra`", "labels.csv", "line 3", "data.classes"] {
        assert!(err.contains(w), "`{w}` not in: {err}");
    }
    // A class named in data.classes that no row trains on.
    let m = write(d, "few.csv", "path,label\nok.png,a\nok2.png,a\n");
    let mut cfg = manifest_cfg(&m, &[]);
    cfg.classes = vec!["a".into(), "b".into()];
    let err = load_err(&cfg);
    assert!(err.contains("`b`") && err.contains("no training"), "{err}");
}

#[test]
fn a_missing_file_is_skipped_and_counted_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut text = String::from("path,label\n");
    for c in ["a", "b"] {
        for i in 0..3 {
            png(d, &format!("{c}{i}.png"), 30 * i);
            text += &format!("{c}{i}.png,{c}\n");
        }
    }
    text += "gone.png,a\n";
    let m = write(d, "m.csv", &text);
    let mut cfg = manifest_cfg(&m, &[]);
    let err = load_err(&cfg);
    assert!(
        err.contains("line 8") && err.contains("gone.png") && err.contains("on_bad_image"),
        "{err}"
    );
    cfg.on_bad_image = BadImage::Skip;
    let ds = Dataset::load(&cfg, 0).unwrap();
    assert_eq!(ds.skipped.len(), 1);
    assert_eq!(ds.skipped[0].0, d.join("gone.png"));
    assert!(ds.skipped[0].1.contains("line 8"), "{}", ds.skipped[0].1);
    assert_eq!(ds.train.len() + ds.val.len(), 6);
}

fn eval_cmd(model: &Path, data: &Path, out: &Path) -> std::process::Output {
    bin()
        .args(["eval", "--json", "--model"])
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .output()
        .expect("start rekindle-train")
}

#[test]
fn eval_reads_every_row_of_a_manifest_and_names_unknown_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = d.join("m.bpk");
    random_model(&model);
    let mut text = String::from("path,label,split\n");
    for (c, split) in [("red", "train"), ("green", "val"), ("blue", "val")] {
        for i in 0..2 {
            png(d, &format!("img/{c}{i}.png"), 40 * i);
            text += &format!("img/{c}{i}.png,{c},{split}\n");
        }
    }
    let m = write(d, "test.csv", &text);
    let out = eval_cmd(&model, &m, &d.join("report"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    // Every row, train rows included.
    assert_eq!(v["images"], 6);
    let support: Vec<u64> = v["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["support"].as_u64().unwrap())
        .collect();
    assert_eq!(support, [2, 2, 2]);

    let bad = write(
        d,
        "bad.jsonl",
        "{\"path\":\"img/red0.png\",\"label\":\"purple\"}\n",
    );
    let out = eval_cmd(&model, &bad, &d.join("report2"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    for w in ["`purple`", "bad.jsonl", "line 1", "blue, green, red"] {
        assert!(err.contains(w), "`{w}` not in: {err}");
    }
    let gone = write(
        d,
        "gone.csv",
        "path,label\nimg/red0.png,red\nimg/none.png,red\n",
    );
    let out = eval_cmd(&model, &gone, &d.join("report3"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("gone.csv") && err.contains("line 3") && err.contains("none.png"),
        "{err}"
    );
}
