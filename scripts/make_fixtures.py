#!/usr/bin/env python3
"""Reference fixtures for rekindle's parity tests, produced by PyTorch/torchvision.

Writes into OUT_DIR (default: ./fixtures), for NAME in resnet18 and resnet50:
  NAME.safetensors
      the torchvision state_dict (torchvision key names, num_batches_tracked included) with
      random weights *and* random BatchNorm statistics, so a BN that is skipped, folded wrongly
      or mixed up with another shows up in the logits.
  NAME.pth, NAME_legacy.pth
      the same state_dict with torch.save, zip and legacy (pre-1.6) serialisation.
  NAME_ddp_checkpoint.pth
      a training checkpoint: {"epoch", "arch", "state_dict": DataParallel "module."-prefixed
      keys, "optimizer": SGD state with momentum buffers}.
  NAME_model_key.pth
      a timm-style checkpoint nesting the state_dict under "model".
  resnet18_fp16.safetensors, resnet18_bf16.pth
      half-precision copies, as timm and the Hub often publish them; their reference logits
      (under those names in reference.json) are PyTorch's with the rounded weights in fp32.
  NAME_hf.safetensors
      the same weights under Hugging Face transformers' ResNetForImageClassification names;
      the script proves the renaming by loading them strictly into transformers' model and
      checking its logits equal torchvision's.
  NAME_unfolded.onnx, NAME_legacy.onnx, NAME_external.onnx(.data)
      the same model exported to ONNX by both PyTorch exporters, with BatchNorm kept and
      folded, and with external data (see save_onnx).
  reference.json
      the fixed input, PyTorch's eval-mode logits for each model, torchvision's learnable
      parameter count for every depth, and the library versions.
  train_step.json, resnet18_train_step1.safetensors, resnet18_train_step2.safetensors
      two whole training steps of ResNet-18 (ResNet-50's are `train_step_reference.py`'s, taken
      through rekindle-train's own optimiser): resnet18.safetensors loaded into torchvision's
      model in train mode,
      cross-entropy on a seeded batch (input and labels in train_step.json, with the optimiser's
      settings and each step's loss), backward, torch.optim.SGD with momentum and weight decay;
      the state_dict after each step (weights and BatchNorm running statistics). Two steps, so
      that the momentum buffer matters. The batch is small (4 x 3 x 40 x 36): layer4's maps are
      2 x 2, 16 values per channel, where the unbiased variance PyTorch's running_var uses is
      16/15 of the biased one. The batch's seed is the first that keeps ResNet-18's ReLU inputs
      and max-pool choices clear of float32 rounding (see save_train_step).

Everything is seeded: the same torch version writes the same bytes. Fixtures are generated,
not committed (ResNet-50 is ~100 MB).
"""
import json
import os
import sys

import torch
import torchvision
from safetensors.torch import load_file, save_file
from transformers import ResNetConfig as HfResNetConfig
from transformers import ResNetForImageClassification

SEED = 20261123
INPUT_SHAPE = (2, 3, 115, 97)  # odd, non-square: catches padding and pooling mistakes
DEPTHS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
WEIGHTED = ["resnet18", "resnet50"]


def randomise_batchnorm(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Give every BatchNorm non-trivial affine weights and running statistics.

    The statistics are first measured on random inputs (so activations keep an ordinary
    magnitude through 50 layers), then perturbed per channel, so they are neither the
    identity defaults nor the exact batch statistics.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 64, 64, generator=gen))
    model.eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.empty(c).uniform_(0.6, 1.4, generator=gen))
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_mean.add_(torch.randn(c, generator=gen) * 0.05)
                m.running_var.mul_(torch.empty(c).uniform_(0.7, 1.3, generator=gen))
                m.momentum = 0.1
        # Trained ResNets keep the last BN of each residual branch small; without that the
        # residual sums of a random ResNet-50 grow into the hundreds.
        for block in model.modules():
            last = getattr(block, "bn3", None) or getattr(block, "bn2", None)
            if isinstance(block, (torchvision.models.resnet.BasicBlock, torchvision.models.resnet.Bottleneck)):
                last.weight.mul_(torch.empty(last.num_features).uniform_(0.2, 0.5, generator=gen))


def scale_logits(model: torch.nn.Module, x: torch.Tensor, target_std: float = 4.0) -> None:
    """Rescale the classifier so logits have an ordinary magnitude (std ~4)."""
    with torch.no_grad():
        s = target_std / model(x).std().item()
        model.fc.weight.mul_(s)
        model.fc.bias.mul_(s)


def to_hf_names(state: dict, bottleneck: bool) -> dict:
    """torchvision keys -> transformers ResNetForImageClassification keys."""
    import re

    out = {}
    for k, v in state.items():
        n = k
        n = re.sub(r"^conv1\.", "resnet.embedder.embedder.convolution.", n)
        n = re.sub(r"^bn1\.", "resnet.embedder.embedder.normalization.", n)
        n = re.sub(r"^fc\.", "classifier.1.", n)
        m = re.match(r"^layer(\d)\.(\d+)\.(.*)$", n)
        if m:
            stage, block, rest = int(m[1]) - 1, int(m[2]), m[3]
            prefix = f"resnet.encoder.stages.{stage}.layers.{block}."
            rest = re.sub(r"^downsample\.0\.", "shortcut.convolution.", rest)
            rest = re.sub(r"^downsample\.1\.", "shortcut.normalization.", rest)
            rest = re.sub(r"^conv(\d)\.", lambda c: f"layer.{int(c[1]) - 1}.convolution.", rest)
            rest = re.sub(r"^bn(\d)\.", lambda c: f"layer.{int(c[1]) - 1}.normalization.", rest)
            n = prefix + rest
        out[n] = v
    return out


def hf_model(name: str) -> torch.nn.Module:
    bottleneck = name != "resnet18"
    config = HfResNetConfig(
        embedding_size=64,
        hidden_sizes=[256, 512, 1024, 2048] if bottleneck else [64, 128, 256, 512],
        depths=[3, 4, 6, 3] if bottleneck else [2, 2, 2, 2],
        layer_type="bottleneck" if bottleneck else "basic",
        hidden_act="relu",
        downsample_in_first_stage=False,
        downsample_in_bottleneck=False,
        num_labels=1000,
    )
    return ResNetForImageClassification(config).eval()


def save_variants(name: str, model: torch.nn.Module, x: torch.Tensor, logits: torch.Tensor, out_dir: str) -> None:
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = lambda suffix: os.path.join(out_dir, f"{name}{suffix}")
    save_file(state, path(".safetensors"))
    torch.save(state, path(".pth"))
    torch.save(state, path("_legacy.pth"), _use_new_zipfile_serialization=False)
    # A DataParallel training checkpoint, optimizer state included.
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
    torch.save(
        {"epoch": 7, "arch": name, "state_dict": {f"module.{k}": v for k, v in state.items()},
         "optimizer": opt.state_dict()},
        path("_ddp_checkpoint.pth"),
    )
    torch.save({"model": state, "epoch": 3}, path("_model_key.pth"))

    hf = hf_model(name)
    hf_state = to_hf_names(state, bottleneck=name != "resnet18")
    hf.load_state_dict(hf_state, strict=True)
    with torch.no_grad():
        hf_logits = hf(pixel_values=x).logits
    err = (hf_logits - logits).abs().max().item()
    assert err < 1e-4, f"{name}: transformers logits differ from torchvision by {err}"
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, path("_hf.safetensors"))


def save_onnx(name: str, model: torch.nn.Module, x: torch.Tensor, out_dir: str) -> None:
    """The same model as ONNX, the ways PyTorch 2.9 writes it:
    _unfolded.onnx  dynamo exporter (the default): BatchNorm nodes kept, state_dict names;
    _legacy.onnx    TorchScript exporter (dynamo=False): BatchNorm folded into the convolutions
                    (weights rescaled, biases added), weights named onnx::Conv_N;
    _external.onnx  the dynamo exporter's default, weights in _external.onnx.data.
    (With onnxscript 0.5.4 the dynamo exporter's optimizer keeps BatchNorm as well.)"""
    import warnings

    path = lambda suffix: os.path.join(out_dir, f"{name}{suffix}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), path("_unfolded.onnx"), dynamo=True, external_data=False,
                          verbose=False)
        torch.onnx.export(model, (x,), path("_legacy.onnx"), dynamo=False)
        torch.onnx.export(model, (x,), path("_external.onnx"), dynamo=True, external_data=True,
                          verbose=False)
    import onnx

    for suffix, folded in [("_unfolded.onnx", False), ("_legacy.onnx", True)]:
        ops = {n.op_type for n in onnx.load(path(suffix)).graph.node}
        assert ("BatchNormalization" not in ops) == folded, f"{name}{suffix}: ops {sorted(ops)}"
    assert os.path.exists(path("_external.onnx.data")), "no external data written"


def save_half_precision(model: torch.nn.Module, x: torch.Tensor, out_dir: str, reference: dict) -> None:
    import copy

    for dtype, tag, write in [
        (torch.float16, "fp16", lambda st, p: save_file(st, p + ".safetensors")),
        (torch.bfloat16, "bf16", lambda st, p: torch.save(st, p + ".pth")),
    ]:
        state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
        write(state, os.path.join(out_dir, f"resnet18_{tag}"))
        rounded = copy.deepcopy(model).to(dtype).float().eval()
        with torch.no_grad():
            reference["logits"][f"resnet18_{tag}"] = rounded(x).flatten().tolist()


TRAIN_STEP = {
    "input_shape": [4, 3, 40, 36],
    "steps": 2,
    "lr": 0.1,
    "momentum": 0.9,
    "dampening": 0.0,
    "nesterov": False,
    "weight_decay": 1e-4,
}
TRAIN_SEED = 20261202
# How far, in units of float32 rounding error, ResNet-18's ReLU inputs and max-pool choices must
# stay from their decision points in both steps (see decision_margin).
KINK_MARGIN = 10.0


def decision_margin(model: torch.nn.Module, x: torch.Tensor) -> float:
    """How far a train-mode forward pass stays from its discontinuities, in float32 rounding
    errors: the smallest ratio, over every ReLU input and every max-pool window whose maximum is
    positive, of the distance to the decision (zero; the window's runner-up) to that distance's
    float32 error (float32 against float64). A ReLU input nearer to zero than the rounding error
    can land on the other side in another library, which changes the gradient of every layer
    below it by far more than the test's tolerance."""
    import copy
    import math

    def decisions(dtype):
        m = copy.deepcopy(model).to(dtype).train()
        out = []

        def relu_input(_module, inputs):
            out.append(inputs[0].detach().clone())

        def pool_gap(module, inputs):
            t = inputs[0].detach()
            k, s, p = module.kernel_size, module.stride, module.padding
            windows = torch.nn.functional.unfold(
                torch.nn.functional.pad(t, (p, p, p, p), value=-math.inf), k, stride=s
            ).view(t.shape[0], t.shape[1], k * k, -1)
            top = windows.topk(2, dim=2).values
            # A window whose maximum is 0 passes no gradient: the ReLU before it blocks it.
            out.append(torch.where(top[:, :, 0] > 0, top[:, :, 0] - top[:, :, 1], math.inf))

        for module in m.modules():
            if isinstance(module, torch.nn.ReLU):
                module.register_forward_pre_hook(relu_input)
            elif isinstance(module, torch.nn.MaxPool2d):
                module.register_forward_pre_hook(pool_gap)
        with torch.no_grad():
            m(x.to(dtype))
        return out

    margin = math.inf
    for exact, rounded in zip(decisions(torch.float64), decisions(torch.float32)):
        err = (rounded.double() - exact).abs()
        ratio = (exact.abs() / err).nan_to_num(nan=math.inf)  # inf/inf and 0/0: no decision there
        margin = min(margin, ratio.min().item())
    return margin


def train_steps(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, cfg: dict):
    """Yields (loss, margin of the forward pass) for each of cfg["steps"] SGD steps on `model`."""
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"], dampening=cfg["dampening"],
        nesterov=cfg["nesterov"], weight_decay=cfg["weight_decay"],
    )
    model.train()
    for _ in range(cfg["steps"]):
        margin = decision_margin(model, x)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        yield loss.item(), margin


def torchvision_model(name: str, out_dir: str) -> torch.nn.Module:
    model = getattr(torchvision.models, name)(weights=None)
    model.load_state_dict(load_file(os.path.join(out_dir, f"{name}.safetensors")), strict=True)
    return model


def save_train_step(out_dir: str) -> None:
    """PyTorch's state after each of TRAIN_STEP["steps"] training steps from resnet18.safetensors.

    The batch comes from the first seed from TRAIN_SEED on whose forward passes, in both steps,
    ResNet-18 keeps KINK_MARGIN from every discontinuity, so that its element-wise comparison
    cannot fail on rounding. (ResNet-50, with 1.4 million ReLU inputs per pass here against 0.3
    for ResNet-18, has a few within rounding of zero on any batch: train_step_reference.py moves
    them instead.)"""
    torch.use_deterministic_algorithms(True)
    cfg = dict(TRAIN_STEP, losses={}, margins={})
    for seed in range(TRAIN_SEED, TRAIN_SEED + 200):
        # Its own generator: the fixtures above keep their bytes.
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(*cfg["input_shape"], generator=gen)
        labels = torch.randint(0, 1000, (cfg["input_shape"][0],), generator=gen)
        model = torchvision_model("resnet18", out_dir)
        if all(margin >= KINK_MARGIN for _, margin in train_steps(model, x, labels, cfg)):
            break
    else:
        raise AssertionError(f"no batch keeps ResNet-18 {KINK_MARGIN} rounding errors from its kinks")
    cfg["seed"] = seed
    for name in ["resnet18"]:
        model = torchvision_model(name, out_dir)
        losses, margins = [], []
        before = {k: v.clone() for k, v in model.state_dict().items()}
        for step, (loss, margin) in enumerate(train_steps(model, x, labels, cfg), start=1):
            after = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
            # Every float tensor must move by at least ten times the test's tolerance (1e-4), or
            # a missing gradient or running-statistics update could pass unnoticed.
            moved, key = min(
                ((after[k] - v).abs().max().item(), k) for k, v in before.items() if v.is_floating_point()
            )
            assert moved > 1e-3, f"{name}: `{key}` moved only {moved:e} in step {step}"
            save_file(after, os.path.join(out_dir, f"{name}_train_step{step}.safetensors"))
            losses.append(loss)
            margins.append(margin)
            before = {k: v.clone() for k, v in after.items()}
            print(f"{name}: train step {step} (seed {seed}), loss {loss:.4f}, decision margin "
                  f"{margin:.3g}, least-moved tensor {key} by {moved:.3g}")
        cfg["losses"][name] = losses
        cfg["margins"][name] = margins
    cfg["input"] = x.flatten().tolist()
    cfg["labels"] = labels.tolist()
    with open(os.path.join(out_dir, "train_step.json"), "w") as f:
        json.dump(cfg, f)


def main() -> None:
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "fixtures"
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(SEED)

    x = torch.randn(*INPUT_SHAPE, generator=gen)
    reference = {
        "seed": SEED,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "input_shape": list(INPUT_SHAPE),
        "input": x.flatten().tolist(),
        "logits": {},
        "logits_shape": {},
        "learnable_params": {},
    }

    for name in DEPTHS:
        model = getattr(torchvision.models, name)(weights=None)
        reference["learnable_params"][name] = sum(p.numel() for p in model.parameters())
        if name not in WEIGHTED:
            continue
        randomise_batchnorm(model, gen)
        scale_logits(model, x)
        with torch.no_grad():
            logits = model(x)
        reference["logits"][name] = logits.flatten().tolist()
        reference["logits_shape"][name] = list(logits.shape)
        save_variants(name, model, x, logits, out_dir)
        save_onnx(name, model, x, out_dir)
        if name == "resnet18":
            save_half_precision(model, x, out_dir, reference)
        print(
            f"{name}: {len(model.state_dict())} tensors, logits std {logits.std().item():.3f} "
            f"max |logit| {logits.abs().max().item():.3f}"
        )

    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(reference, f)
    save_train_step(out_dir)
    print(f"fixtures written to {out_dir}")


if __name__ == "__main__":
    main()
