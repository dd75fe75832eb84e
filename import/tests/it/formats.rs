//! Every supported source imports and gives PyTorch's logits; the export loads strictly into
//! torchvision and gives ours. Fixtures: `scripts/make_fixtures.py` (run by `cargo xtask test`).

use std::path::{Path, PathBuf};
use std::process::Command;

use rekindle_import::{Error, ImportOptions, export_safetensors, import};
use rekindle_model::burn::tensor::{Device, Tensor, TensorData};
use rekindle_model::{Arch, ResNet};
use serde::Deserialize;

#[derive(Deserialize)]
pub(crate) struct Reference {
    input_shape: [usize; 4],
    input: Vec<f32>,
    logits: std::collections::HashMap<String, Vec<f32>>,
}

pub(crate) fn fixtures() -> PathBuf {
    let dir = std::env::var_os("REKINDLE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures"));
    assert!(
        dir.join("resnet18_hf.safetensors").exists(),
        "no PyTorch fixtures in {}: run `cargo xtask test` (or `cargo xtask fixtures`) first",
        dir.display()
    );
    dir
}

pub(crate) fn reference() -> Reference {
    let text = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub(crate) fn logits(model: &ResNet, r: &Reference) -> Vec<f32> {
    let x = Tensor::<4>::from_data(
        TensorData::new(r.input.clone(), r.input_shape),
        &Device::flex(),
    );
    model.forward(x).into_data().try_into_vec::<f32>().unwrap()
}

pub(crate) fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const SOURCES: [&str; 9] = [
    ".safetensors",
    ".pth",
    "_legacy.pth",
    "_ddp_checkpoint.pth",
    "_model_key.pth",
    "_hf.safetensors",
    "_unfolded.onnx",
    "_legacy.onnx",
    "_external.onnx",
];

fn check_all_sources(arch: Arch) {
    let r = reference();
    for suffix in SOURCES {
        let path = fixtures().join(format!("{arch}{suffix}"));
        let imported = import(&path, &ImportOptions::default(), &Device::flex())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let report = &imported.report;
        assert_eq!(report.detected.arch, arch, "{suffix}");
        assert_eq!(report.detected.num_classes, 1000, "{suffix}");
        assert!(
            report.missing.is_empty() && report.skipped.is_empty(),
            "{suffix}: {report}"
        );
        // Only the TorchScript exporter folds BatchNorm (see make_fixtures.py), and it says so.
        assert_eq!(
            report.folded_batchnorm,
            suffix == "_legacy.onnx",
            "{suffix}"
        );
        let err = max_diff(&logits(&imported.model, &r), &r.logits[arch.name()]);
        println!(
            "{arch}{suffix}: {} applied, max abs diff vs PyTorch {err:.2e}",
            report.applied
        );
        assert!(
            err < 1e-4,
            "{arch}{suffix}: logits differ from PyTorch by {err:e}"
        );
    }
}

#[test]
fn resnet18_every_source_matches_pytorch() {
    check_all_sources(Arch::Resnet18);
}

#[test]
fn resnet50_every_source_matches_pytorch() {
    check_all_sources(Arch::Resnet50);
}

#[test]
fn half_precision_sources_load_into_float32() {
    let r = reference();
    for (file, dtype) in [
        ("resnet18_fp16.safetensors", "F16"),
        ("resnet18_bf16.pth", "BF16"),
    ] {
        let imported = import(
            &fixtures().join(file),
            &ImportOptions::default(),
            &Device::flex(),
        )
        .unwrap();
        let key = file.split('.').next().unwrap();
        let err = max_diff(&logits(&imported.model, &r), &r.logits[key]);
        println!("{file}: max abs diff vs PyTorch on the same rounded weights {err:.2e}");
        assert!(err < 1e-4, "{file}: {err:e}");
        assert_eq!(
            imported.report.cast.get(dtype),
            Some(&102),
            "{}",
            imported.report
        );
        assert!(
            imported
                .report
                .to_string()
                .contains(&format!("102 {dtype} tensors widened to F32"))
        );
    }
}

#[test]
fn checkpoint_extras_are_reported_not_loaded() {
    let path = fixtures().join("resnet18_ddp_checkpoint.pth");
    let report = import(&path, &ImportOptions::default(), &Device::flex())
        .unwrap()
        .report;
    assert_eq!(report.prefix, "state_dict.module.");
    assert!(
        report.outside.iter().any(|k| k.starts_with("optimizer.")),
        "{report}"
    );
    assert_eq!(
        report.unused.len(),
        20,
        "resnet18 has 20 BatchNorm counters: {report}"
    );
    let text = report.to_string();
    assert!(
        text.contains("20 BatchNorm `num_batches_tracked` counters"),
        "{text}"
    );
    assert!(
        text.contains("tensors outside the model's weights"),
        "{text}"
    );
}

/// Runs the committed Python check: strict load into torchvision, logits on the fixed input.
fn torchvision_logits(export: &Path, arch: Arch, classes: usize) -> Vec<f32> {
    let python =
        std::env::var("REKINDLE_PYTHON").expect("REKINDLE_PYTHON (set by cargo xtask test)");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/check_export.py");
    let out = Command::new(python)
        .arg(script)
        .arg(export)
        .args([arch.name(), &classes.to_string()])
        .arg(fixtures().join("reference.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    serde_json::from_value(v["logits"].clone()).unwrap()
}

#[test]
fn export_loads_strictly_into_torchvision_with_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let r = reference();
    // The imported weights, and a 7-class head started fresh on the same backbone.
    for (classes, options) in [
        (1000, ImportOptions::default()),
        (
            7,
            ImportOptions {
                num_classes: Some(7),
                allow_partial: true,
                ..Default::default()
            },
        ),
    ] {
        let imported = import(
            &fixtures().join("resnet18.safetensors"),
            &options,
            &Device::flex(),
        )
        .unwrap();
        let out = dir.path().join(format!("export{classes}.safetensors"));
        let n = export_safetensors(&imported.model, &out).unwrap();
        assert_eq!(n, 122, "torchvision's resnet18 state_dict has 122 entries");
        let ours = logits(&imported.model, &r);
        let theirs = torchvision_logits(&out, Arch::Resnet18, classes);
        let err = max_diff(&ours, &theirs);
        println!("export with {classes} classes: max abs diff rekindle vs torchvision {err:.2e}");
        assert!(err < 1e-4, "{err:e}");
    }
}

pub(crate) fn import_err(path: &Path, options: ImportOptions) -> String {
    match import(path, &options, &Device::flex()) {
        Ok(_) => panic!("{} should not import", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn another_depth_lists_the_mismatched_keys_and_shapes() {
    let path = fixtures().join("resnet18.pth");
    let err = import_err(
        &path,
        ImportOptions {
            arch: Some(Arch::Resnet34),
            ..Default::default()
        },
    );
    assert!(err.contains("resnet18.pth"), "{err}");
    assert!(
        err.contains("the file holds a resnet18, but resnet34 was asked for"),
        "{err}"
    );
    assert!(err.contains("missing from the file"), "{err}");
    let err = import_err(
        &path,
        ImportOptions {
            arch: Some(Arch::Resnet50),
            ..Default::default()
        },
    );
    assert!(
        err.contains(
            "`layer1.0.conv1.weight`: the model has shape [64, 64, 1, 1], the file [64, 64, 3, 3]"
        ),
        "{err}"
    );
}

#[test]
fn wrong_class_count_is_an_error_unless_partial() {
    let path = fixtures().join("resnet18.safetensors");
    let err = import_err(
        &path,
        ImportOptions {
            num_classes: Some(10),
            ..Default::default()
        },
    );
    assert!(
        err.contains("classifier has 1000 classes, but 10 were asked for"),
        "{err}"
    );
    assert!(err.contains("--allow-partial"), "{err}");
    let partial = ImportOptions {
        num_classes: Some(10),
        allow_partial: true,
        ..Default::default()
    };
    let imported = import(&path, &partial, &Device::flex()).unwrap();
    assert_eq!(imported.report.skipped, ["head.fc.weight", "head.fc.bias"]);
    assert_eq!(imported.metadata.head().num_classes, 10);
    assert!(
        imported
            .report
            .to_string()
            .contains("skipped:      2 tensors of another shape")
    );
}

#[test]
fn damaged_and_foreign_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    for source in [
        "resnet18.safetensors",
        "resnet18.pth",
        "resnet18_legacy.pth",
    ] {
        let bytes = std::fs::read(fixtures().join(source)).unwrap();
        for cut in [bytes.len() / 2, 200] {
            let p = write(&format!("cut{cut}_{source}"), &bytes[..cut]);
            let err = import_err(&p, ImportOptions::default());
            assert!(err.contains(&format!("cut{cut}_{source}")), "{err}");
        }
    }
    let err = import_err(&write("notes.txt", b"hello"), ImportOptions::default());
    assert!(
        err.contains("notes.txt") && err.contains("not a weights file"),
        "{err}"
    );
    let err = import_err(&write("empty.pth", b""), ImportOptions::default());
    assert!(err.contains("empty.pth: the file is empty"), "{err}");
    let err = import_err(&dir.path().join("nope.pth"), ImportOptions::default());
    assert!(err.contains("nope.pth"), "{err}");

    // A real safetensors file, but of something else.
    let data = 1.0f32.to_le_bytes();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &data).unwrap();
    let p = dir.path().join("bert.safetensors");
    safetensors::serialize_to_file(vec![("encoder.layer.0.attention.weight", view)], None, &p)
        .unwrap();
    let err = import_err(&p, ImportOptions::default());
    assert!(
        err.contains("not a torchvision-style ResNet")
            && err.contains("encoder.layer.0.attention.weight"),
        "{err}"
    );
    assert!(matches!(
        import(&p, &ImportOptions::default(), &Device::flex()),
        Err(Error::NotAResNet { .. })
    ));
}

#[test]
fn a_folded_onnx_graph_exports_to_torchvision_with_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let imported = import(
        &fixtures().join("resnet18_legacy.onnx"),
        &ImportOptions::default(),
        &Device::flex(),
    )
    .unwrap();
    assert!(
        imported
            .report
            .to_string()
            .contains("running statistics are gone")
    );
    let out = dir.path().join("folded.safetensors");
    export_safetensors(&imported.model, &out).unwrap();
    let r = reference();
    let err = max_diff(
        &torchvision_logits(&out, Arch::Resnet18, 1000),
        &r.logits["resnet18"],
    );
    assert!(err < 1e-4, "torchvision on the folded export: {err:e}");
}

#[test]
fn damaged_and_foreign_onnx_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixtures().join("resnet18_unfolded.onnx")).unwrap();
    let cut = dir.path().join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = import_err(&cut, ImportOptions::default());
    assert!(err.contains("cut.onnx"), "{err}");

    // External data that went missing, or was cut short.
    let onnx = dir.path().join("ext.onnx");
    std::fs::copy(fixtures().join("resnet18_external.onnx"), &onnx).unwrap();
    let err = import_err(&onnx, ImportOptions::default());
    assert!(err.contains("resnet18_external.onnx.data"), "{err}");
    let data = std::fs::read(fixtures().join("resnet18_external.onnx.data")).unwrap();
    std::fs::write(
        dir.path().join("resnet18_external.onnx.data"),
        &data[..1000],
    )
    .unwrap();
    let err = import_err(&onnx, ImportOptions::default());
    assert!(err.contains("truncated"), "{err}");

    // A valid ONNX graph that is not a ResNet: one Relu.
    use rekindle_import::onnx_proto::{Message, ModelProto, NodeProto};
    let mut m = ModelProto::new();
    let mut g = rekindle_import::onnx_proto::GraphProto::new();
    let mut n = NodeProto::new();
    n.op_type = "Relu".into();
    n.input = vec!["x".into()];
    n.output = vec!["y".into()];
    g.node.push(n);
    let mut input = rekindle_import::onnx_proto::ValueInfoProto::new();
    input.name = "x".into();
    g.input.push(input);
    m.graph = Some(g).into();
    let relu = dir.path().join("relu.onnx");
    std::fs::write(&relu, m.write_to_bytes().unwrap()).unwrap();
    let err = import_err(&relu, ImportOptions::default());
    assert!(
        err.contains("relu.onnx") && err.contains("not a torchvision ResNet"),
        "{err}"
    );
}

#[test]
fn the_cli_imports_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_rekindle-import");
    let model = dir.path().join("r18.bpk");
    let names = dir.path().join("names.txt");
    std::fs::write(
        &names,
        (0..1000)
            .map(|i| format!("label {i}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let out = Command::new(exe)
        .args(["import"])
        .arg(fixtures().join("resnet18_hf.safetensors"))
        .arg("-o")
        .arg(&model)
        .arg("--class-names")
        .arg(&names)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Hugging Face transformers names"),
        "{stdout}"
    );
    assert!(
        stdout.contains("architecture: resnet18 (detected resnet18 with 1000 classes)"),
        "{stdout}"
    );
    let meta = rekindle_model::read_metadata(&model).unwrap();
    assert_eq!(meta.class_names[999], "label 999");
    // The inference crate loads the importer's file and predicts what the imported network does.
    let classifier = rekindle_infer::Classifier::load(&model, &Device::flex()).unwrap();
    let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(300, 260, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8])
    }));
    let top = classifier
        .predict_images(std::slice::from_ref(&img), 5)
        .remove(0);
    let imported = import(
        &fixtures().join("resnet18_hf.safetensors"),
        &ImportOptions::default(),
        &Device::flex(),
    )
    .unwrap();
    let pixels = classifier.preprocess(&img);
    let x = Tensor::<4>::from_data(TensorData::new(pixels, [1, 3, 224, 224]), &Device::flex());
    let direct = imported
        .model
        .forward(x)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let mut order: Vec<usize> = (0..direct.len()).collect();
    order.sort_by(|&a, &b| direct[b].total_cmp(&direct[a]));
    let got: Vec<usize> = top.top.iter().map(|l| l.index).collect();
    assert_eq!(got, order[..5]);
    assert_eq!(top.best().class, format!("label {}", order[0]));

    let st = dir.path().join("r18.safetensors");
    // Any compiled-in backend converts; named by an alias in any case, as every CLI takes it.
    let out = Command::new(exe)
        .arg("export")
        .arg(&model)
        .arg("-o")
        .arg(&st)
        .args([
            "--backend",
            if rekindle_model::Backend::Tch.is_compiled() {
                "LibTorch"
            } else {
                "FLEX"
            },
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(st.exists());

    // Bad input through the CLI: a clear error, exit 1, no panic.
    let out = Command::new(exe)
        .args(["import", "/nonexistent/w.pth", "-o"])
        .arg(dir.path().join("x.bpk"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("/nonexistent/w.pth") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let out = Command::new(exe)
        .args(["import"])
        .arg(fixtures().join("resnet18.pth"))
        .args(["-o", "/tmp/x.bpk", "--arch", "resnet19"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown architecture `resnet19`"),
        "{stderr}"
    );
    let out = Command::new(exe)
        .args(["import"])
        .arg(fixtures().join("resnet18.pth"))
        .args(["-o", "/tmp/x.bpk", "--backend", "metal"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && stderr.contains("metal") && stderr.contains("ndarray"),
        "an unknown backend must be named with the valid ones: {stderr}"
    );

    let few = dir.path().join("three.txt");
    std::fs::write(&few, "cat\ndog\nbird\n").unwrap();
    let out = Command::new(exe)
        .arg("import")
        .arg(fixtures().join("resnet18.pth"))
        .arg("-o")
        .arg(dir.path().join("y.bpk"))
        .arg("--class-names")
        .arg(&few)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("three.txt: 3 class names given for a model with 1000 classes"),
        "{stderr}"
    );
}
