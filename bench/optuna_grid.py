#!/usr/bin/env python3
"""The coordinator benchmark's comparison: the same grid through Optuna's GridSampler.

Reads the grid of an advsweep sweep file (the one coordinator/cli/benches/load/main.rs generated and
submitted), so both sides run the same grid points: models x defenses x attacks x epsilons x
seeds, one trial per cell. N worker processes (2 by default) share one study on SQLite storage
(RDBStorage, sqlite:///...) and run a no-op objective until the GridSampler has covered the grid.

Prints one JSON object: trials/s (completed trials from the moment the workers are released to
the last one's exit), and duplicated cells: grid points that more than one completed trial
evaluated (GridSampler picks an unvisited point at random per trial; two processes can pick the
same one, and once nothing is unvisited it re-runs points while stopping).

    bench/optuna_grid.py --sweep SWEEP.toml [--processes 2] [--repeats 3] [--time-limit S]

With --time-limit, each process stops after S seconds (the figures then cover the trials done).
"""

import argparse
import collections
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib


def grid_of(path):
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    g = doc["grid"]
    # Categorical values must be str/int/float/bool/None; epsilons may be fractions ("2/255").
    return {
        "model": list(g["models"]),
        "defense": list(g["defenses"]),
        "attack": list(g["attacks"]),
        "epsilon": [str(e) for e in g["epsilons"]],
        "seed": list(g.get("seeds", [0])),
    }


def n_points(space):
    n = 1
    for values in space.values():
        n *= len(values)
    return n


def storage_of(url):
    import optuna

    # A generous busy timeout: without it two processes on one SQLite file fail with
    # "database is locked" instead of waiting.
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})


def work(url, study_name, space, time_limit, go, done):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(
        study_name=study_name,
        storage=storage_of(url),
        sampler=optuna.samplers.GridSampler(space),
    )

    def objective(trial):
        for name, values in space.items():
            trial.suggest_categorical(name, values)
        return 0.0

    go.wait()
    started = time.monotonic()
    callbacks = []
    if time_limit:
        def stop_after(study, _trial):
            if time.monotonic() - started > time_limit:
                study.stop()

        callbacks.append(stop_after)
    study.optimize(objective, callbacks=callbacks, catch=(Exception,))
    done.put(time.monotonic())


def one_repeat(space, processes, time_limit):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="advsweep-optuna-") as tmp:
        url = f"sqlite:///{os.path.join(tmp, 'optuna.db')}"
        name = "bench"
        optuna.create_study(study_name=name, storage=storage_of(url), direction="minimize")
        ctx = mp.get_context("spawn")
        go = ctx.Event()
        done = ctx.Queue()
        procs = [
            ctx.Process(target=work, args=(url, name, space, time_limit, go, done))
            for _ in range(processes)
        ]
        for p in procs:
            p.start()
        time.sleep(3.0)  # let every process import optuna and load the study
        started = time.monotonic()
        go.set()
        ends = [done.get() for _ in procs]
        for p in procs:
            p.join()
        wall = max(ends) - started
        trials = optuna.load_study(study_name=name, storage=storage_of(url)).get_trials(
            deepcopy=False
        )
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        by_point = collections.Counter(
            tuple(t.params[k] for k in space) for t in complete
        )
        points = n_points(space)
        return {
            "trials_per_s": round(len(complete) / wall, 2),
            "wall_s": round(wall, 3),
            "trials_complete": len(complete),
            "trials_other_states": len(trials) - len(complete),
            "grid_points": points,
            "grid_points_done": len(by_point),
            "duplicated_cells": sum(1 for n in by_point.values() if n > 1),
            "extra_trials": sum(n - 1 for n in by_point.values()),
            "capped_by_time_limit": len(by_point) < points,
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", action="append", required=True, help="sweep file (repeatable)")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--time-limit", type=float, default=0.0)
    args = ap.parse_args()
    import optuna
    import sqlalchemy

    scenarios = []
    for sweep in args.sweep:
        space = grid_of(sweep)
        samples = []
        for r in range(args.repeats):
            print(
                f"optuna: {n_points(space)} grid points, {args.processes} processes, "
                f"repeat {r + 1}/{args.repeats}",
                file=sys.stderr,
            )
            s = one_repeat(space, args.processes, args.time_limit)
            print(
                f"optuna:   {s['trials_per_s']} trials/s, {s['duplicated_cells']} duplicated",
                file=sys.stderr,
            )
            samples.append(s)
        median = {
            k: statistics.median(s[k] for s in samples)
            for k in samples[0]
            if isinstance(samples[0][k], (int, float)) and not isinstance(samples[0][k], bool)
        }
        scenarios.append(
            {
                "name": f"{args.processes} processes, {n_points(space)} cells",
                "sweep": sweep,
                "cells": n_points(space),
                "processes": args.processes,
                "repeats": args.repeats,
                "time_limit_s": args.time_limit or None,
                "median": median,
                "samples": samples,
            }
        )
    print(
        json.dumps(
            {
                "bench": "optuna GridSampler on SQLite",
                "optuna": optuna.__version__,
                "sqlalchemy": sqlalchemy.__version__,
                "python": sys.version.split()[0],
                "objective": "no-op (suggest every grid parameter, return 0.0)",
                "storage": "RDBStorage sqlite:/// (SQLite defaults: rollback journal, synchronous=FULL)",
                "scenarios": scenarios,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
