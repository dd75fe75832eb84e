#!/usr/bin/env python3
"""Loads a rekindle export into torchvision with strict=True and prints its logits as JSON.

usage: check_export.py EXPORT.safetensors ARCH NUM_CLASSES REFERENCE.json
The input is the fixed one from reference.json (written by make_fixtures.py), so the caller
can compare these logits with its own.
"""
import json
import sys

import torch
import torchvision
from safetensors.torch import load_file


def main() -> None:
    path, arch, num_classes, reference = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    model.load_state_dict(load_file(path), strict=True)
    model.eval()
    ref = json.load(open(reference))
    x = torch.tensor(ref["input"], dtype=torch.float32).reshape(ref["input_shape"])
    with torch.no_grad():
        logits = model(x)
    print(json.dumps({"logits": logits.flatten().tolist()}))


if __name__ == "__main__":
    main()
