#!/usr/bin/env python3
"""torchattacks 3.5.1's side of the AutoAttack benchmark (`worker/benches/autoattack.rs`).

    autoattack_reference.py CKPT INPUT EPS THREADS REPEATS ATTACK [ATTACK ...]

CKPT: a BasicNet state_dict (safetensors); INPUT: safetensors with `x` (f32 [N, 3, 32, 32] in
[0, 1]) and `y` (i64 [N]); ATTACK: apgd-ce or autoattack (ℓ∞). Every attack runs with the
reference settings of fra31/auto-attack (100 steps, 9 target classes, Square 5,000 queries),
not torchattacks' 10-step defaults, on all N images in one batch, REPEATS times after one
warm-up, with torch.set_num_threads(THREADS). Prints one line per timed repeat:

    <attack> <repeat> <wall seconds> <process CPU seconds> <robust images>
"""

import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "worker", "tests", "reference"))
from models import build, safetensors_io  # noqa: E402

import torchattacks  # noqa: E402


def attack(model, name, eps):
    apgd_ce = lambda: torchattacks.APGD(
        model, norm="Linf", eps=eps, steps=100, n_restarts=1, seed=0, loss="ce", eot_iter=1, rho=0.75
    )
    if name == "apgd-ce":
        return apgd_ce()
    if name == "autoattack":
        # torchattacks' own AutoAttack class leaves APGD, APGD-T and FAB at 10 steps; the
        # reference cascade is built from the four attacks with their published settings.
        apgd_t = torchattacks.APGDT(
            model, norm="Linf", eps=eps, steps=100, n_restarts=1, seed=0, eot_iter=1, rho=0.75, n_classes=10
        )
        fab_t = torchattacks.FAB(
            model, norm="Linf", eps=eps, steps=100, n_restarts=1, alpha_max=0.1, eta=1.05, beta=0.9,
            seed=0, multi_targeted=True, n_classes=10,
        )
        square = torchattacks.Square(
            model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, p_init=0.8, loss="margin",
            resc_schedule=False, seed=0,
        )
        return torchattacks.MultiAttack([apgd_ce(), apgd_t, fab_t, square])
    raise SystemExit(f"unknown attack `{name}`")


def main(argv):
    if len(argv) < 6:
        print(__doc__, file=sys.stderr)
        return 2
    ckpt, inp, eps, threads, repeats = argv[0], argv[1], float(argv[2]), int(argv[3]), int(argv[4])
    torch.set_num_threads(threads)
    load_file, _ = safetensors_io()
    model = build("basic")
    model.load_state_dict(load_file(ckpt))
    model.eval()
    data = load_file(inp)
    x, y = data["x"].float(), data["y"].long()
    for name in argv[5:]:
        for repeat in range(repeats + 1):  # repeat 0 warms up
            a = attack(model, name, eps)
            wall, cpu = time.perf_counter(), time.process_time()
            adv = a(x, y)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            with torch.no_grad():
                robust = int((model(adv).argmax(1) == y).sum())
            if repeat > 0:
                print(f"{name} {repeat} {wall:.3f} {cpu:.3f} {robust}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
