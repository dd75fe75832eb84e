//! ONNX graphs exported from torchvision ResNets, read by graph structure: the convolutions,
//! BatchNorms and classifier are found by following the data flow from the input (stem, then
//! one residual block at a time, then pooling and the classifier), never by initializer name,
//! because PyTorch's exporters rename weights (`onnx::Conv_497`) or keep a name over values
//! they have changed (BatchNorm folded into the convolution). The result is the torchvision
//! state_dict the rest of the importer already handles. The protobuf is parsed with the Burn
//! ecosystem's `onnx-ir`; walking a ResNet's graph is ours, as no library maps one to a module.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use onnx_ir::{Message, ModelProto, NodeProto, TensorProto};
use rekindle_model::burn::store::bridge::from_data;
use rekindle_model::burn::store::burn_pack::Tensor as PackTensor;
use rekindle_model::burn::tensor::TensorData;
use rekindle_model::{Arch, BlockKind, ModelMetadata, Stage};

use crate::error::Error;
use crate::export::onnx::METADATA_KEY;
use crate::limits::MAX_TENSOR_BYTES;

/// PyTorch's BatchNorm epsilon, for the identity BatchNorm that carries a folded bias.
const BN_EPS: f32 = 1e-5;

/// What an ONNX graph held: torchvision-named tensors, and whether BatchNorm was folded.
pub struct OnnxWeights {
    /// `conv1.weight`, `bn1.running_mean`, `layer1.0.conv1.weight`, ..., `fc.bias`.
    pub tensors: Vec<PackTensor>,
    /// The exporter folded BatchNorm into (some of) the convolutions: those statistics are gone.
    pub folded: bool,
    /// The model file's metadata, when rekindle wrote the graph (`metadata_props`).
    pub metadata: Option<ModelMetadata>,
}

struct Arr {
    dims: Vec<usize>,
    data: Vec<f32>,
}

/// A parsed graph with the indices needed to walk it.
struct Graph {
    path: PathBuf,
    nodes: Vec<NodeProto>,
    inits: HashMap<String, TensorProto>,
    producer: HashMap<String, usize>,
    consumers: HashMap<String, Vec<usize>>,
    external: HashMap<String, Vec<u8>>,
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::NotAResNet {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads the ResNet in the ONNX file at `path` (external data is read from beside it).
pub fn read_onnx(path: &Path) -> Result<OnnxWeights, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let model = ModelProto::parse_from_bytes(&bytes).map_err(|e| Error::Format {
        path: path.to_path_buf(),
        message: format!("not a readable ONNX model (truncated or not ONNX): {e}"),
    })?;
    let metadata = read_metadata(path, &model)?;
    let graph = model.graph.into_option().ok_or_else(|| Error::Format {
        path: path.to_path_buf(),
        message: "an ONNX model without a graph".into(),
    })?;
    let nodes = graph.node;
    check_arity(path, &nodes)?;
    let mut producer = HashMap::new();
    let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in &n.output {
            producer.insert(o.clone(), i);
        }
        for x in &n.input {
            consumers.entry(x.clone()).or_default().push(i);
        }
    }
    let inits: HashMap<String, TensorProto> = graph
        .initializer
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    let input = graph
        .input
        .iter()
        .map(|v| v.name.clone())
        .find(|n| !inits.contains_key(n))
        .ok_or_else(|| bad(path, "the graph has no image input"))?;
    let mut g = Graph {
        path: path.to_path_buf(),
        nodes,
        inits,
        producer,
        consumers,
        external: HashMap::new(),
    };
    let mut weights = g.walk(&input)?;
    weights.metadata = metadata;
    Ok(weights)
}

/// The metadata rekindle's export leaves under [`METADATA_KEY`], checked like a model file's.
fn read_metadata(path: &Path, model: &ModelProto) -> Result<Option<ModelMetadata>, Error> {
    let Some(entry) = model.metadata_props.iter().find(|e| e.key == METADATA_KEY) else {
        return Ok(None);
    };
    let metadata: ModelMetadata =
        serde_json::from_str(&entry.value).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            message: format!("metadata_props `{METADATA_KEY}`: {e}"),
        })?;
    metadata.validate().map_err(|e| Error::Format {
        path: path.to_path_buf(),
        message: format!("metadata_props `{METADATA_KEY}`: {e}"),
    })?;
    Ok(Some(metadata))
}

/// Refuses a node with fewer inputs or outputs than its operator takes, so the walk can name
/// them by position.
fn check_arity(path: &Path, nodes: &[NodeProto]) -> Result<(), Error> {
    for (i, n) in nodes.iter().enumerate() {
        let inputs = match n.op_type.as_str() {
            "BatchNormalization" => 5,
            "Conv" | "Gemm" | "MatMul" | "Add" => 2,
            "Constant" => 0,
            _ => 1,
        };
        if n.input.len() < inputs || n.output.is_empty() {
            return Err(bad(
                path,
                format!(
                    "node {i} (`{}`, {}) has {} inputs and {} outputs; it needs at least {inputs} \
                     and 1",
                    n.name,
                    n.op_type,
                    n.input.len(),
                    n.output.len()
                ),
            ));
        }
    }
    Ok(())
}

/// The attribute `name` of `node` as a float or an int.
fn attr_f(node: &NodeProto, name: &str) -> Option<f32> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}

fn attr_i(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

impl Graph {
    fn err(&self, message: impl Into<String>) -> Error {
        bad(&self.path, message)
    }

    /// The single node reading `tensor`, skipping nothing.
    fn only_consumer(&self, tensor: &str) -> Option<&NodeProto> {
        match self.consumers.get(tensor).map(|v| v.as_slice()) {
            Some([i]) => Some(&self.nodes[*i]),
            _ => None,
        }
    }

    fn consumers_of(&self, tensor: &str) -> Vec<&NodeProto> {
        self.consumers
            .get(tensor)
            .map(|v| v.iter().map(|&i| &self.nodes[i]).collect())
            .unwrap_or_default()
    }

    /// The constant behind a node input: an initializer, a `Constant` node, or either through
    /// `Identity` or a 2-D `Transpose`.
    fn constant(&mut self, name: &str) -> Result<Arr, Error> {
        self.constant_within(name, 16)
    }

    /// [`Self::constant`] through at most `depth` more `Identity`/`Transpose` nodes: a graph
    /// whose nodes feed each other in a cycle must end in an error, not a stack overflow.
    fn constant_within(&mut self, name: &str, depth: usize) -> Result<Arr, Error> {
        if depth == 0 {
            return Err(self.err(format!(
                "`{name}`: too many Identity/Transpose nodes in front of a weight (a cycle?)"
            )));
        }
        if let Some(t) = self.inits.get(name).cloned() {
            return self.tensor(&t, name);
        }
        let node = self
            .producer
            .get(name)
            .map(|&i| self.nodes[i].clone())
            .ok_or_else(|| {
                self.err(format!("`{name}` is neither an initializer nor a constant"))
            })?;
        match node.op_type.as_str() {
            "Constant" => {
                let t = node
                    .attribute
                    .iter()
                    .find(|a| a.name == "value")
                    .and_then(|a| a.t.clone().into_option())
                    .ok_or_else(|| self.err(format!("constant `{name}` has no tensor value")))?;
                self.tensor(&t, name)
            }
            "Identity" => self.constant_within(&node.input[0], depth - 1),
            "Transpose" => {
                let a = self.constant_within(&node.input[0], depth - 1)?;
                if a.dims.len() != 2 {
                    return Err(self.err(format!(
                        "`{name}`: transpose of a {}-D weight",
                        a.dims.len()
                    )));
                }
                Ok(transpose(&a))
            }
            op => Err(self.err(format!("`{name}` comes from a {op} node, not a weight"))),
        }
    }

    /// The file an initializer's external data names, which must lie in the graph's folder
    /// (as ONNX's own checker requires): a graph from a stranger must not read
    /// `/etc/shadow` or `../../secrets` through its weights.
    fn external_file(&self, location: &str, name: &str) -> Result<PathBuf, Error> {
        let relative = Path::new(location);
        let inside = !location.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            return Err(self.err(format!(
                "`{name}`: external data at `{location}`, outside the graph's folder (only \
                 relative paths below it are read)"
            )));
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let file = dir.join(relative);
        // A symbolic link below the folder may still point out of it.
        if let (Ok(real), Ok(real_dir)) = (file.canonicalize(), dir.canonicalize())
            && !real.starts_with(&real_dir)
        {
            return Err(self.err(format!(
                "`{name}`: external data `{location}` links to {}, outside the graph's folder",
                real.display()
            )));
        }
        Ok(file)
    }

    /// A constant that must be 2-D (the classifier's weight).
    fn matrix(&mut self, name: &str) -> Result<Arr, Error> {
        let a = self.constant(name)?;
        if a.dims.len() != 2 {
            return Err(self.err(format!(
                "the classifier's weight `{name}` is {}-D, not 2-D",
                a.dims.len()
            )));
        }
        Ok(a)
    }

    /// Float32 values of an initializer, from the file or its external data.
    fn tensor(&mut self, t: &TensorProto, name: &str) -> Result<Arr, Error> {
        let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
        // Declared sizes are checked before anything is read or allocated for them.
        let bytes = dims
            .iter()
            .try_fold(4usize, |acc, &d| acc.checked_mul(d))
            .filter(|&b| b <= MAX_TENSOR_BYTES)
            .ok_or_else(|| {
                self.err(format!(
                    "`{name}` declares shape {dims:?}, more than the {} GiB a weight may hold",
                    MAX_TENSOR_BYTES >> 30
                ))
            })?;
        let n = bytes / 4;
        let raw: Vec<u8> = if !t.external_data.is_empty() {
            let entry = |k: &str| {
                t.external_data
                    .iter()
                    .find(|e| e.key == k)
                    .map(|e| e.value.clone())
            };
            let location = entry("location")
                .ok_or_else(|| self.err(format!("`{name}`: external data without a location")))?;
            let offset: usize = entry("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
            let file = self.external_file(&location, name)?;
            if !self.external.contains_key(&location) {
                let bytes = std::fs::read(&file).map_err(|e| Error::Io {
                    path: file.clone(),
                    source: e,
                })?;
                self.external.insert(location.clone(), bytes);
            }
            let data = &self.external[&location];
            let length: usize = entry("length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(n * 4);
            offset
                .checked_add(length)
                .and_then(|end| data.get(offset..end))
                .ok_or_else(|| {
                    self.err(format!(
                        "`{name}`: {} holds {} bytes, the tensor needs {}..{} (truncated?)",
                        file.display(),
                        data.len(),
                        offset,
                        offset.saturating_add(length)
                    ))
                })?
                .to_vec()
        } else if !t.raw_data.is_empty() {
            t.raw_data.to_vec()
        } else {
            t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect()
        };
        if raw.len() != n * 4 {
            return Err(self.err(format!(
                "`{name}` has {} bytes for shape {dims:?} ({} expected)",
                raw.len(),
                n * 4
            )));
        }
        let data = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Arr { dims, data })
    }

    /// A `Conv` reading `input`, then its BatchNorm if one follows: tensors under `conv`/`bn`
    /// names, and the tensor after them.
    fn conv_bn(
        &mut self,
        conv: &NodeProto,
        conv_name: &str,
        bn_name: &str,
        out: &mut Vec<PackTensor>,
        folded: &mut bool,
    ) -> Result<String, Error> {
        let w = self.constant(&conv.input[1])?;
        if w.dims.len() != 4 {
            return Err(self.err(format!(
                "{conv_name}: a {}-D convolution weight",
                w.dims.len()
            )));
        }
        let channels = w.dims[0];
        let bias = match conv.input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => Some(self.constant(b)?),
            None => None,
        };
        push(out, &format!("{conv_name}.weight"), w);
        let after = conv.output[0].clone();
        let bn = self
            .only_consumer(&after)
            .filter(|n| n.op_type == "BatchNormalization")
            .cloned();
        // Decided per convolution: optimisers fold some BatchNorms and leave others.
        *folded |= bn.is_none();
        match bn {
            Some(bn) => {
                for (i, key) in [
                    (1, "weight"),
                    (2, "bias"),
                    (3, "running_mean"),
                    (4, "running_var"),
                ] {
                    let mut a = self.constant(&bn.input[i])?;
                    // The dynamo exporter gives every convolution a bias input (zeros for
                    // torchvision's); BN(x + b) is BN(x) with its mean shifted by b, exactly.
                    if let (3, Some(b)) = (i, &bias) {
                        for (m, b) in a.data.iter_mut().zip(&b.data) {
                            *m -= b;
                        }
                    }
                    push(out, &format!("{bn_name}.{key}"), a);
                }
                let eps = attr_f(&bn, "epsilon").unwrap_or(BN_EPS);
                if (eps - BN_EPS).abs() > 1e-9 {
                    return Err(self.err(format!(
                        "{bn_name}: BatchNorm epsilon {eps}, torchvision's ResNet uses 1e-5"
                    )));
                }
                Ok(bn.output[0].clone())
            }
            None => {
                // Folded: the convolution already scales; a BatchNorm that computes x + bias
                // carries the bias (mean 0, var 1 - eps so that sqrt(var + eps) = 1).
                let bias = bias.unwrap_or(Arr {
                    dims: vec![channels],
                    data: vec![0.0; channels],
                });
                let fill = |v: f32| Arr {
                    dims: vec![channels],
                    data: vec![v; channels],
                };
                push(out, &format!("{bn_name}.weight"), fill(1.0));
                push(out, &format!("{bn_name}.bias"), bias);
                push(out, &format!("{bn_name}.running_mean"), fill(0.0));
                push(out, &format!("{bn_name}.running_var"), fill(1.0 - BN_EPS));
                Ok(after)
            }
        }
    }

    /// `tensor`, or the output of the BatchNorm that alone reads it: where a conv's path goes
    /// next, found without reading any weight.
    fn after_bn(&self, tensor: &str) -> String {
        match self.only_consumer(tensor) {
            Some(n) if n.op_type == "BatchNormalization" => n.output[0].clone(),
            _ => tensor.to_string(),
        }
    }

    /// The node of kind `op` that reads `tensor`, or an error naming what was found instead.
    fn next(&self, tensor: &str, op: &str, what: &str) -> Result<NodeProto, Error> {
        match self.only_consumer(tensor) {
            Some(n) if n.op_type == op => Ok(n.clone()),
            Some(n) => Err(self.err(format!("{what}: expected {op}, found {}", n.op_type))),
            None => Err(self.err(format!(
                "{what}: expected one {op} node, found {} readers",
                self.consumers.get(tensor).map_or(0, |v| v.len())
            ))),
        }
    }

    fn walk(&mut self, input: &str) -> Result<OnnxWeights, Error> {
        let mut out = Vec::new();
        let mut folded = false;
        let stem = self.next(input, "Conv", "the stem").map_err(|_| {
            self.err(
                "the image input does not go into a convolution: not a torchvision ResNet graph",
            )
        })?;
        let x = self.conv_bn(&stem, "conv1", "bn1", &mut out, &mut folded)?;
        let relu = self.next(&x, "Relu", "the stem")?;
        let pool = self.next(&relu.output[0], "MaxPool", "the stem")?;
        let mut x = pool.output[0].clone();

        // Residual blocks, in order.
        let mut blocks: Vec<BlockKind> = Vec::new();
        let mut block_tensors: Vec<Vec<PackTensor>> = Vec::new();
        loop {
            let convs: Vec<NodeProto> = self
                .consumers_of(&x)
                .into_iter()
                .filter(|n| n.op_type == "Conv")
                .cloned()
                .collect();
            if convs.is_empty() {
                break;
            }
            let mut t = Vec::new();
            // The downsample is the convolution whose output (after its BatchNorm) is added.
            let mut main = None;
            let mut down = None;
            for c in &convs {
                let y = self.after_bn(&c.output[0]);
                let to_add = self.only_consumer(&y).is_some_and(|n| n.op_type == "Add");
                if to_add && convs.len() == 2 {
                    down = Some(c.clone());
                } else {
                    main = Some(c.clone());
                }
            }
            let main =
                main.ok_or_else(|| self.err(format!("block {}: no main path", blocks.len())))?;
            let mut y = self.conv_bn(&main, "B.conv1", "B.bn1", &mut t, &mut folded)?;
            let mut k = 1;
            let add = loop {
                let n = self.only_consumer(&y).cloned().ok_or_else(|| {
                    self.err(format!("block {}: the path branches", blocks.len()))
                })?;
                match n.op_type.as_str() {
                    "Relu" => {
                        k += 1;
                        let c =
                            self.next(&n.output[0], "Conv", &format!("block {}", blocks.len()))?;
                        y = self.conv_bn(
                            &c,
                            &format!("B.conv{k}"),
                            &format!("B.bn{k}"),
                            &mut t,
                            &mut folded,
                        )?;
                    }
                    "Add" => break n,
                    op => return Err(self.err(format!("block {}: unexpected {op}", blocks.len()))),
                }
            };
            let identity = match &down {
                Some(d) => {
                    self.conv_bn(d, "B.downsample.0", "B.downsample.1", &mut t, &mut folded)?
                }
                None => x.clone(),
            };
            if !add.input.contains(&identity) || !add.input.contains(&y) {
                return Err(self.err(format!(
                    "block {}: the residual Add does not join the block's paths",
                    blocks.len()
                )));
            }
            let kind = BlockKind::ALL
                .into_iter()
                .find(|b| b.convs() == k)
                .ok_or_else(|| {
                    self.err(format!(
                        "block {}: {k} convolutions (a ResNet block has 2 or 3)",
                        blocks.len()
                    ))
                })?;
            blocks.push(kind);
            block_tensors.push(t);
            x = self
                .next(
                    &add.output[0],
                    "Relu",
                    &format!("block {}", blocks.len() - 1),
                )?
                .output[0]
                .clone();
        }

        // Stages from the block count and kind, as torchvision builds them.
        let kind = blocks.first().copied().unwrap_or(BlockKind::Basic);
        let arch = Arch::ALL
            .into_iter()
            .find(|a| a.block() == kind && a.layers().iter().sum::<usize>() == blocks.len())
            .ok_or_else(|| {
                self.err(format!(
                    "{} residual blocks of {} convolutions: no torchvision ResNet depth has that",
                    blocks.len(),
                    kind.convs()
                ))
            })?;
        let names = Stage::LAYERS
            .into_iter()
            .flat_map(|stage| (0..arch.blocks(stage)).map(move |i| format!("{stage}.{i}")));
        for (name, tensors) in names.zip(block_tensors) {
            for mut t in tensors {
                t.name = t.name.replacen("B.", &format!("{name}."), 1);
                out.push(t);
            }
        }

        // Pooling, flattening, then the classifier (Gemm, or MatMul + Add).
        let mut y = x;
        let fc = loop {
            let n = self
                .only_consumer(&y)
                .cloned()
                .ok_or_else(|| self.err("no classifier after the last block"))?;
            match n.op_type.as_str() {
                "GlobalAveragePool" | "ReduceMean" | "Flatten" | "Reshape" | "Squeeze" => {
                    y = n.output[0].clone()
                }
                "Gemm" | "MatMul" => break n,
                op => return Err(self.err(format!("after the last block: unexpected {op}"))),
            }
        };
        let (weight, bias) = if fc.op_type == "Gemm" {
            let b = self.matrix(&fc.input[1])?;
            let w = if attr_i(&fc, "transB").unwrap_or(0) == 1 {
                b
            } else {
                transpose(&b)
            };
            let bias = match fc.input.get(2).filter(|b| !b.is_empty()) {
                Some(c) => self.constant(c)?,
                None => Arr {
                    dims: vec![w.dims[0]],
                    data: vec![0.0; w.dims[0]],
                },
            };
            (w, bias)
        } else {
            let w = transpose(&self.matrix(&fc.input[1])?);
            let add = self.next(&fc.output[0], "Add", "the classifier")?;
            let c = add
                .input
                .iter()
                .find(|i| **i != fc.output[0])
                .cloned()
                .unwrap_or_default();
            (w, self.constant(&c)?)
        };
        push(&mut out, "fc.weight", weight);
        push(&mut out, "fc.bias", bias);
        // A head with a hidden layer is Gemm -> Relu -> Gemm: torchvision's ResNet has one
        // `fc`, and taking the hidden layer for it would import the wrong classifier.
        if let Some(after) = self
            .only_consumer(&fc.output[0])
            .filter(|n| n.op_type == "Relu")
            && self
                .consumers_of(&after.output[0])
                .iter()
                .any(|n| n.op_type == "Gemm" || n.op_type == "MatMul")
        {
            return Err(self.err(
                "the classifier has a hidden layer (Gemm, Relu, Gemm): only torchvision's single \
                 `fc` head is imported; export the model's backbone with a plain head instead",
            ));
        }
        Ok(OnnxWeights {
            tensors: out,
            folded,
            metadata: None,
        })
    }
}

/// A 2-D array transposed; the walk checks the rank first.
fn transpose(a: &Arr) -> Arr {
    let (r, c) = (a.dims[0], a.dims[1]);
    let mut data = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            data[j * r + i] = a.data[i * c + j];
        }
    }
    Arr {
        dims: vec![c, r],
        data,
    }
}

fn push(out: &mut Vec<PackTensor>, name: &str, a: Arr) {
    out.push(from_data(
        TensorData::new(a.data, a.dims),
        name.to_string(),
        None,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_data_is_read_only_from_below_the_graphs_folder() {
        let dir = tempfile::tempdir().unwrap();
        let graph = Graph {
            path: dir.path().join("model.onnx"),
            nodes: Vec::new(),
            inits: HashMap::new(),
            producer: HashMap::new(),
            consumers: HashMap::new(),
            external: HashMap::new(),
        };
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/w.data"), b"1234").unwrap();
        assert!(graph.external_file("w.data", "w").is_ok());
        assert!(graph.external_file("sub/w.data", "w").is_ok());
        for outside in [
            "/etc/passwd",
            "../w.data",
            "sub/../../w.data",
            "./w.data",
            "",
        ] {
            let e = graph.external_file(outside, "w").unwrap_err().to_string();
            assert!(e.contains("outside the graph's folder"), "{outside}: {e}");
        }
        // A link below the folder that points out of it.
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link.data")).unwrap();
        let e = graph
            .external_file("link.data", "w")
            .unwrap_err()
            .to_string();
        assert!(e.contains("links to /etc/hostname"), "{e}");
    }
}
