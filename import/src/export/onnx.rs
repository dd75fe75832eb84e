//! A rekindle model as an ONNX graph: input `input`, float32 `[batch, 3, crop, crop]` with a
//! symbolic batch axis; output `logits` (and `probabilities`, a softmax, when asked); BatchNorm
//! folded into the convolutions unless asked to keep it; the model file's classes and
//! preprocessing in `metadata_props`; weights inline, or in a `.data` file beside the graph
//! when they would pass protobuf's 2 GB limit.
//!
//! The graph is written node by node from the module's own fields, not traced. burn-onnx 0.22's
//! exporter traces through a capture backend that our kernels (a backend extension) do not
//! dispatch to; it names the graph's input and output `tensor_<id>`, has no Softmax, no
//! metadata and no external data, and turning on the Burn features it needs rebuilds every
//! crate. The protobuf types are onnx-ir's, which the importer reads graphs with.

use std::io::Write;
use std::path::{Path, PathBuf};

use onnx_ir::{AttributeProto, AttributeType, GraphProto, Message, ModelProto, NodeProto};
use onnx_ir::{TensorProto, ValueInfoProto};
use rekindle_model::block::Block;
use rekindle_model::burn::nn::conv::Conv2d;
use rekindle_model::burn::nn::{BatchNorm, Identity, Linear, PaddingConfig2d};
use rekindle_model::burn::tensor::Tensor;
use rekindle_model::{ModelMetadata, Norm, ResNet, Stage};

use crate::error::{Error, format_error};

/// The operator set the graph is written for: ONNX Runtime, TensorRT and the other runtimes
/// in service today all read it.
pub const OPSET: i64 = 17;

/// IR version 8: the first with opset 17's operators, read by every runtime that reads opset 17.
const IR_VERSION: i64 = 8;

/// Weights above this many bytes go to external data: a protobuf message cannot pass 2 GiB,
/// and the graph itself needs some room.
pub const INLINE_LIMIT: usize = 2_000_000_000;

/// ONNX's float32 element type (`TensorProto.DataType.FLOAT`).
const FLOAT: i32 = 1;

/// External data offsets are aligned to this, so that a runtime may map the file.
const ALIGN: usize = 4096;

/// How to write the graph.
#[derive(Clone, Debug)]
pub struct OnnxOptions {
    /// Fold each BatchNorm into the convolution before it (the inference graph); `false` keeps
    /// `BatchNormalization` nodes with the running statistics.
    pub fold_batchnorm: bool,
    /// Add a `probabilities` output: the softmax of the logits.
    pub softmax: bool,
    /// Write the weights to `<file>.data` even below [`INLINE_LIMIT`].
    pub external_data: bool,
}

impl Default for OnnxOptions {
    fn default() -> Self {
        Self {
            fold_batchnorm: true,
            softmax: false,
            external_data: false,
        }
    }
}

/// What was written.
#[derive(Debug)]
pub struct OnnxExport {
    /// Nodes in the graph.
    pub nodes: usize,
    /// Weight tensors (initializers).
    pub initializers: usize,
    /// Bytes of weights.
    pub weight_bytes: usize,
    /// The external data file, when the weights went to one.
    pub external: Option<PathBuf>,
}

/// Writes `model` with `metadata` as an ONNX graph at `path` (through a temporary file and a
/// rename, so a failed export leaves no half file).
pub fn export_onnx(
    model: &ResNet,
    metadata: &ModelMetadata,
    path: &Path,
    options: &OnnxOptions,
) -> Result<OnnxExport, Error> {
    metadata.validate()?;
    if metadata.arch() != model.arch() || metadata.head() != &model.head.config() {
        return Err(format_error(
            path,
            format!(
                "the metadata describes a {} with head {:?}, the weights a {} with head {:?}",
                metadata.arch(),
                metadata.head(),
                model.arch(),
                model.head.config()
            ),
        ));
    }
    let mut g = Builder::new(path);
    let features = if options.fold_batchnorm {
        g.resnet(&model.fold_batchnorm(), "input")?
    } else {
        g.resnet(model, "input")?
    };
    g.head(model, &features, options.softmax)?;
    let classes = metadata.head().num_classes as i64;
    let crop = metadata.preprocess.crop as i64;
    g.graph.input.push(value_info(
        "input",
        &[
            Dim::Batch,
            Dim::Fixed(3),
            Dim::Fixed(crop),
            Dim::Fixed(crop),
        ],
    ));
    g.graph
        .output
        .push(value_info("logits", &[Dim::Batch, Dim::Fixed(classes)]));
    if options.softmax {
        g.graph.output.push(value_info(
            "probabilities",
            &[Dim::Batch, Dim::Fixed(classes)],
        ));
    }
    let weight_bytes: usize = g.weights.iter().map(|w| w.bytes.len()).sum();
    let external = (options.external_data || weight_bytes > INLINE_LIMIT)
        .then(|| external_path(path))
        .transpose()?;
    let summary = OnnxExport {
        nodes: g.graph.node.len(),
        initializers: g.weights.len(),
        weight_bytes,
        external: external.clone(),
    };
    let (mut graph, weights) = (g.graph, g.weights);
    graph.name = format!("rekindle_{}", metadata.arch());
    match &external {
        Some(data) => write_external(path, data, weights, &mut graph)?,
        None => graph
            .initializer
            .extend(weights.into_iter().map(Weight::inline)),
    }
    let bytes = model_proto(graph, metadata, options)
        .write_to_bytes()
        .map_err(|e| format_error(path, format!("cannot encode the graph: {e}")))?;
    write_atomically(path, &bytes)?;
    Ok(summary)
}

/// `model.onnx` -> `model.onnx.data`, the name `onnx.save_model` gives external data.
fn external_path(path: &Path) -> Result<PathBuf, Error> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{}: not a file name", path.display())))?;
    let mut name = name.to_os_string();
    name.push(".data");
    Ok(path.with_file_name(name))
}

/// The model around the graph: opset, producer, and the metadata users and our importer read.
fn model_proto(graph: GraphProto, metadata: &ModelMetadata, options: &OnnxOptions) -> ModelProto {
    let mut m = ModelProto::new();
    m.ir_version = IR_VERSION;
    // The generated OperatorSetIdProto and StringStringEntryProto types are private in
    // onnx-ir; default entries pushed and then filled reach them without naming them.
    m.opset_import.push(Default::default());
    if let Some(opset) = m.opset_import.last_mut() {
        opset.domain = String::new();
        opset.version = OPSET;
    }
    m.producer_name = "rekindle".into();
    m.producer_version = env!("CARGO_PKG_VERSION").into();
    m.doc_string = format!(
        "torchvision {} with {} classes, exported by rekindle; input: RGB scaled to [0, 1], \
         resized (shorter side {}) and centre-cropped to {}, minus mean, over std (metadata \
         `preprocess`)",
        metadata.arch(),
        metadata.head().num_classes,
        metadata.preprocess.resize,
        metadata.preprocess.crop
    );
    for (key, value) in metadata_props(metadata, options) {
        m.metadata_props.push(Default::default());
        if let Some(entry) = m.metadata_props.last_mut() {
            entry.key = key.into();
            entry.value = value;
        }
    }
    m.graph = Some(graph).into();
    m
}

/// The key our importer reads a rekindle model file's metadata back from.
pub const METADATA_KEY: &str = "rekindle.metadata";

/// `metadata_props`: flat keys for people and other tools, and the model file's metadata whole.
fn metadata_props(metadata: &ModelMetadata, options: &OnnxOptions) -> Vec<(&'static str, String)> {
    let p = &metadata.preprocess;
    let json = |v: serde_json::Value| v.to_string();
    vec![
        ("arch", metadata.arch().to_string()),
        ("num_classes", metadata.head().num_classes.to_string()),
        ("class_names", json(serde_json::json!(metadata.class_names))),
        (
            "preprocess",
            json(serde_json::json!({
                "color": "RGB",
                "scale": "pixels / 255",
                "resize": p.resize,
                "crop": p.crop,
                "mean": p.mean,
                "std": p.std,
                "layout": "NCHW",
            })),
        ),
        (
            "batchnorm",
            if options.fold_batchnorm {
                "folded"
            } else {
                "kept"
            }
            .into(),
        ),
        (
            METADATA_KEY,
            serde_json::to_string(metadata).unwrap_or_default(),
        ),
    ]
}

/// One weight tensor waiting to be placed inline or in the external file.
struct Weight {
    name: String,
    dims: Vec<i64>,
    bytes: Vec<u8>,
}

impl Weight {
    fn proto(&self) -> TensorProto {
        let mut t = TensorProto::new();
        t.name = self.name.clone();
        t.dims = self.dims.clone();
        t.data_type = FLOAT;
        t
    }

    fn inline(self) -> TensorProto {
        let mut t = self.proto();
        t.raw_data = self.bytes.into();
        t
    }
}

/// Writes every weight to `data` (aligned, in graph order) and points the initializers at it.
fn write_external(
    path: &Path,
    data: &Path,
    weights: Vec<Weight>,
    graph: &mut GraphProto,
) -> Result<(), Error> {
    let location = data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut file = Vec::new();
    for w in weights {
        file.resize(file.len().div_ceil(ALIGN) * ALIGN, 0);
        let mut t = w.proto();
        let (offset, length) = (file.len(), w.bytes.len());
        file.extend_from_slice(&w.bytes);
        for (key, value) in [
            ("location", location.clone()),
            ("offset", offset.to_string()),
            ("length", length.to_string()),
        ] {
            t.external_data.push(Default::default());
            if let Some(entry) = t.external_data.last_mut() {
                entry.key = key.into();
                entry.value = value;
            }
        }
        // DataLocation::EXTERNAL; the enum is private in onnx-ir.
        t.data_location = protobuf::EnumOrUnknown::from_i32(1);
        graph.initializer.push(t);
    }
    write_atomically(data, &file).map_err(|e| match e {
        Error::Io { source, .. } => format_error(
            path,
            format!(
                "cannot write its external data {}: {source}",
                data.display()
            ),
        ),
        other => other,
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// One axis of a graph input or output.
enum Dim {
    /// The symbolic batch axis.
    Batch,
    Fixed(i64),
}

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    let tensor = v.type_.mut_or_insert_default().mut_tensor_type();
    tensor.elem_type = FLOAT;
    let shape = tensor.shape.mut_or_insert_default();
    for d in dims {
        shape.dim.push(Default::default());
        if let Some(dim) = shape.dim.last_mut() {
            match d {
                Dim::Batch => dim.set_dim_param("batch".into()),
                Dim::Fixed(n) => dim.set_dim_value(*n),
            }
        }
    }
    v
}

fn ints(name: &str, values: &[usize]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = values.iter().map(|v| *v as i64).collect();
    a
}

fn int(name: &str, value: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = value;
    a
}

fn float(name: &str, value: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::FLOAT.into();
    a.f = value;
    a
}

/// The graph as it is written: nodes in order, and the weights they read.
struct Builder {
    path: PathBuf,
    graph: GraphProto,
    weights: Vec<Weight>,
}

impl Builder {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            graph: GraphProto::new(),
            weights: Vec::new(),
        }
    }

    /// Adds a weight named `name` (torchvision's key) and returns its name.
    fn weight<const D: usize>(&mut self, name: &str, t: Tensor<D>) -> Result<String, Error> {
        let dims = t.dims().iter().map(|d| *d as i64).collect();
        let values = t
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| format_error(&self.path, format!("`{name}`: not float32 ({e:?})")))?;
        self.weights.push(Weight {
            name: name.into(),
            dims,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        Ok(name.into())
    }

    /// Adds a node named `name` whose single output is `output`, and returns `output`.
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        output: &str,
        attributes: Vec<AttributeProto>,
    ) -> String {
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = name.into();
        n.input = inputs.iter().map(|i| i.to_string()).collect();
        n.output = vec![output.to_string()];
        n.attribute = attributes;
        self.graph.node.push(n);
        output.into()
    }

    fn relu(&mut self, name: &str, x: &str) -> String {
        self.node("Relu", name, &[x], name, vec![])
    }

    /// A convolution named after its module (`layer1.0.conv1`), reading `x`.
    fn conv(&mut self, name: &str, conv: &Conv2d, x: &str) -> Result<String, Error> {
        let [t, l, b, r] = match conv.padding {
            PaddingConfig2d::Explicit(t, l, b, r) => [t, l, b, r],
            PaddingConfig2d::Valid => [0; 4],
            PaddingConfig2d::Same => {
                return Err(format_error(
                    &self.path,
                    format!("`{name}`: `same` padding is not exported (a ResNet pads explicitly)"),
                ));
            }
        };
        let w = self.weight(&format!("{name}.weight"), conv.weight.val())?;
        let mut inputs = vec![x.to_string(), w];
        if let Some(bias) = &conv.bias {
            inputs.push(self.weight(&format!("{name}.bias"), bias.val())?);
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let attributes = vec![
            ints("kernel_shape", &conv.kernel_size),
            ints("strides", &conv.stride),
            ints("pads", &[t, l, b, r]),
            ints("dilations", &conv.dilation),
            int("group", conv.groups as i64),
        ];
        Ok(self.node("Conv", name, &inputs, name, attributes))
    }

    /// The ResNet up to the pooled, flattened embedding `[batch, features]`.
    fn resnet<N: Emit>(&mut self, m: &ResNet<N>, input: &str) -> Result<String, Error> {
        let x = self.conv("conv1", &m.conv1, input)?;
        let x = m.bn1.emit(self, "bn1", &x)?;
        let x = self.relu("relu", &x);
        let p = &m.maxpool;
        let [t, l, b, r] = match p.padding {
            PaddingConfig2d::Explicit(t, l, b, r) => [t, l, b, r],
            _ => [0; 4],
        };
        let mut x = self.node(
            "MaxPool",
            "maxpool",
            &[&x],
            "maxpool",
            vec![
                ints("kernel_shape", &p.kernel_size),
                ints("strides", &p.stride),
                ints("pads", &[t, l, b, r]),
                ints("dilations", &p.dilation),
                int("ceil_mode", i64::from(p.ceil_mode)),
            ],
        );
        for (stage, blocks) in Stage::LAYERS.into_iter().zip(m.stages()) {
            for (i, block) in blocks.iter().enumerate() {
                x = self.block(&format!("{stage}.{i}"), block, &x)?;
            }
        }
        let x = self.node("GlobalAveragePool", "avgpool", &[&x], "avgpool", vec![]);
        Ok(self.node("Flatten", "flatten", &[&x], "flatten", vec![int("axis", 1)]))
    }

    /// One residual block named `prefix` (`layer2.0`): its convolutions with their norms, the
    /// downsample, the Add and the ReLU, as torchvision names them.
    fn block<N: Emit>(&mut self, prefix: &str, block: &Block<N>, x: &str) -> Result<String, Error> {
        let (path, downsample): (Vec<(&Conv2d, &N)>, _) = match block {
            Block::Basic(b) => (
                vec![(&b.conv1, &b.bn1), (&b.conv2, &b.bn2)],
                b.downsample.as_ref(),
            ),
            Block::Bottleneck(b) => (
                vec![(&b.conv1, &b.bn1), (&b.conv2, &b.bn2), (&b.conv3, &b.bn3)],
                b.downsample.as_ref(),
            ),
        };
        let mut y = x.to_string();
        for (k, (conv, norm)) in path.iter().enumerate() {
            let k = k + 1;
            y = self.conv(&format!("{prefix}.conv{k}"), conv, &y)?;
            y = norm.emit(self, &format!("{prefix}.bn{k}"), &y)?;
            if k < path.len() {
                y = self.relu(&format!("{prefix}.relu{k}"), &y);
            }
        }
        let identity = match downsample {
            Some(d) => {
                let z = self.conv(&format!("{prefix}.downsample.0"), &d.conv, x)?;
                d.bn.emit(self, &format!("{prefix}.downsample.1"), &z)?
            }
            None => x.to_string(),
        };
        let add = format!("{prefix}.add");
        let sum = self.node("Add", &add, &[&y, &identity], &add, vec![]);
        Ok(self.relu(&format!("{prefix}.relu"), &sum))
    }

    /// A Linear layer as `Gemm` with torchvision's `[out, in]` weight (`transB = 1`).
    fn linear(
        &mut self,
        name: &str,
        linear: &Linear,
        x: &str,
        output: &str,
    ) -> Result<String, Error> {
        let w = self.weight(&format!("{name}.weight"), linear.weight.val().transpose())?;
        let mut inputs = vec![x.to_string(), w];
        if let Some(bias) = &linear.bias {
            inputs.push(self.weight(&format!("{name}.bias"), bias.val())?);
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.node("Gemm", name, &inputs, output, vec![int("transB", 1)]))
    }

    /// The head on the embedding: the hidden layer and its ReLU when there is one, then `fc`
    /// (dropout is the identity in inference); `logits`, then `probabilities` when asked.
    fn head(&mut self, m: &ResNet, features: &str, softmax: bool) -> Result<(), Error> {
        let mut x = features.to_string();
        if let Some(hidden) = &m.head.hidden {
            x = self.linear("hidden", hidden, &x, "hidden")?;
            x = self.relu("hidden.relu", &x);
        }
        let logits = self.linear("fc", &m.head.fc, &x, "logits")?;
        if softmax {
            self.node(
                "Softmax",
                "softmax",
                &[&logits],
                "probabilities",
                vec![int("axis", 1)],
            );
        }
        Ok(())
    }
}

/// What a normalisation layer becomes in the graph.
trait Emit: Norm {
    /// The node(s) after a convolution's output `x`; returns the new output.
    fn emit(&self, g: &mut Builder, name: &str, x: &str) -> Result<String, Error>;
}

impl Emit for BatchNorm {
    /// `BatchNormalization` in inference mode, with torchvision's names for its four inputs.
    fn emit(&self, g: &mut Builder, name: &str, x: &str) -> Result<String, Error> {
        let scale = g.weight(&format!("{name}.weight"), self.gamma.val())?;
        let shift = g.weight(&format!("{name}.bias"), self.beta.val())?;
        let mean = g.weight(&format!("{name}.running_mean"), self.running_mean.value())?;
        let var = g.weight(&format!("{name}.running_var"), self.running_var.value())?;
        Ok(g.node(
            "BatchNormalization",
            name,
            &[x, &scale, &shift, &mean, &var],
            name,
            // ONNX's momentum weighs the old statistics, PyTorch's the new: 1 - 0.1.
            vec![
                float("epsilon", self.epsilon as f32),
                float("momentum", (1.0 - self.momentum) as f32),
            ],
        ))
    }
}

impl Emit for Identity {
    /// Folded into the convolution: nothing.
    fn emit(&self, _: &mut Builder, _: &str, x: &str) -> Result<String, Error> {
        Ok(x.to_string())
    }
}
