#!/usr/bin/env python3
"""torchattacks 3.5.1's AutoAttack attacks on a BasicNet checkpoint, for the Rust reference test
(`worker/tests/autoattack_reference.rs`).

    autoattack.py CKPT INPUT NORM EPS ATTACK SEED [SEED ...]

CKPT: a BasicNet state_dict (safetensors, as `advsweep_worker::checkpoint::save` writes it);
INPUT: safetensors with `x` (f32 [N, 3, 32, 32] in [0, 1]) and `y` (i64 [N]); NORM: Linf or L2;
ATTACK: apgd-ce, apgd-t, fab (untargeted), fab-t, square or autoattack. Prints one line per
seed:

    <attack> <seed> <robust images> <clean correct> <seconds> [<robust after stage> ...]

(the robust images after each stage only for the cascade).

Every attack runs with the reference settings of fra31/auto-attack, not torchattacks' 10-step
defaults: 100 steps, one run, 9 target classes (n_classes=10), Square with 5,000 queries and
p_init 0.8 (its schedule rescaled when run alone, as the reference's SquareAttack defaults to,
and not rescaled in the cascade, as the reference's AutoAttack sets it); the untargeted FAB
(`fab`, the plus version's) with one run here (its first run starts at the image, so one run
is the same whatever the seed). The cascade is built
from the same four attacks with torchattacks' MultiAttack, because torchattacks' own
AutoAttack class leaves APGD, APGD-T and FAB at 10 steps.
"""

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import build, safetensors_io  # noqa: E402

import torchattacks  # noqa: E402


def attacks(model, name, norm, eps, seed):
    apgd_ce = lambda: torchattacks.APGD(
        model, norm=norm, eps=eps, steps=100, n_restarts=1, seed=seed, loss="ce", eot_iter=1, rho=0.75
    )
    apgd_t = lambda: torchattacks.APGDT(
        model, norm=norm, eps=eps, steps=100, n_restarts=1, seed=seed, eot_iter=1, rho=0.75, n_classes=10
    )
    fab_t = lambda: torchattacks.FAB(
        model, norm=norm, eps=eps, steps=100, n_restarts=1, alpha_max=0.1, eta=1.05, beta=0.9,
        seed=seed, multi_targeted=True, n_classes=10,
    )
    fab = lambda: torchattacks.FAB(
        model, norm=norm, eps=eps, steps=100, n_restarts=1, alpha_max=0.1, eta=1.05, beta=0.9,
        seed=seed, multi_targeted=False, n_classes=10,
    )
    square = lambda rescale: torchattacks.Square(
        model, norm=norm, eps=eps, n_queries=5000, n_restarts=1, p_init=0.8, loss="margin",
        resc_schedule=rescale, seed=seed,
    )
    if name == "apgd-ce":
        return apgd_ce()
    if name == "apgd-t":
        return apgd_t()
    if name == "fab-t":
        return fab_t()
    if name == "fab":
        return fab()
    if name == "square":
        return square(True)
    if name == "autoattack":
        return torchattacks.MultiAttack([apgd_ce(), apgd_t(), fab_t(), square(False)])
    raise SystemExit(f"unknown attack `{name}`")


def main(argv):
    if len(argv) < 6:
        print(__doc__, file=sys.stderr)
        return 2
    ckpt, inp, norm, eps, name = argv[0], argv[1], argv[2], float(argv[3]), argv[4]
    seeds = [int(s) for s in argv[5:]]
    load_file, _ = safetensors_io()
    model = build("basic")
    model.load_state_dict(load_file(ckpt))
    model.eval()
    data = load_file(inp)
    x, y = data["x"].float(), data["y"].long()
    with torch.no_grad():
        clean = int((model(x).argmax(1) == y).sum())
    for seed in seeds:
        attack = attacks(model, name, norm, eps, seed)
        if name == "autoattack":
            attack._accumulate_multi_atk_records = True
            attack._multi_atk_records = [0.0] * (len(attack.attacks) + 1)
        start = time.perf_counter()
        adv = attack(x, y)
        seconds = time.perf_counter() - start
        # MultiAttack's records: [images, robust after stage 1, …] (0 for the stages after it
        # stopped early, nothing being left to attack).
        stages = [int(c) for c in attack._multi_atk_records[1:]] if name == "autoattack" else []
        with torch.no_grad():
            robust = int((model(adv).argmax(1) == y).sum())
        if norm == "Linf":
            size = (adv - x).abs().flatten(1).amax(1).max().item()
        else:
            size = (adv - x).flatten(1).norm(dim=1).max().item()
        assert size <= eps * (1 + 1e-4) + 1e-6, f"{name}: perturbation {size} > {eps}"
        counts = "".join(f" {c}" for c in stages)
        print(f"{name} {seed} {robust} {clean} {seconds:.2f}{counts}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
