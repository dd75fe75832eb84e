"""Seeds for `cargo xtask fuzz`: small, valid files in every container rekindle imports, written
by the libraries users write them with (torch.save, safetensors, torch.onnx / onnx). The fuzzer
mutates them; they are committed (a few KB each) so fuzzing needs no Python.

    python scripts/make_fuzz_seeds.py fuzz/seeds
"""

import io
import os
import sys

import onnx
import torch
from onnx import helper, numpy_helper
from safetensors.torch import save_file


def state(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "conv1.weight": torch.randn(4, 3, 3, 3, generator=g),
        "bn1.weight": torch.rand(4, generator=g),
        "bn1.running_mean": torch.randn(4, generator=g),
        "bn1.num_batches_tracked": torch.tensor(7),
        "fc.weight": torch.randn(2, 4, generator=g).half(),
        "fc.bias": torch.zeros(2, dtype=torch.bfloat16),
    }


def main(out):
    os.makedirs(f"{out}/pth", exist_ok=True)
    os.makedirs(f"{out}/safetensors", exist_ok=True)
    os.makedirs(f"{out}/onnx", exist_ok=True)
    torch.save(state(0), f"{out}/pth/zip.pth")
    torch.save(state(1), f"{out}/pth/legacy.pth", _use_new_zipfile_serialization=False)
    # Nested, as training scripts save: weights under a key, beside an epoch and optimiser state.
    torch.save({"epoch": 3, "state_dict": state(2), "optimizer": {"lr": 0.1}}, f"{out}/pth/nested.pth")
    # Views sharing one storage, with an offset and non-contiguous strides.
    base = torch.arange(24, dtype=torch.float32)
    torch.save({"a.weight": base[4:16].view(3, 4), "a.bias": base.view(4, 6).t()}, f"{out}/pth/views.pth")
    save_file({k: v.contiguous() for k, v in state(3).items()}, f"{out}/safetensors/torchvision.safetensors")
    save_file(
        {"resnet.embedder.embedder.convolution.weight": torch.ones(2, 3, 1, 1)},
        f"{out}/safetensors/hf.safetensors",
        metadata={"format": "pt"},
    )
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    conv.eval()
    buf = io.BytesIO()
    torch.onnx.export(conv, torch.zeros(1, 3, 8, 8), buf, dynamo=False, opset_version=17)
    with open(f"{out}/onnx/conv_bn.onnx", "wb") as f:
        f.write(buf.getvalue())
    # The same graph with its initializers in an external file beside it (as >2 GB models are).
    model = onnx.load_from_string(buf.getvalue())
    onnx.save_model(
        model,
        f"{out}/onnx/external.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="external.onnx.data",
        size_threshold=0,
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fuzz/seeds")
