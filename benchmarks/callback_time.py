"""The callback's own CPU time per analysed epoch of a short fit (``short_fit.py``'s small CNN on digits, defaults;
24/48 channels since 2026-12-08, 16/32 before), by part: thread CPU time (``time.thread_time``) spent inside its
Lightning hooks and inside its forward hooks.

On a machine shared with other work a fit's wall time varies more than the callback adds (one 30-epoch fit took 15 s
quiet and 355 s under load), so wall-time ratios (``short_fit.py``) need a quiet spell. This counts only the CPU
time of the training thread inside the callback, with one torch thread (no waits on a busy second core), so other
load inflates it far less; it measures what the callback costs, not the ratio. The median over the epochs leaves
out the epochs where the time budget also made figures or maps (the budget decides by the machine's speed).

``python benchmarks/callback_time.py [--epochs 10] [--rounds 2] [--inner]`` (``--inner``: also the parts inside the
hooks, not added to the total); to compare with another commit, run it with
``PYTHONPATH`` pointing at that commit's checkout (the script imports ``lightning_featviz`` from there).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import short_fit  # noqa: E402 - the fit of the short-fit benchmark

from lightning_featviz import callback, epoch_analysis  # noqa: E402
from lightning_featviz.analysis import cache, history  # noqa: E402
from lightning_featviz.capture import bank, epoch, hooks  # noqa: E402

#: (owner, method): what is timed, and summed; the Lightning hooks, and the forward hooks that run inside the model's
#: forward
TIMED = [
    (callback.FeatureVisualizer, "on_validation_epoch_start"),
    (callback.FeatureVisualizer, "on_validation_batch_start"),
    (callback.FeatureVisualizer, "on_validation_batch_end"),
    (callback.FeatureVisualizer, "on_validation_epoch_end"),
    (hooks.ActivationCapture, "_vectors"),
    (epoch.ValidationCapture, "_remember_predictions"),
]
#: With ``--inner``, also what the hooks above spend their time on (each inside one of them)
INNER = [
    (epoch_analysis, "layer_stats"),  # epoch end: every layer's kNN search and statistics
    (cache, "digest"),  # epoch end: the result cache's fingerprints (pixel space is searched once)
    (history.DynamicsTracker, "update"),  # epoch end: the label-issue layer's per-sample history
    (callback.FeatureVisualizer, "_submit"),  # epoch end: the epoch's report (the FEATVIZ tab's files, CSVs)
    (epoch_analysis.EpochAnalysis, "log"),  # epoch end: Lightning's `log` of the scalars
    (epoch.ValidationCapture, "vectors"),  # batch end: the layers' vectors, the input's downsampling
    (bank.FeatureBank, "add"),  # batch end: the bank's rows
    (epoch.ValidationCapture, "thumbnails"),  # batch end: made the first epoch only, then taken from the memo
]

epochs_spent: list[dict[str, float]] = []  # per validation epoch (the sanity check's first): part -> seconds


def timed(method: Any, name: str) -> Any:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if name == "on_validation_epoch_start":
            epochs_spent.append(defaultdict(float))
        started = time.thread_time()
        try:
            return method(*args, **kwargs)
        finally:
            if epochs_spent:
                epochs_spent[-1][name] += time.thread_time() - started

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--inner", action="store_true", help="also time the parts inside the hooks (INNER)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    parts = TIMED + (INNER if args.inner else [])
    for owner, name in parts:
        setattr(owner, name, timed(getattr(owner, name), name))
    short_fit.fit_seconds(2, True)  # imports and first-call costs, in neither round
    print(f"callback CPU time per analysed epoch, ms (median of {args.epochs} epochs), from {callback.__file__}")
    for _ in range(args.rounds):
        epochs_spent.clear()
        seconds, _ = short_fit.fit_seconds(args.epochs, True)
        analysed = epochs_spent[1:]  # the sanity check's validation is not analysed
        outer = [name for _, name in TIMED]
        total = statistics.median(sum(spent[name] for name in outer) for spent in analysed) * 1000
        medians = {name: statistics.median(spent[name] for spent in analysed) * 1000 for _, name in parts}
        words = " ".join(f"{name.removeprefix('on_validation_')}={ms:.1f}" for name, ms in medians.items())
        print(f"  {total:6.1f}  ({words}; fit {seconds:.1f} s wall)")


if __name__ == "__main__":
    main()
