"""The quick start's ``fit`` wall time with the callback over ``fit`` without it, same seed, same
process.

Two callbacks: the **default arguments** (``FeatureVisualizer(layers)``: figures every 5th epoch, maps every 10th,
both at the last, thinned by the time budget ``overhead=0.1``; ``background`` off on the CPU), and the **full
callback every epoch** (``overhead=None``, figures and maps every epoch: kNN scalars,
neighbour grids, 2-D and 3-D t-SNE maps, projector, wrong-cluster gallery and export, confusion
matrices on every epoch), the demo's five layers, 1,000 validation digits. The fit without the callback runs first
and last; the baseline is the faster of the two (the first also pays for warming up torch).
Target (issue 16): <= 1.15 with default arguments, training on every core. In the same run, the short fits of
``short_fit.py`` (a small CNN at the issue's scale, the callback at its defaults, 8 and 30 epochs, alternated;
issue 26: <= 1.30 and <= 1.15); ``--no-short-fits`` leaves them out.

Training on every core is a CPU-only run: whatever the callback costs, training waits for. With
``--spare-core``, also training on all cores but one (``torch.set_num_threads``), as when a GPU trains
and the CPU has room: the background report then runs beside training instead of after it.

    python benchmarks/fit_overhead.py [--epochs 8] [--spare-core] [--only-default] [--no-short-fits]
    python benchmarks/fit_overhead.py --only-default --no-short-fits --default-rounds 3   # the default case alternated
    python benchmarks/fit_overhead.py --gpu [...]   # on a GPU: ResNet-18 and ViT-S/16 at 224 px (fit_overhead_gpu.py)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_featviz import FeatureVisualizer, MapOptions, OutputOptions, ResourceOptions
from lightning_featviz.demo.model import DEMO_LAYERS, ClassificationData, ImageClassifier

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # short_fit.py beside this script
from short_fit import TARGETS as SHORT_TARGETS  # noqa: E402
from short_fit import alternated, paired_ratio  # noqa: E402
from short_fit import report as short_fit_report  # noqa: E402


def fit_seconds(epochs: int, setting: str | None) -> tuple[float, list[str]]:
    """Wall time of the quick start's fit and the budget's schedule lines; ``setting``: None (without the
    callback), ``"default"`` (default arguments), ``"full"`` (every output every epoch, report in the loop)
    or ``"full-background"``."""
    pl.seed_everything(0, verbose=False)
    data = ClassificationData.digits(batch_size=32)
    every_epoch = {"overhead": None, "outputs": OutputOptions(every_n_epochs=1), "maps": MapOptions(every_n_epochs=1)}
    options = {
        None: None,
        "default": {},
        "full": {**every_epoch, "resources": ResourceOptions(background=False)},
        "full-background": {**every_epoch, "resources": ResourceOptions(background=True)},
    }[setting]
    visualizer = None if options is None else FeatureVisualizer(list(DEMO_LAYERS), **options)
    callbacks = [] if visualizer is None else [visualizer]
    with tempfile.TemporaryDirectory() as logs:
        trainer = pl.Trainer(
            max_epochs=epochs,
            logger=TensorBoardLogger(logs),
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            deterministic=True,
        )
        start = time.perf_counter()
        trainer.fit(ImageClassifier(num_classes=10), datamodule=data)
        return time.perf_counter() - start, list(visualizer.schedule) if visualizer is not None else []


ROWS = {
    "default": "default arguments",
    "full": "every output every epoch, in the loop",
    "full-background": "every output every epoch, background",
}


def measure(epochs: int, threads: int, settings: list[str]) -> tuple[dict[str, float], list[str]]:
    torch.set_num_threads(threads)
    times, schedule = {"plain_first": fit_seconds(epochs, None)[0]}, []
    for setting in settings:
        times[setting], lines = fit_seconds(epochs, setting)
        schedule = schedule or lines
    times["plain_last"] = fit_seconds(epochs, None)[0]
    return times, schedule


def default_rounds(epochs: int, rounds: int) -> str:
    """The default case in ``rounds`` alternated rounds (as the short fits), on every core: one fit on a machine
    whose speed drifts can take 10-30% longer than the next, so each round's two fits are compared (the verdict: the
    median of those ratios, as ``short_fit.py``'s), and the medians and fastest fits printed beside."""
    torch.set_num_threads(os.cpu_count() or 1)
    plain, featviz, _ = alternated(
        lambda with_callback: fit_seconds(epochs, "default" if with_callback else None), rounds
    )
    paired, fastest = paired_ratio(plain, featviz), min(featviz) / min(plain)
    medians = statistics.median(featviz) / statistics.median(plain)
    runs = " ".join(f"{p:.0f}/{f:.0f}" for p, f in zip(plain, featviz, strict=True))
    print(f"default arguments, {rounds} alternated rounds: paired {paired:.3f}, ", end="")
    print(f"ratio of medians {medians:.2f}, of fastest {fastest:.2f}   (plain/featviz s per round: {runs})")
    met = "met" if paired <= 1.15 else "NOT met"
    return f"default arguments, {rounds} rounds, paired {paired:.3f}: {met}"


def main() -> None:
    if "--gpu" in sys.argv[1:]:  # the GPU mode lives in its own script (benchmarks/ is on sys.path when run)
        from fit_overhead_gpu import main as gpu_main

        return gpu_main(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--spare-core", action="store_true", help="also train on all cores but one")
    parser.add_argument("--only-default", action="store_true", help="time the default arguments only")
    parser.add_argument("--no-short-fits", action="store_true", help="leave out the short fits of short_fit.py")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of each short fit")
    parser.add_argument(
        "--default-rounds",
        type=int,
        default=1,
        help="also the default case in alternated rounds (with --only-default: instead of the table's one fit)",
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    runs = [(f"training on all {cores} cores", cores)]
    if args.spare_core and cores > 1:
        runs.append((f"training on {cores - 1} of {cores} cores", cores - 1))
    settings = ["default"] if args.only_default else ["default", "full", "full-background"]
    print(f"load average before: {os.getloadavg()[0]:.1f} ({cores} cores)")
    verdicts = []
    alone = args.only_default and args.default_rounds > 1  # the alternated rounds stand for the table's one fit
    if not alone:
        print(f"{'fit, ' + str(args.epochs) + ' epochs':<46}{'seconds':>9}{'ratio':>8}")
    for title, threads in [] if alone else runs:
        times, schedule = measure(args.epochs, threads, settings)
        base = min(times["plain_first"], times["plain_last"])
        print(title)
        first_last = f"{times['plain_first']:>4.0f} /{times['plain_last']:>3.0f}"
        print(f"{'  no callback (first / last run)':<46}{first_last}{1.0:>8.2f}")
        for setting in settings:
            print(f"{'  ' + ROWS[setting]:<46}{times[setting]:>9.0f}{times[setting] / base:>8.2f}")
        verdicts.append(f"{title}: {'met' if times['default'] / base <= 1.15 else 'NOT met'}")
        print("  the schedule:")
        for line in schedule:
            print(f"    {line}")
    if args.default_rounds > 1:
        verdicts.append(default_rounds(args.epochs, args.default_rounds))
    short = [] if args.no_short_fits else short_fit_report(list(SHORT_TARGETS), args.rounds)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print("target: <= 1.15 with default arguments -> " + "; ".join(verdicts))
    for verdict in short:
        print(f"short fit: {verdict}")


if __name__ == "__main__":
    main()
