#!/usr/bin/env python3
"""PyTorch eager reference for `advsweep-worker bench`: the same computations written the way
a PyTorch user writes them, for a side-by-side throughput comparison (bench/compute.sh).

Same as the worker's benchmark:
* models from worker/tests/reference/models.py (weight for weight the worker's), built after
  `torch.manual_seed(0)`;
* CIFAR-shaped data resident on the device as uint8 (n x 3 x 32 x 32) with labels in 0..9,
  each batch gathered by a random permutation and converted with `.float() / 255` (throughput
  does not depend on pixel values; the worker uses its synthetic set);
* training: the sweep defaults, `torch.optim.SGD(lr=0.01, momentum=0.9, weight_decay=5e-4)`
  (PyTorch's default implementation choice), cross-entropy, a kuangliu/pytorch-cifar style
  loop (`loss.item()` and the correct count per batch);
* `at-fgsm` / `at-pgd`: every batch replaced by FGSM (step eps) or PGD-10 (step 2/255, random
  start) at eps = 8/255, crafted against the current weights with the model in training mode;
* `pgd10-eval`: per batch of the evaluation set, a clean pass under no_grad, PGD-10 at
  eps = 8/255 in eval mode, a pass on the adversarial images, counts read per batch;
* attacks are the torchattacks loops (`torch.autograd.grad` on the input only, sign step,
  clamp to the eps-ball, clamp to [0, 1]);
* one untimed warm-up pass over at most two batches, then `repeats` timed passes over
  `images` images (CUDA synchronized before each clock read); the median is reported, in
  images per second and per CPU-second of the process (`time.process_time()`).

Prints the same JSON document as `advsweep-worker bench --json` (with "implementation":
"pytorch-eager").
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "worker", "tests", "reference"))
from models import build  # noqa: E402

EPS = 8 / 255
PGD_STEPS = 10
PGD_ALPHA = 2.5 * EPS / PGD_STEPS  # the pgd-linf preset: 2.5 eps / steps
TRAIN_BATCH = 128
EVAL_BATCH = 500
TRAINING_TEST_IMAGES = 64
MODES = ["standard", "at-fgsm", "at-pgd", "pgd10-eval"]


def default_images(model, mode, cuda):
    """Kept equal to `advsweep_worker::bench::default_images`."""
    table = {
        (False, "basic"): {"standard": 10240, "at-fgsm": 5120, "at-pgd": 1280, "pgd10-eval": 1000},
        (False, "resnet18"): {"standard": 256, "at-fgsm": 128, "at-pgd": 128, "pgd10-eval": 50},
        (True, "basic"): {"standard": 51200, "at-fgsm": 25600, "at-pgd": 12800, "pgd10-eval": 10000},
        (True, "resnet18"): {"standard": 12800, "at-fgsm": 6400, "at-pgd": 2560, "pgd10-eval": 2000},
    }
    # The wider models: ResNet-18's sizes, as the worker's `_` arms.
    return table.get((cuda, model), table[(cuda, "resnet18")])[mode]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- attacks: torchattacks' FGSM and PGD ---------------------------------------------------------


def fgsm(model, images, labels, eps=EPS):
    loss = nn.CrossEntropyLoss()
    images = images.clone().detach()
    labels = labels.clone().detach()
    images.requires_grad = True
    outputs = model(images)
    cost = loss(outputs, labels)
    grad = torch.autograd.grad(cost, images, retain_graph=False, create_graph=False)[0]
    adv_images = images + eps * grad.sign()
    adv_images = torch.clamp(adv_images, min=0, max=1).detach()
    return adv_images


def pgd(model, images, labels, eps=EPS, alpha=PGD_ALPHA, steps=PGD_STEPS, random_start=True):
    loss = nn.CrossEntropyLoss()
    images = images.clone().detach()
    labels = labels.clone().detach()
    adv_images = images.clone().detach()
    if random_start:
        adv_images = adv_images + torch.empty_like(adv_images).uniform_(-eps, eps)
        adv_images = torch.clamp(adv_images, min=0, max=1).detach()
    for _ in range(steps):
        adv_images.requires_grad = True
        outputs = model(adv_images)
        cost = loss(outputs, labels)
        grad = torch.autograd.grad(cost, adv_images, retain_graph=False, create_graph=False)[0]
        adv_images = adv_images.detach() + alpha * grad.sign()
        delta = torch.clamp(adv_images - images, min=-eps, max=eps)
        adv_images = torch.clamp(images + delta, min=0, max=1).detach()
    return adv_images


ATTACKS = {"standard": None, "at-fgsm": fgsm, "at-pgd": pgd}


# --- measurements --------------------------------------------------------------------------------


def data(n, device, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g).to(device)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    return x, y


def train_epoch(model, optimizer, x_all, y_all, batch, attack, bf16=False):
    criterion = nn.CrossEntropyLoss()
    model.train()
    n = y_all.size(0)
    perm = torch.randperm(n, device=x_all.device)
    train_loss = 0.0
    correct = 0
    total = 0
    for start in range(0, n, batch):
        idx = perm[start : start + batch]
        inputs = x_all[idx].float() / 255
        targets = y_all[idx]
        # bf16 autocast (--precision bf16) over the step's forward passes, backward outside it:
        # what the worker does with `[training] precision = "bf16"`.
        with torch.autocast(x_all.device.type, dtype=torch.bfloat16, enabled=bf16):
            if attack is not None:
                inputs = attack(model, inputs, targets)
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, targets)
        loss.backward()
        optimizer.step()
        train_loss += loss.item()
        _, predicted = outputs.max(1)
        total += targets.size(0)
        correct += predicted.eq(targets).sum().item()
    return train_loss, correct / max(total, 1)


def clean_accuracy(model, x_all, y_all, batch):
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, y_all.size(0), batch):
            inputs = x_all[start : start + batch].float() / 255
            correct += model(inputs).argmax(1).eq(y_all[start : start + batch]).sum().item()
    return correct / max(y_all.size(0), 1)


def training(arch, mode, device, batch, images, repeats, bf16=False):
    x, y = data(images, device, 1)
    tx, ty = data(TRAINING_TEST_IMAGES, device, 2)
    torch.manual_seed(0)
    model = build(arch).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    attack = ATTACKS[mode]
    warm = min(images, 2 * batch)
    train_epoch(model, optimizer, x[:warm], y[:warm], batch, attack, bf16)
    clean_accuracy(model, tx, ty, EVAL_BATCH)
    runs, cpu_runs = [], []
    c0 = time.process_time()
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        train_epoch(model, optimizer, x, y, batch, attack, bf16)
        sync(device)
        runs.append(images / (time.perf_counter() - t0))
        clean_accuracy(model, tx, ty, EVAL_BATCH)  # per-epoch test accuracy, untimed
        c1 = time.process_time()  # like the worker's: the epoch and its clean evaluation
        cpu_runs.append(images / max(c1 - c0, 1e-9))
        c0 = c1
    return runs, cpu_runs


def evaluate(model, x_all, y_all, batch):
    model.eval()
    clean_correct = 0
    robust_correct = 0
    for start in range(0, y_all.size(0), batch):
        images = x_all[start : start + batch].float() / 255
        labels = y_all[start : start + batch]
        with torch.no_grad():
            clean_hit = model(images).argmax(1).eq(labels)
        adv = pgd(model, images, labels)
        with torch.no_grad():
            adv_hit = model(adv).argmax(1).eq(labels)
        clean_correct += clean_hit.sum().item()
        robust_correct += adv_hit.sum().item()
    return clean_correct, robust_correct


def evaluation(arch, device, batch, images, repeats):
    x, y = data(images, device, 3)
    torch.manual_seed(0)
    model = build(arch).to(device)
    warm = min(images, 2 * batch)
    evaluate(model, x[:warm], y[:warm], batch)
    runs, cpu_runs = [], []
    for _ in range(repeats):
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        evaluate(model, x, y, batch)
        sync(device)
        runs.append(images / (time.perf_counter() - t0))
        cpu_runs.append(images / max(time.process_time() - c0, 1e-9))
    return runs, cpu_runs


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["basic", "resnet18", "wrn-16-4", "vgg11", "vgg16", "all"],
                   default="all")
    p.add_argument("--mode", choices=MODES + ["all"], default="all")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--images", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="training modes: bf16 autocast over each step's forward passes")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    if a.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(a.device)
    threads = a.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    results = []
    for arch in ["basic", "resnet18"] if a.model == "all" else [a.model]:
        for mode in MODES if a.mode == "all" else [a.mode]:
            training_mode = mode != "pgd10-eval"
            batch = a.batch_size or (TRAIN_BATCH if training_mode else EVAL_BATCH)
            images = a.images or default_images(arch, mode, device.type == "cuda")
            if training_mode:
                runs, cpu_runs = training(arch, mode, device, batch, images, a.repeats,
                                          a.precision == "bf16")
            else:
                runs, cpu_runs = evaluation(arch, device, batch, images, a.repeats)
            results.append(
                {
                    "model": arch,
                    "mode": mode,
                    "batch_size": batch,
                    "images": images,
                    "images_per_second": round(statistics.median(runs), 3),
                    "runs": [round(r, 3) for r in runs],
                    "images_per_cpu_second": round(statistics.median(cpu_runs), 3),
                    "cpu_runs": [round(r, 3) for r in cpu_runs],
                }
            )
            print(f"{arch} {mode}: {statistics.median(runs):.1f} images/s", file=sys.stderr)
    label = "cpu" if device.type == "cpu" else f"cuda:{device.index or 0}"
    doc = {
        "benchmark": "worker-compute",
        "implementation": "pytorch-eager",
        "torch": torch.__version__,
        "device": label,
        "precision": a.precision,
        "threads": threads,
        "repeats": a.repeats,
        "cudnn_benchmark": a.cudnn_benchmark,
        "results": results,
    }
    if a.json:
        print(json.dumps(doc, indent=1))
    else:
        for r in results:
            print(f"{r['model']:<9} {r['mode']:<11} {r['images_per_second']:>10.1f} images/s  {r['runs']}")


if __name__ == "__main__":
    main()
