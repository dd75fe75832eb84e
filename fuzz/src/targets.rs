//! What is fuzzed: each target takes one input and runs it through the code rekindle runs on
//! files and requests from strangers, ending in `Ok` (accepted) or `Err` (a clear refusal).
//! Anything else (a panic, an abort, a hang, an allocation past the limit) is a crash.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rekindle_import::source::{Format, read_tensors, sniff};

use crate::request::Service;
use crate::seed_model::{device, model_file_bytes};

use crate::structure::Structure;

/// One fuzz target.
pub struct Target {
    /// Its name on the command line.
    pub name: &'static str,
    /// What it runs, for `--help` and the report.
    pub about: &'static str,
    /// The fields its mutations know.
    pub structure: Structure,
    /// Left out of `--all`: the harness's own checks (a target that must crash).
    pub canary: bool,
}

/// Every target, in the order a full run takes them.
pub const TARGETS: &[Target] = &[
    target(
        "pth",
        Structure::Zip,
        "PyTorch zip checkpoints (flat, nested under a key, views)",
    ),
    target(
        "pth-legacy",
        Structure::Bytes,
        "PyTorch legacy (pickle stream) checkpoints",
    ),
    target("safetensors", Structure::Safetensors, "safetensors files"),
    target(
        "onnx",
        Structure::Protobuf,
        "ONNX graphs, inline and with external data",
    ),
    target(
        "bpk",
        Structure::Burnpack,
        "rekindle model files (burnpack + metadata), loaded",
    ),
    target(
        "png",
        Structure::Png,
        "PNG decoding, as infer and train decode, then preprocessing",
    ),
    target(
        "jpeg",
        Structure::Jpeg,
        "JPEG decoding, as infer and train decode, then preprocessing",
    ),
    target(
        "config",
        Structure::Text,
        "train configs (TOML), parsed and validated",
    ),
    target(
        "request",
        Structure::Text,
        "raw HTTP requests to the service (headers, bodies, multipart)",
    ),
    canary(
        "canary-panic",
        "panics on every input: the harness must report it",
    ),
    canary(
        "canary-alloc",
        "asks for 2^40 bytes: the memory limit must stop it",
    ),
    canary("canary-hang", "never returns: the time limit must stop it"),
];

const fn target(name: &'static str, structure: Structure, about: &'static str) -> Target {
    Target {
        name,
        about,
        structure,
        canary: false,
    }
}

const fn canary(name: &'static str, about: &'static str) -> Target {
    Target {
        name,
        about,
        structure: Structure::Bytes,
        canary: true,
    }
}

/// The target called `name`, or an error listing them.
pub fn find(name: &str) -> Result<&'static Target, String> {
    TARGETS.iter().find(|t| t.name == name).ok_or_else(|| {
        let names: Vec<&str> = TARGETS
            .iter()
            .filter(|t| !t.canary)
            .map(|t| t.name)
            .collect();
        format!(
            "no fuzz target `{name}`; the targets are {}",
            names.join(", ")
        )
    })
}

/// Runs inputs of one target; holds what executions share (a scratch folder, a model, a service).
pub struct Runner {
    target: &'static Target,
    scratch: tempfile::TempDir,
    service: Option<Service>,
    extra: Vec<Vec<u8>>,
}

impl Runner {
    /// A runner for `target`, with its scratch folder (and for `request`, a running service).
    pub fn new(target: &'static Target) -> Result<Self, String> {
        Self::with_seeds(target, None)
    }

    /// A runner that also starts from the files in `dir` this target reads (by extension; an
    /// ONNX graph's external data beside it is copied along): `--seeds $REKINDLE_FIXTURES`
    /// starts from whole ResNets.
    pub fn with_seeds(target: &'static Target, dir: Option<&Path>) -> Result<Self, String> {
        let scratch = tempfile::tempdir().map_err(|e| format!("no scratch folder: {e}"))?;
        // ONNX seeds name their external data; it lies beside the graph, as it would.
        std::fs::write(
            scratch.path().join("external.onnx.data"),
            include_bytes!("../seeds/onnx/external.onnx.data"),
        )
        .map_err(|e| e.to_string())?;
        let service = match target.name {
            "request" => Some(Service::start(scratch.path())?),
            _ => None,
        };
        let extra = match dir {
            Some(dir) => extra_seeds(target, dir, scratch.path())?,
            None => Vec::new(),
        };
        Ok(Self {
            target,
            scratch,
            service,
            extra,
        })
    }

    /// The valid inputs mutations start from.
    pub fn seeds(&self) -> Vec<Vec<u8>> {
        let mut seeds = self.own_seeds();
        seeds.extend(self.extra.iter().cloned());
        seeds
    }

    fn own_seeds(&self) -> Vec<Vec<u8>> {
        match self.target.name {
            "pth" => vec![
                include_bytes!("../seeds/pth/zip.pth").to_vec(),
                include_bytes!("../seeds/pth/nested.pth").to_vec(),
                include_bytes!("../seeds/pth/views.pth").to_vec(),
            ],
            "pth-legacy" => vec![include_bytes!("../seeds/pth/legacy.pth").to_vec()],
            "safetensors" => vec![
                include_bytes!("../seeds/safetensors/torchvision.safetensors").to_vec(),
                include_bytes!("../seeds/safetensors/hf.safetensors").to_vec(),
            ],
            "onnx" => vec![
                include_bytes!("../seeds/onnx/conv_bn.onnx").to_vec(),
                include_bytes!("../seeds/onnx/external.onnx").to_vec(),
            ],
            "bpk" => vec![model_file_bytes(self.scratch.path())],
            "png" => crate::images::seeds(image::ImageFormat::Png),
            "jpeg" => crate::images::seeds(image::ImageFormat::Jpeg),
            "config" => crate::config::seeds(),
            "request" => self
                .service
                .as_ref()
                .map(Service::seeds)
                .unwrap_or_default(),
            _ => vec![b"canary".to_vec()],
        }
    }

    /// Runs one input: `Ok` when accepted, `Err` with the refusal a user would read.
    pub fn run(&self, input: &[u8]) -> Result<(), String> {
        let name = self.target.name;
        match name {
            "pth" | "pth-legacy" | "safetensors" => self.weights(input, "input.pth"),
            "onnx" => self.weights(input, "input.onnx"),
            "bpk" => {
                let path = self.write("input.bpk", input)?;
                let device = device();
                rekindle_model::load_model(&path, &device)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            "png" | "jpeg" => crate::images::run(input, &self.write("input.img", input)?),
            "config" => crate::config::run(input),
            "request" => match &self.service {
                Some(s) => s.send(input),
                None => Err("no service".into()),
            },
            "canary-panic" => panic!("the canary panics, as it must"),
            "canary-alloc" => {
                let v = std::hint::black_box(vec![0u8; 1 << 40]);
                Err(format!(
                    "allocated {} bytes: the limit did not hold",
                    v.len()
                ))
            }
            _ => loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            },
        }
    }

    fn write(&self, name: &str, input: &[u8]) -> Result<PathBuf, String> {
        let path = self.scratch.path().join(name);
        std::fs::write(&path, input)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }

    /// What `import` does up to building the model: sniff, read every tensor's bytes, map the
    /// names to torchvision's and tell the architecture from the shapes.
    fn weights(&self, input: &[u8], name: &str) -> Result<(), String> {
        let path = self.write(name, input)?;
        let tensors = match sniff(&path).map_err(|e| e.to_string())? {
            Format::Onnx => rekindle_import::onnx::read_onnx(&path).map(|w| w.tensors),
            Format::Burnpack => return Err("a model file: the bpk target reads those".into()),
            format => read_tensors(&path, format),
        }
        .map_err(|e| e.to_string())?;
        for t in &tensors {
            t.to_bytes()
                .map_err(|e| format!("tensor `{}`: {e}", t.name))?;
        }
        let norm = rekindle_import::naming::normalise(tensors.iter().map(|t| t.name.as_str()))
            .ok_or("not a ResNet")?;
        let renames: HashMap<&str, &str> = norm
            .renames
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let shapes: BTreeMap<String, Vec<usize>> = tensors
            .iter()
            .filter_map(|t| Some((renames.get(t.name.as_str())?.to_string(), t.shape.to_vec())))
            .collect();
        rekindle_import::detect::detect(&shapes).map(|_| ())
    }
}

/// The files in `dir` that `target` reads, by extension, up to 64 MiB each; external data
/// (`*.data`) is copied into `scratch`, where the graphs will look for it.
fn extra_seeds(target: &Target, dir: &Path, scratch: &Path) -> Result<Vec<Vec<u8>>, String> {
    let extensions: &[&str] = match target.name {
        "pth" | "pth-legacy" => &["pth", "pt"],
        "safetensors" => &["safetensors"],
        "onnx" => &["onnx"],
        "bpk" => &["bpk"],
        "png" => &["png"],
        "jpeg" => &["jpg", "jpeg"],
        "config" => &["toml"],
        _ => &[],
    };
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut seeds = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let small = std::fs::metadata(&path).is_ok_and(|m| m.len() <= 64 << 20);
        if target.name == "onnx" && ext == "data" {
            if let Some(name) = path.file_name() {
                std::fs::copy(&path, scratch.join(name)).map_err(|e| e.to_string())?;
            }
        } else if extensions.contains(&ext) && small {
            seeds.push(std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?);
        }
    }
    Ok(seeds)
}
