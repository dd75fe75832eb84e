#!/usr/bin/env python3
"""Checks a rekindle ONNX export with the real tools and prints what they saw as JSON.

usage: check_onnx.py MODEL.onnx INPUT.safetensors [--torch ARCH WEIGHTS NUM_CLASSES]

- onnx.checker.check_model(full_check=True) on the file (by path, so external data is checked);
- the graph's opset, inputs and outputs (with their symbolic axes) and metadata_props;
- ONNX Runtime (CPU) on the batch in INPUT.safetensors (tensor `input`, [N, 3, H, W], already
  preprocessed by rekindle the way the model file says), once as one batch of N and once image
  by image (batch 1), from the same session;
- with --torch, torchvision's ARCH with WEIGHTS (a state_dict as .pth or .safetensors) on the same
  batch, in eval mode.
The caller compares the logits with its own.
"""
import argparse
import json

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file


def dims(value_info):
    shape = value_info.type.tensor_type.shape
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in shape.dim]


def torch_logits(arch, weights, num_classes, x):
    import torch
    import torchvision

    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if weights.endswith(".safetensors"):
        from safetensors.torch import load_file as load_torch

        state = load_torch(weights)
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("input")
    p.add_argument("--torch", nargs=3, metavar=("ARCH", "WEIGHTS", "NUM_CLASSES"))
    a = p.parse_args()

    onnx.checker.check_model(a.model, full_check=True)
    m = onnx.load(a.model, load_external_data=False)
    x = load_file(a.input)["input"].astype(np.float32)

    session = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    batch = dict(zip(names, session.run(None, {"input": x})))
    single = [session.run(["logits"], {"input": x[i : i + 1]})[0][0] for i in range(len(x))]
    out = {
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "ir_version": m.ir_version,
        "opset": {o.domain or "ai.onnx": o.version for o in m.opset_import},
        "inputs": {i.name: dims(i) for i in m.graph.input},
        "outputs": {o.name: dims(o) for o in m.graph.output},
        "ops": sorted({n.op_type for n in m.graph.node}),
        "metadata": {e.key: e.value for e in m.metadata_props},
        "session_metadata": session.get_modelmeta().custom_metadata_map,
        "ort": {k: v.flatten().tolist() for k, v in batch.items()},
        "ort_single": np.stack(single).flatten().tolist(),
    }
    if a.torch:
        arch, weights, classes = a.torch
        out["torch"] = torch_logits(arch, weights, int(classes), x).flatten().tolist()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
