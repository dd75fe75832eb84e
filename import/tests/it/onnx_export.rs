//! The ONNX export, checked by the real tools: `onnx.checker` (full check), ONNX Runtime on real
//! photos preprocessed the way the model file says (batch 7 and batch 1 from one file), PyTorch
//! with the same held-out weights, and our own importer reading the graph back.
//! The Python side is the committed `scripts/check_onnx.py`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rekindle_import::{ImportOptions, import};
use rekindle_infer::Classifier;
use rekindle_model::burn::module::Module;
use rekindle_model::burn::store::ModuleSnapshot;
use rekindle_model::burn::tensor::Device;
use rekindle_model::{Arch, HeadConfig, ModelMetadata, ResNet, ResNetConfig, save_model};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value;

use crate::formats::fixtures;

const EXE: &str = env!("CARGO_BIN_EXE_rekindle-import");

/// What a demanding user compares: every logit within 1e-4 of the largest, relative.
const TOLERANCE: f32 = 1e-4;

fn python() -> String {
    std::env::var("REKINDLE_PYTHON").expect("REKINDLE_PYTHON (set by cargo xtask test)")
}

/// Two real photos (scikit-learn ships them in the fixtures venv) and five crops of them, at
/// other sizes and aspect ratios: seven images for one batch.
fn photos() -> Vec<image::DynamicImage> {
    let out = Command::new(python())
        .args([
            "-c",
            "import os, sklearn.datasets as d; print(os.path.join(os.path.dirname(d.__file__), 'images'))",
        ])
        .output()
        .unwrap();
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let open = |name: &str| image::open(dir.join(name)).unwrap();
    let (china, flower) = (open("china.jpg"), open("flower.jpg"));
    vec![
        china.crop_imm(0, 0, 320, 427),
        flower.crop_imm(150, 100, 300, 300),
        china.clone(),
        flower.crop_imm(0, 0, 640, 200),
        china.crop_imm(400, 250, 100, 150),
        flower.clone(),
        china.crop_imm(200, 50, 420, 377),
    ]
}

/// The largest difference, relative to the largest magnitude of `want`.
fn relative(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    worst / scale
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn run_ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `rekindle-import export MODEL -o OUTPUT ARGS...`; returns its output.
fn export(model: &Path, output: &Path, args: &[&str]) -> String {
    run_ok(
        Command::new(EXE)
            .arg("export")
            .arg(model)
            .arg("-o")
            .arg(output)
            .args(args)
            .output()
            .unwrap(),
    )
}

/// `scripts/check_onnx.py`: the checker, ONNX Runtime (and PyTorch with `torch`) on `input`.
fn check(onnx: &Path, input: &Path, torch: Option<(Arch, &Path, usize)>) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/check_onnx.py");
    let mut cmd = Command::new(python());
    cmd.arg(script).arg(onnx).arg(input);
    if let Some((arch, weights, classes)) = torch {
        cmd.args(["--torch", arch.name()])
            .arg(weights)
            .arg(classes.to_string());
    }
    serde_json::from_str(&run_ok(cmd.output().unwrap())).unwrap()
}

/// The photos preprocessed by the model file's own transform, as a `[7, 3, crop, crop]` batch
/// written to `path` for the Python side; returns the pixels.
fn write_batch(classifier: &Classifier, path: &Path) -> Vec<f32> {
    let images = photos();
    let pixels: Vec<f32> = images
        .iter()
        .flat_map(|img| classifier.preprocess(img))
        .collect();
    let crop = classifier.metadata().preprocess.crop;
    let bytes: Vec<u8> = pixels.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, vec![images.len(), 3, crop, crop], &bytes).unwrap();
    safetensors::serialize_to_file([("input", view)], None, path).unwrap();
    pixels
}

fn logits(classifier: &Classifier, pixels: &[f32]) -> Vec<f32> {
    let n = pixels.len() / (3 * classifier.metadata().preprocess.crop.pow(2));
    classifier
        .logits(pixels.to_vec(), n)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Every tensor of `net` by name, as raw bytes.
fn named_bytes(net: &ResNet) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = net
        .collect(None, None, false)
        .into_iter()
        .map(|s| (s.name.clone(), s.to_bytes().unwrap().to_vec()))
        .collect();
    v.sort();
    v
}

/// A model file of `arch` with PyTorch's held-out weights and named classes.
fn model_file(arch: Arch, dir: &Path) -> (PathBuf, ModelMetadata, ResNet) {
    let imported = import(
        &fixtures().join(format!("{}.pth", arch.name())),
        &ImportOptions::default(),
        &Device::flex(),
    )
    .unwrap();
    let mut metadata = imported.metadata;
    metadata.class_names = (0..1000).map(|i| format!("label {i}")).collect();
    metadata.preprocess.resize = 240;
    let path = dir.join(format!("{}.bpk", arch.name()));
    save_model(&path, &imported.model, &metadata).unwrap();
    (path, metadata, imported.model)
}

/// The graph's interface and metadata as the checker and ONNX Runtime read them.
fn check_interface(seen: &Value, metadata: &ModelMetadata, folded: bool, softmax: bool) {
    let crop = metadata.preprocess.crop;
    assert_eq!(seen["opset"], serde_json::json!({"ai.onnx": 17}), "{seen}");
    assert_eq!(
        seen["inputs"],
        serde_json::json!({"input": ["batch", 3, crop, crop]})
    );
    let mut outputs = serde_json::json!({"logits": ["batch", 1000]});
    if softmax {
        outputs["probabilities"] = serde_json::json!(["batch", 1000]);
    }
    assert_eq!(seen["outputs"], outputs);
    let ops: Vec<&str> = seen["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(ops.contains(&"BatchNormalization"), !folded, "{ops:?}");
    assert_eq!(ops.contains(&"Softmax"), softmax, "{ops:?}");
    let props = &seen["metadata"];
    // What users read back through ONNX Runtime's model metadata.
    assert_eq!(props, &seen["session_metadata"]);
    let names: Vec<String> = serde_json::from_str(props["class_names"].as_str().unwrap()).unwrap();
    assert_eq!(names, metadata.class_names);
    let pre: Value = serde_json::from_str(props["preprocess"].as_str().unwrap()).unwrap();
    assert_eq!(pre["resize"], metadata.preprocess.resize);
    assert_eq!(pre["crop"], crop);
    assert_eq!(pre["mean"], serde_json::json!(metadata.preprocess.mean));
    assert_eq!(pre["std"], serde_json::json!(metadata.preprocess.std));
    assert_eq!(props["arch"], metadata.arch().name());
    assert_eq!(props["batchnorm"], if folded { "folded" } else { "kept" });
}

#[test]
fn onnx_runtime_and_pytorch_agree_with_rekindle_on_real_photos() {
    let dir = tempfile::tempdir().unwrap();
    for arch in [Arch::Resnet18, Arch::Resnet50] {
        let (model, metadata, net) = model_file(arch, dir.path());
        let classifier = Classifier::load(&model, &Device::flex()).unwrap();
        let input = dir.path().join("input.safetensors");
        let pixels = write_batch(&classifier, &input);
        let ours = logits(&classifier, &pixels);

        let folded = dir.path().join(format!("{}.onnx", arch.name()));
        let said = export(&model, &folded, &[]);
        assert!(
            said.contains("BatchNorm folded") && said.contains("opset 17"),
            "{said}"
        );
        let pth = fixtures().join(format!("{}.pth", arch.name()));
        let seen = check(&folded, &input, Some((arch, &pth, 1000)));
        check_interface(&seen, &metadata, true, false);
        let (ort, single, torch) = (
            floats(&seen["ort"]["logits"]),
            floats(&seen["ort_single"]),
            floats(&seen["torch"]),
        );
        let figures = [
            ("ONNX Runtime batch 7 vs rekindle", relative(&ort, &ours)),
            ("ONNX Runtime batch 1 vs rekindle", relative(&single, &ours)),
            ("ONNX Runtime batch 7 vs PyTorch", relative(&ort, &torch)),
            ("rekindle vs PyTorch", relative(&ours, &torch)),
        ];
        for (what, err) in figures {
            println!("{arch} folded, 7 photos: {what}: {err:.2e} relative");
            assert!(err <= TOLERANCE, "{arch}: {what}: {err:e}");
        }

        let kept = dir.path().join(format!("{}_bn.onnx", arch.name()));
        let said = export(&model, &kept, &["--no-fold", "--softmax"]);
        assert!(
            said.contains("BatchNorm kept") && said.contains("`probabilities`"),
            "{said}"
        );
        let seen = check(&kept, &input, None);
        check_interface(&seen, &metadata, false, true);
        let ort = floats(&seen["ort"]["logits"]);
        let err = relative(&ort, &ours);
        println!("{arch} with BatchNorm: ONNX Runtime batch 7 vs rekindle: {err:.2e} relative");
        assert!(err <= TOLERANCE, "{arch}: {err:e}");
        // The softmax of the logits, row by row, computed here in float64.
        let probabilities = floats(&seen["ort"]["probabilities"]);
        let mut worst = 0f64;
        for (row, p) in ort.chunks(1000).zip(probabilities.chunks(1000)) {
            let top = row.iter().fold(f32::MIN, |m, v| m.max(*v)) as f64;
            let sum: f64 = row.iter().map(|v| (*v as f64 - top).exp()).sum();
            for (l, p) in row.iter().zip(p) {
                worst = worst.max(((*l as f64 - top).exp() / sum - *p as f64).abs());
            }
        }
        println!("{arch}: probabilities vs the softmax of the logits: {worst:.1e}");
        assert!(
            worst < 1e-6,
            "{arch}: probabilities off the softmax by {worst:e}"
        );

        // Read back by our own importer: the BatchNorm graph gives the very weights, the folded
        // one the same logits; both bring the classes and preprocessing with them.
        let again = import(&kept, &ImportOptions::default(), &Device::flex()).unwrap();
        assert!(!again.report.folded_batchnorm);
        assert_eq!(again.metadata, metadata);
        assert!(
            named_bytes(&again.model) == named_bytes(&net),
            "{arch}: weights changed"
        );
        let again = import(&folded, &ImportOptions::default(), &Device::flex()).unwrap();
        assert!(again.report.folded_batchnorm);
        assert_eq!(again.metadata, metadata);
        let reread = Classifier::new(again.model, again.metadata, &Device::flex());
        let err = relative(&logits(&reread, &pixels), &ours);
        println!("{arch} folded graph imported back: logits vs rekindle {err:.2e} relative");
        assert!(err <= 1e-5, "{arch}: {err:e}");
    }
}

#[test]
fn external_data_hidden_heads_and_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (model, metadata, _) = model_file(Arch::Resnet18, dir.path());
    let classifier = Classifier::load(&model, &Device::flex()).unwrap();
    let input = dir.path().join("input.safetensors");
    let pixels = write_batch(&classifier, &input);
    let ours = logits(&classifier, &pixels);

    // Weights beside the graph, as above 2 GB: the checker follows them, ONNX Runtime runs
    // them, the importer reads them back.
    let graph = dir.path().join("ext.onnx");
    let said = export(&model, &graph, &["--external-data"]);
    let data = dir.path().join("ext.onnx.data");
    assert!(said.contains("ext.onnx.data"), "{said}");
    let (graph_size, data_size) = (
        std::fs::metadata(&graph).unwrap().len(),
        std::fs::metadata(&data).unwrap().len(),
    );
    assert!(
        graph_size < 100_000 && data_size > 46_000_000,
        "{graph_size} {data_size}"
    );
    let seen = check(&graph, &input, None);
    check_interface(&seen, &metadata, true, false);
    let err = relative(&floats(&seen["ort"]["logits"]), &ours);
    assert!(err <= TOLERANCE, "{err:e}");
    let again = import(&graph, &ImportOptions::default(), &Device::flex()).unwrap();
    assert_eq!(again.metadata, metadata);

    // A head with a hidden layer exports (ONNX Runtime agrees) but does not import back as a
    // torchvision `fc`: a clear error, not a wrong classifier.
    let config = ResNetConfig::new(Arch::Resnet18, HeadConfig::new(5).with_hidden(Some(16)));
    let net = config.init(&Device::flex()).no_grad();
    let hidden_meta = ModelMetadata::with_default_names(config);
    let hidden = dir.path().join("hidden.bpk");
    save_model(&hidden, &net, &hidden_meta).unwrap();
    let hidden_onnx = dir.path().join("hidden.onnx");
    export(&hidden, &hidden_onnx, &[]);
    let classifier = Classifier::load(&hidden, &Device::flex()).unwrap();
    let seen = check(&hidden_onnx, &input, None);
    let err = relative(
        &floats(&seen["ort"]["logits"]),
        &logits(&classifier, &pixels),
    );
    assert!(err <= TOLERANCE, "hidden head: {err:e}");
    let e = crate::formats::import_err(&hidden_onnx, ImportOptions::default());
    assert!(
        e.contains("hidden.onnx") && e.contains("hidden layer"),
        "{e}"
    );

    // Bad requests: a clear error naming what is wrong, exit 1, no file left behind.
    for (args, want) in [
        (
            vec!["-o", "m.txt"],
            "cannot tell the export format from the extension `.txt`",
        ),
        (
            vec!["-o", "m.safetensors", "--softmax"],
            "--softmax applies to ONNX exports",
        ),
        (vec!["-o", "m.onnx", "--format", "tflite"], "tflite"),
    ] {
        let out = Command::new(EXE)
            .arg("export")
            .arg(&model)
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(want) && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
    let missing = dir.path().join("nope.bpk");
    let out = Command::new(EXE)
        .arg("export")
        .arg(&missing)
        .arg("-o")
        .arg(dir.path().join("nope.onnx"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1) && stderr.contains("nope.bpk"),
        "{stderr}"
    );
    assert!(!dir.path().join("nope.onnx").exists() && !dir.path().join("m.onnx").exists());
}

/// Runs the README's Python snippet that starts with `first`, as written there, in `dir`;
/// returns what it printed.
fn run_readme_snippet(first: &str, dir: &Path) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme
        .find(&format!("```python\n{first}"))
        .unwrap_or_else(|| panic!("the README's snippet starting `{first}`"))
        + "```python\n".len();
    let snippet = &readme[start..start + readme[start..].find("```").unwrap()];
    run_ok(
        Command::new(python())
            .args(["-c", snippet])
            .current_dir(dir)
            .output()
            .unwrap(),
    )
}

/// The README's ONNX Runtime snippet, as written there, on an export and a real photo: it runs
/// and names one of the model's classes.
#[test]
fn the_readmes_onnx_runtime_snippet_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (model, metadata, _) = model_file(Arch::Resnet18, dir.path());
    export(&model, &dir.path().join("r50-pets.onnx"), &[]);
    photos()[2].save(dir.path().join("photo.jpg")).unwrap();
    let out = run_readme_snippet("import json, numpy as np, onnxruntime as ort", dir.path());
    assert!(
        metadata.class_names.contains(&out.trim().to_string()),
        "{out}"
    );
}

/// The README's PyTorch snippet on a ResNet-50 with a fresh 37-class head, exported as
/// safetensors by the CLI: torchvision loads it strictly and runs it.
#[test]
fn the_readmes_pytorch_snippet_runs() {
    let dir = tempfile::tempdir().unwrap();
    let imported = import(
        &fixtures().join("resnet50.pth"),
        &ImportOptions {
            num_classes: Some(37),
            allow_partial: true,
            ..Default::default()
        },
        &Device::flex(),
    )
    .unwrap();
    let model = dir.path().join("r50-pets.bpk");
    save_model(&model, &imported.model, &imported.metadata).unwrap();
    export(&model, &dir.path().join("r50-pets.safetensors"), &[]);
    let out = run_readme_snippet("import torch, torchvision", dir.path());
    assert_eq!(out.trim(), "torch.Size([1, 37])");
}
