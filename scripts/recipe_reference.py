#!/usr/bin/env python3
"""PyTorch's answers for rekindle's training recipes (the `[loss]` and `[mixup]` sections).

Writes OUT_DIR/recipe.json (default OUT_DIR: ./fixtures) with:
  logits   a fixed batch of logits [7, 5]
  targets  its class indices [7]
  losses   per case: rekindle's `[loss]` settings (the TOML keys, as JSON, with the class
           weights written out), whether the targets are soft (timm's mixup of the batch with
           its reverse, lam = 0.7, as `Mixup` makes them), torch.nn.functional.cross_entropy's
           value and its gradient with respect to the logits

  classification  scikit-learn's per-class precision, recall, F1 and support and its confusion
           matrix (`precision_recall_fscore_support(zero_division=0)`, `confusion_matrix`) for
           fixed true and predicted labels of 6 classes, one of them never predicted and one
           never true, for the evaluation report's metrics

  ops      torchvision's automatic-augmentation operations (`autoaugment._apply_op`, nearest
           neighbours, default fill) and `adjust_hue` on PIL images: two fixed RGB images
           (23 x 17 and 16 x 16, as lists of rows of [r, g, b]) and, per case, the operation,
           its magnitude and both results, for rekindle's `data::ops`

Hard targets go through `cross_entropy(logits, targets, weight=w, label_smoothing=e)`, whose
mean divides by the summed weights of the targets; soft targets through
`cross_entropy(logits, probabilities, weight=w, label_smoothing=e)`, whose mean divides by
the batch size. The Rust test builds rekindle's loss from each case's table and must agree
within 1e-6. Deterministic: no randomness at all.
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from torchvision.transforms.autoaugment import _apply_op

CLASSES = 5
WEIGHTS = [0.5, 2.0, 1.0, 0.25, 3.0]
MIX_LAM = 0.7


def batch():
    logits = torch.tensor(
        [[2.5 * math.sin(1.3 * i + 0.7 * j + 0.2) for j in range(CLASSES)] for i in range(7)],
        dtype=torch.float64,
    )
    targets = torch.tensor([0, 3, 1, 4, 2, 2, 0])
    return logits, targets


def mixed(targets):
    """timm's `mixup_target` without smoothing (cross_entropy smooths them itself)."""
    y1 = F.one_hot(targets, CLASSES).double()
    y2 = F.one_hot(targets.flip(0), CLASSES).double()
    return y1 * MIX_LAM + y2 * (1.0 - MIX_LAM)


def classification():
    """Labels of 6 classes for 90 images: class 4 is never predicted, class 5 never true."""
    y_true = [int(3 * (1 + math.sin(1.1 * i))) % 5 for i in range(90)]
    y_pred = []
    for i, t in enumerate(y_true):
        wrong = math.cos(2.3 * i + 0.4) > 0.35
        p = (t + 1 + i % 2) % 6 if wrong else t
        y_pred.append(3 if p == 4 else p)
    labels = list(range(6))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "classes": 6,
        "y_true": y_true,
        "y_pred": y_pred,
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.tolist(),
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


OPS = [
    ("Identity", 0.0),
    ("ShearX", 0.3), ("ShearX", -0.99), ("ShearY", 0.2), ("ShearY", -0.45),
    ("TranslateX", 5.0), ("TranslateX", -7.9), ("TranslateY", -3.4), ("TranslateY", 12.0),
    ("Rotate", 30.0), ("Rotate", -17.5), ("Rotate", 90.0), ("Rotate", -135.0), ("Rotate", 180.0),
    ("Brightness", -0.5), ("Brightness", 0.9), ("Color", -0.9), ("Color", 0.6),
    ("Contrast", -0.4), ("Contrast", 0.8), ("Sharpness", -0.9), ("Sharpness", 0.99),
    ("Posterize", 2.0), ("Posterize", 4.0), ("Posterize", 7.0),
    ("Solarize", 170.0), ("Solarize", 42.5), ("Solarize", 0.0),
    ("AutoContrast", 0.0), ("Equalize", 0.0),
    ("Hue", -0.3), ("Hue", 0.05), ("Hue", 0.45),
]


def test_image(w, h):
    """A busy image: every channel varies differently, with flat and saturated patches."""
    img = Image.new("RGB", (w, h))
    for y in range(h):
        for x in range(w):
            r = (x * 37 + y * 11) % 256
            g = (x * 5 + y * 23 + 40) % 256
            b = (x * y * 3 + 100) % 256
            if x < 4 and y < 4:
                r, g, b = 200, 30, 30
            img.putpixel((x, y), (r, g, b))
    return img


def rows(img):
    w, h = img.size
    return [[list(img.getpixel((x, y))) for x in range(w)] for y in range(h)]


def ops():
    images = [test_image(23, 17), test_image(16, 16)]
    cases = []
    for name, magnitude in OPS:
        outs = []
        for img in images:
            if name == "Hue":
                out = TF.adjust_hue(img, magnitude)
            else:
                out = _apply_op(img, name, magnitude, interpolation=InterpolationMode.NEAREST, fill=None)
            outs.append(rows(out))
        cases.append({"op": name, "magnitude": magnitude, "outputs": outs})
    return {"images": [rows(i) for i in images], "cases": cases}


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "fixtures"
    os.makedirs(out_dir, exist_ok=True)
    logits, targets = batch()
    cases = []
    for soft in (False, True):
        for smoothing in (0.0, 0.1, 0.3):
            for weights in (None, WEIGHTS):
                x = logits.clone().requires_grad_(True)
                weight = None if weights is None else torch.tensor(weights, dtype=torch.float64)
                y = mixed(targets) if soft else targets
                loss = F.cross_entropy(x, y, weight=weight, label_smoothing=smoothing)
                loss.backward()
                table = {"label_smoothing": smoothing}
                if weights is not None:
                    table["class_weights"] = weights
                cases.append(
                    {
                        "loss": table,
                        "soft": soft,
                        "value": loss.item(),
                        "grad": x.grad.tolist(),
                    }
                )
    reference = {
        "torch": torch.__version__,
        "mix_lam": MIX_LAM,
        "logits": logits.tolist(),
        "targets": targets.tolist(),
        "losses": cases,
        "classification": classification(),
        "ops": ops(),
    }
    with open(os.path.join(out_dir, "recipe.json"), "w") as f:
        json.dump(reference, f)


if __name__ == "__main__":
    main()
