#!/usr/bin/env python3
"""Talks to a running `rekindle-infer serve` with Triton's own client (tritonclient.http, the
Open Inference Protocol / KServe v2) and prints what it got as JSON; then scrapes /metrics and
parses it with prometheus_client's OpenMetrics parser.

usage: check_oip.py HOST:PORT MODEL TOKEN INPUT.safetensors IMAGE...

INPUT.safetensors holds `input` [N, 3, H, W], preprocessed the way the model file says; the
images are encoded files. Every request carries the token except the one that checks it is
wanted. Nothing is judged here: the Rust test compares the answers with its own.
"""
import json
import sys
import urllib.request

import numpy as np
import tritonclient.http as http
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from safetensors.numpy import load_file
from tritonclient.utils import InferenceServerException


def as_str(c):
    return c.decode() if isinstance(c, bytes) else c


def main():
    url, model, token, inputs, images = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
    token_header = {"Authorization": f"Bearer {token}"}

    # A fresh dict each call: tritonclient writes Inference-Header-Content-Length into the
    # headers it is given, and a reused dict would carry it into the next (JSON-only) request.
    def auth_headers():
        return dict(token_header)

    client = http.InferenceServerClient(url, connection_timeout=10.0, network_timeout=60.0)
    x = load_file(inputs)["input"].astype(np.float32)
    out = {"sent": {}}

    def sent(kind):
        out["sent"][kind] = out["sent"].get(kind, 0) + 1

    out["live"] = client.is_server_live(headers=auth_headers())
    out["ready"] = client.is_server_ready(headers=auth_headers())
    out["model_ready"] = client.is_model_ready(model, headers=auth_headers())
    out["server_metadata"] = client.get_server_metadata(headers=auth_headers())
    out["model_metadata"] = client.get_model_metadata(model, headers=auth_headers())
    sent("metadata")
    sent("metadata")

    # FP32, preprocessed: batch 1 and 4, binary tensors (the client's default) and JSON ones.
    for n in (1, 4):
        for binary in (True, False):
            i = http.InferInput("input", list(x[:n].shape), "FP32")
            i.set_data_from_numpy(x[:n], binary_data=binary)
            outs = [
                http.InferRequestedOutput("logits", binary_data=binary),
                http.InferRequestedOutput("probabilities", binary_data=binary),
                http.InferRequestedOutput("classes", binary_data=binary),
            ]
            r = client.infer(model, [i], outputs=outs, headers=auth_headers(), parameters={"top_k": 2})
            sent("infer_ok")
            out[f"fp32_{n}_{'binary' if binary else 'json'}"] = {
                "logits": r.as_numpy("logits").tolist(),
                "probabilities": r.as_numpy("probabilities").tolist(),
                "classes": [[as_str(c) for c in row] for row in r.as_numpy("classes")],
                "response": r.get_response(),
            }

    # Encoded images as BYTES, batch 1 and 4; the classification extension on probabilities.
    blobs = [open(p, "rb").read() for p in images]
    for n in (1, 4):
        i = http.InferInput("image", [n], "BYTES")
        i.set_data_from_numpy(np.array(blobs[:n], dtype=np.object_), binary_data=True)
        r = client.infer(
            model,
            [i],
            outputs=[
                http.InferRequestedOutput("probabilities", binary_data=True),
                http.InferRequestedOutput("logits", binary_data=True, class_count=2),
            ],
            headers=auth_headers(),
        )
        sent("infer_ok")
        out[f"bytes_{n}"] = {
            "probabilities": r.as_numpy("probabilities").tolist(),
            "classification": [[as_str(c) for c in row] for row in r.as_numpy("logits")],
        }

    # Requests that must be refused with a 4xx, the service staying up.
    def refused(name, call):
        try:
            call()
            out.setdefault("refused", {})[name] = {"status": None}
        except InferenceServerException as e:
            out.setdefault("refused", {})[name] = {"status": e.status(), "message": e.message()}

    def infer_with(inp, model_name=model, token=True):
        return lambda: client.infer(model_name, [inp], headers=auth_headers() if token else {})

    wrong_shape = http.InferInput("input", [1, 3, 5, 5], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, 3, 5, 5), np.float32))
    refused("wrong_shape", infer_with(wrong_shape))
    wrong_type = http.InferInput("input", list(x[:1].shape), "FP64")
    wrong_type.set_data_from_numpy(x[:1].astype(np.float64))
    refused("wrong_datatype", infer_with(wrong_type))
    good = http.InferInput("input", list(x[:1].shape), "FP32")
    good.set_data_from_numpy(x[:1])
    refused("unknown_model", infer_with(good, model_name="no-such-model"))
    refused("no_token", infer_with(good, token=False))
    not_an_image = http.InferInput("image", [1], "BYTES")
    not_an_image.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    refused("not_an_image", infer_with(not_an_image))
    for _ in range(5):
        sent("infer_refused")
    out["live_after"] = client.is_server_live(headers=auth_headers())

    # /metrics after the burst, through a real parser.
    req = urllib.request.Request(f"http://{url}/metrics", headers=auth_headers())
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = resp.read().decode()
        out["metrics_content_type"] = resp.headers.get("Content-Type")
    samples = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.append({"name": s.name, "labels": s.labels, "value": s.value, "type": family.type})
    out["metrics"] = samples
    print(json.dumps(out))


if __name__ == "__main__":
    main()
