"""Seconds to draw (and PNG-encode) every figure of one analysed epoch of the demo, by figure kind.

The demo's model (ResNet-18 after one epoch of training), its 1,000 validation digits and five layers, k = 10.
One epoch of ``trainer.fit`` with every output (``overhead=None``, the report in the loop) records the epoch's
results, its t-SNE maps and history; then each figure kind of ``report/figures.py`` is drawn and encoded
``--repeats`` times from those same inputs, and the median is printed (map fitting is not timed: it is the same
before and after a change of how figures are drawn).

    python benchmarks/report_time.py [--repeats 3] [--inputs /tmp/report_inputs.pkl]

With ``--inputs``, the recorded inputs are saved there, or loaded when the file exists (the same epoch drawn by
two versions of the package).

Run it at two commits to compare how figures are drawn: the older one unpacked beside it
(``git archive <commit> | tar -x -C /tmp/old``, then ``PYTHONPATH=/tmp/old python benchmarks/report_time.py``).
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from lightning_featviz import FeatureVisualizer, ResourceOptions
from lightning_featviz.demo.model import DEMO_LAYERS, ClassificationData, ImageClassifier
from lightning_featviz.outputs.sinks import encode_png
from lightning_featviz.report import figures, reporter


def record_inputs() -> dict[str, Any]:
    """One validate of the demo with every output; the arguments its report drew its figures from."""
    seen: dict[str, Any] = {}

    def recording(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            seen[name] = (args, kwargs)
            return function(*args, **kwargs)

        return wrapped

    for name in ("map_images", "depth_image", "gallery_image", "confusion_images"):
        setattr(reporter, name, recording(name, getattr(reporter, name)))
    pl.seed_everything(0, verbose=False)
    data = ClassificationData.digits(batch_size=32)
    visualizer = FeatureVisualizer(list(DEMO_LAYERS), overhead=None, resources=ResourceOptions(background=False))
    with tempfile.TemporaryDirectory() as logs:
        trainer = pl.Trainer(
            default_root_dir=logs,
            callbacks=[visualizer],
            logger=pl.loggers.TensorBoardLogger(logs),
            enable_progress_bar=False,
            enable_model_summary=False,
            max_epochs=1,
        )
        trainer.fit(ImageClassifier(num_classes=len(data.classes)), datamodule=data)
    return seen


def timed(draw: Callable[[], Iterable[np.ndarray]], repeats: int) -> tuple[float, int]:
    """Median seconds to draw and encode what ``draw`` yields, and how many pictures it made."""
    seconds, count = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        count = sum(1 for image in draw() if encode_png(image))
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--inputs", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.inputs is not None and args.inputs.exists():
        seen = pickle.loads(args.inputs.read_bytes())
    else:
        seen = record_inputs()
        if args.inputs is not None:
            args.inputs.write_bytes(pickle.dumps(seen))
    maps_args, maps_kwargs = seen["map_images"]
    results = seen["confusion_images"][0][0]
    rows = figures.query_rows(results.bank, None)
    kinds: dict[str, Callable[[], Iterable[np.ndarray]]] = {
        "neighbour grids": lambda: (image for _, image in figures.neighbour_grid_images(results, rows)),
        "wrong-cluster gallery": lambda: [figures.gallery_image(*seen["gallery_image"][0], **seen["gallery_image"][1])],
        "neighbourhood confusion": lambda: figures.confusion_images(results).values(),
        "purity by class": lambda: figures.class_purity_images(results).values(),
        "purity by depth": lambda: [figures.depth_image(*seen["depth_image"][0], **seen["depth_image"][1])],
        "t-SNE maps (2-D, 3-D, first vs last, all layers)": lambda: figures.map_images(
            *maps_args, **maps_kwargs
        ).values(),
    }
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(
        f"commit {commit}, threads {torch.get_num_threads()}, {len(results.bank)} samples, layers {list(results.stats)}"
    )
    print(f"{'figure kind':50s} {'figures':>7s} {'median s':>9s}")
    total = 0.0
    for kind, draw in kinds.items():
        seconds, count = timed(draw, args.repeats)
        total += seconds
        print(f"{kind:50s} {count:7d} {seconds:9.3f}")
    print(f"{'every figure of the epoch':50s} {'':7s} {total:9.3f}")


if __name__ == "__main__":
    main()
