"""Seconds to draw (and PNG-encode) every figure of one analysed epoch of the demo, by figure kind.

The demo's model (ResNet-18 after one epoch of training), its 1,000 validation digits and five layers, k = 10.
One epoch of ``trainer.fit`` with every output (``overhead=None``, the report in the loop) records the epoch's
results, its t-SNE maps and history; then each figure kind of ``report/figures.py`` is drawn and encoded
``--repeats`` times from those same inputs, and the median is printed (map fitting is not timed: it is the same
before and after a change of how figures are drawn).

    python benchmarks/report_time.py [--repeats 3] [--inputs /tmp/report_inputs.pkl]
    python benchmarks/report_time.py --synthetic [--repeats 3]

``--synthetic`` skips the fit: the same figure kinds at the demo's sizes (1,000 points of 10 classes in five layers,
10 queries × 10 neighbours of 32-px thumbnails, a gallery of 8 rows, 8 epochs of history) drawn through
``render/``'s functions, whose signatures are the same before and after issue 24: seconds in a minute where the
fit takes many on a loaded machine.

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


def synthetic_kinds() -> dict[str, Callable[[], Iterable[np.ndarray]]]:
    """Each figure kind of one demo-sized epoch, drawn by ``render/`` from made-up inputs of the demo's sizes."""
    from lightning_featviz.render.grids import NeighbourGrid, neighbour_grid_image
    from lightning_featviz.render.maps import MapPanel, map_image
    from lightning_featviz.render.purity_charts import class_purity_image, confusion_image, purity_depth_image

    rng = np.random.default_rng(0)
    layers, names, n, k = ["input", "layer1", "layer2", "layer3", "avgpool"], [str(c) for c in range(10)], 1000, 10
    labels = np.arange(n) % 10
    angle = 2 * np.pi * labels / 10
    centres = np.stack([np.cos(angle), np.sin(angle), labels / 10], axis=1) * 4
    maps = {d: {layer: centres[:, :d] + rng.normal(size=(n, d)) for layer in layers} for d in (2, 3)}
    ringed = rng.random(n) < 0.04
    confusion = rng.dirichlet(np.full(10, 0.3), size=10) + 2 * np.eye(10)
    confusion /= confusion.sum(axis=1, keepdims=True)
    history = rng.uniform(size=(5, 8))

    def grid(rows: int, captions: bool) -> NeighbourGrid:
        return NeighbourGrid(
            title="avgpool (purity@10 0.91)",
            query_images=torch.randint(0, 255, (rows, 3, 32, 32), dtype=torch.uint8),
            neighbour_images=torch.randint(0, 255, (rows, k, 3, 32, 32), dtype=torch.uint8),
            query_labels=torch.arange(rows) % 10,
            neighbour_labels=torch.randint(0, 10, (rows, k)),
            class_names=names,
            row_captions=[
                f"#{i}: labelled 3, but 7 of its 10 neighbours are 8; model says 8 (64%)" for i in range(rows)
            ]
            if captions
            else None,
        )

    def panel(layer: str, d: int, ring: bool = False) -> MapPanel:
        return MapPanel(f"{layer}: purity@10 0.91 (map 0.89)", maps[d][layer], labels, names, ringed if ring else None)

    def map_figures() -> Iterable[np.ndarray]:
        for d in (2, 3):
            for layer in layers:
                yield map_image([panel(layer, d, d == 2 and layer == "avgpool")], f"Epoch 7: {d}-D t-SNE of {layer}")
            yield map_image([panel("input", d), panel("avgpool", d, d == 2)], f"Epoch 7: {d}-D t-SNE, input vs avgpool")
        yield map_image([panel(layer, 2) for layer in layers], "Epoch 7: every layer in network order")

    return {
        "neighbour grids": lambda: (
            [neighbour_grid_image([grid(10, False)], "Epoch 7") for _ in layers]
            + [neighbour_grid_image([grid(10, False), grid(10, False)], "Epoch 7: input vs avgpool")]
        ),
        "wrong-cluster gallery": lambda: [neighbour_grid_image([grid(8, True)], "Epoch 7: wrong cluster")],
        "neighbourhood confusion": lambda: [confusion_image(confusion, names, f"Epoch 7: {x}") for x in layers],
        "purity by class": lambda: [class_purity_image(np.diag(confusion), names, f"Epoch 7: {x}") for x in layers],
        "purity by depth": lambda: [purity_depth_image(layers, history[:, -1], history, list(range(8)), 10, 7)],
        "t-SNE maps (2-D, 3-D, first vs last, all layers)": map_figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--inputs", type=Path, default=None)
    parser.add_argument("--synthetic", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    if args.synthetic:
        print(f"package {Path(figures.__file__).parents[2]}, commit {commit or '?'}, synthetic demo-sized epoch")
        report(synthetic_kinds(), args.repeats)
        return
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
    report(kinds, args.repeats)


def report(kinds: dict[str, Callable[[], Iterable[np.ndarray]]], repeats: int) -> None:
    """Time each kind (:func:`timed`) and print a table, with the total."""
    print(f"{'figure kind':50s} {'figures':>7s} {'median s':>9s}")
    total = 0.0
    for kind, draw in kinds.items():
        seconds, count = timed(draw, repeats)
        total += seconds
        print(f"{kind:50s} {count:7d} {seconds:9.3f}")
    print(f"{'every figure of the epoch':50s} {'':7s} {total:9.3f}")


if __name__ == "__main__":
    main()
