#!/usr/bin/env python3
"""Export a PyTorch CIFAR-10 model for advsweep, both ways it accepts one.

    python examples/export_torchscript.py ARCH [--weights STATE_DICT] [--out DIR]
                                          [--unnormalized]

ARCH is one of advsweep's architectures in their usual PyTorch layouts: `basic` (the seed's
CNN), `resnet18` (kuangliu/pytorch-cifar), `wrn-28-10` / `wrn-D-K` (the RobustBench layout:
`conv1`, `block1.layer.0.bn1`, …, `fc`), `vgg11`, `vgg16`; the definitions are advsweep's
PyTorch references (worker/tests/reference/models.py), whose state_dict keys the worker
shares. `--weights` loads your trained state_dict (`.safetensors`, or a `.pt`/`.pth` file
holding a state_dict or `{"state_dict": ...}`) strictly; without it the weights are a fresh
initialization (seed 0), which is only good for trying the pipeline.

Writes, in DIR (default `models`):
  ARCH.pt           a TorchScript module (traced in eval mode): float32 images in [0, 1],
                    [N, 3, 32, 32] -> logits [N, 10]; evaluate it with
                        [models.mine]
                        torchscript = "models/ARCH.pt"
  ARCH.safetensors  the same weights as a plain state_dict, for the built-in architecture:
                        [models.mine]
                        arch = "ARCH"
                        weights = "models/ARCH.safetensors"

With `--unnormalized` the module is exported without its input normalization (as many
published models expect normalized input) and the `normalize = { mean = [...], std = [...] }`
line the sweep file then needs is printed. Your own architecture exports the same way:
`model.eval(); torch.jit.trace(model, torch.rand(1, 3, 32, 32)).save("mine.pt")` — call
`eval()` first (a module traced in training mode keeps batch statistics, which advsweep
detects and refuses), and keep gradients flowing to the input (no `.detach()`, no `no_grad`).
"""

import argparse
import os
import sys

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "worker", "tests", "reference"))
import models  # noqa: E402  (advsweep's PyTorch reference definitions)


def load_state_dict(path):
    if path.endswith(".safetensors"):
        load_file, _ = models.safetensors_io()
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    # Checkpoints saved from nn.DataParallel prefix every key with `module.`.
    return {k.removeprefix("module."): v for k, v in state.items()}


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("arch")
    p.add_argument("--weights", help="your trained state_dict")
    p.add_argument("--out", default="models")
    p.add_argument("--unnormalized", action="store_true")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    model = models.build(args.arch)
    if args.weights:
        model.load_state_dict(load_state_dict(args.weights))  # strict: every key, no extra
    model.eval()
    os.makedirs(args.out, exist_ok=True)
    _, save_file = models.safetensors_io()
    weights = os.path.join(args.out, f"{args.arch}.safetensors")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, weights)

    if args.unnormalized:
        model.normalize = nn.Identity()
    module = os.path.join(args.out, f"{args.arch}.pt")
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.rand(2, 3, 32, 32))
    traced.save(module)
    print(f"wrote {module} (TorchScript) and {weights} (state_dict)")
    if args.unnormalized:
        mean = ", ".join(f"{m}" for m in models.CIFAR10_MEAN)
        std = ", ".join(f"{s}" for s in models.CIFAR10_STD)
        print(f"the module expects normalized input: add to its [models.NAME] table\n"
              f"normalize = {{ mean = [{mean}], std = [{std}] }}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
