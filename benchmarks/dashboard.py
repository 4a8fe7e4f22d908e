"""The FEATVIZ tab's size and speed: bytes per layer per epoch, the tab's load time and the slider's redraw time,
measured in a real TensorBoard and headless Chromium.

Data: synthetic arrays written through the dashboard's own writer (``write_epoch``), as the callback writes them,
for 8 epochs × 6 layers × 2,000 samples at k = 10 with 32 px thumbnails and 10 classes: per layer, 2-D and 3-D maps
(10 clusters that tighten epoch by epoch, aligned), neighbours, distances, purity, votes and 5% flagged samples.
No model is trained: the sizes and the drawing do not depend on where the arrays came from.

Targets (issue 18): <= 1 MB per layer per epoch; the tab shows the heatmap and the map within 2 s; the slider
redraws within 100 ms. Then the same run's standalone page (issue 27): its size, the time to write it, its load time
from ``file://``.

- load time: from the top page's navigation start (``performance.timeOrigin``) to the moment the tab's script has
  drawn the heatmap and the first map (``window.featviz.ready``), median of ``--loads`` fresh page loads after one
  warm-up load (the browser's cache then holds TensorBoard's own scripts, as for a person who opened it before);
  and the part of it from the start of the tab's frame (TensorBoard's own page loads before it).
- redraw: per slider step, the time from the slider's input event until the map is drawn (its data already
  fetched once per layer), median and maximum over every step of ``--sweeps`` sweeps across the 8 epochs.

    python benchmarks/dashboard.py [--samples 2000] [--layers 6] [--epochs 8] [--loads 5] [--sweeps 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from browser import browser, tensorboard, wait_for  # noqa: E402

from lightning_featviz.dashboard.data import FOLDER, LayerEpoch, Samples, read_epoch, write_epoch  # noqa: E402
from lightning_featviz.dashboard.standalone import standalone_page  # noqa: E402

READY = "return window.featviz && window.featviz.ready"
STEPS = "return window.featviz.epochs.length"


def synthetic_run(log_dir: Path, samples: int, layers: int, epochs: int, k: int, classes: int = 10) -> None:
    """Write ``epochs`` × ``layers`` of synthetic dashboard data for ``samples`` samples under ``log_dir``."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, samples)
    centres = rng.normal(scale=30, size=(classes, 3))
    thumbnails = (rng.random((samples, 32, 32, 3)) * 60 + (labels[:, None, None, None] * 19 % 255)).astype(np.uint8)
    paths = [f"val/{c}/{i:05d}.png" for i, c in enumerate(labels)]
    sample_set = Samples(np.arange(samples) * 3, labels, thumbnails, paths)
    noise = rng.normal(scale=25, size=(layers, samples, 3))
    for epoch in range(epochs):
        written = {}
        for layer in range(layers):
            spread = 1.0 - (layer + 1) * (epoch + 1) / ((layers + 1) * (epochs + 1))  # later and deeper: tighter
            coords = centres[labels] + spread * noise[layer]
            neighbours = rng.integers(0, samples, (samples, k))
            purity = (labels[neighbours] == labels[:, None]).mean(axis=1)
            flagged = rng.choice(samples, samples // 20, replace=False)
            written[f"layer{layer}"] = LayerEpoch(
                neighbours=neighbours,
                distances=np.sort(rng.random((samples, k)), axis=1),
                purity=purity,
                votes=rng.integers(0, classes, samples),
                mean_purity=float(1 - spread),
                accuracy=float(1 - spread * 0.8),
                maps={2: coords[:, :2], 3: coords},
                flagged=flagged,
                cluster=(labels[flagged] + 1) % classes,
                count=np.full(len(flagged), 7),
                own=np.full(len(flagged), 2),
            )
        predictions = np.where(rng.random(samples) < 0.8, labels, (labels + 1) % classes)
        names = [f"class {c}" for c in range(classes)]
        write_epoch(log_dir, epoch, epoch * 100, k, names, sample_set, predictions, rng.random(samples), written)


def sizes(folder: Path, layers: int, epochs: int) -> tuple[float, float]:
    """Bytes per layer per epoch: the epoch files' mean size over the layers; and the largest layer's arrays."""
    files = sorted(folder.glob("epoch_*.npz"))
    per_layer = statistics.mean(f.stat().st_size for f in files) / layers
    arrays = read_epoch(folder, files[-1].name)
    largest = max(sum(v.nbytes for key, v in arrays.items() if key.startswith(f"L{i}_")) for i in range(layers))
    return per_layer, largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--sweeps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        log_dir = Path(root) / "run"
        synthetic_run(log_dir, args.samples, args.layers, args.epochs, args.k)
        folder = log_dir / FOLDER
        per_layer, largest = sizes(folder, args.layers, args.epochs)
        once = sum(f.stat().st_size for f in folder.glob("samples_*"))
        print(f"{args.epochs} epochs x {args.layers} layers x {args.samples} samples, k = {args.k}")
        print(f"bytes per layer per epoch: {per_layer / 1e6:.3f} MB (file mean); largest layer's arrays", end=" ")
        print(f"{largest / 1e6:.3f} MB; written once (thumbnail pages, labels, paths): {once / 1e6:.2f} MB")
        loads, frames, steps, draws = [], [], [], []
        with tensorboard(Path(root), featviz_tab=True) as url, browser(1400, 1000) as driver:
            for attempt in range(args.loads + 1):
                driver.switch_to.default_content()
                driver.get("about:blank")
                driver.get(f"{url}/#featviz")
                frame = wait_for(lambda: driver.find_elements("css selector", "iframe"), "the FEATVIZ frame")[0]
                origin = driver.execute_script("return performance.timeOrigin")
                driver.switch_to.frame(frame)
                ready = wait_for(lambda: driver.execute_script(READY), "the tab to draw")
                own = ready - driver.execute_script("return performance.timeOrigin")  # from the frame's start
                if attempt:  # the first load warms the browser's cache
                    loads.append(ready - origin)
                    frames.append(own)
            for _ in range(args.sweeps):
                for position in [*range(args.epochs - 1, -1, -1)]:
                    before = driver.execute_script(STEPS)
                    driver.execute_script(
                        "const s = document.getElementById('epoch'); s.value = String(arguments[0]);"
                        "s.dispatchEvent(new Event('input'));",
                        position,
                    )
                    wait_for(lambda b=before: driver.execute_script(STEPS) > b, "the redraw")
                    time.sleep(0.05)
            steps = driver.execute_script("return window.featviz.epochs")
            draws = driver.execute_script("return window.featviz.redraws")
        load = f"median {statistics.median(loads):.0f} ms (min {min(loads):.0f}, max {max(loads):.0f})"
        print(f"tab load to heatmap + map drawn: {load}")
        print(f"  of which the FEATVIZ frame, from its own start: median {statistics.median(frames):.0f} ms")
        step = f"median {statistics.median(steps):.1f} ms, max {max(steps):.1f} ms ({len(steps)} steps)"
        print(f"slider step to map redrawn: {step}; canvas drawing alone: median {statistics.median(draws):.1f} ms")
        standalone(log_dir, args.loads)


def standalone(log_dir: Path, loads: int) -> None:
    """The tab as one file (``dashboard/standalone.py``): its size, the time to write it, and its load time from
    ``file://`` (navigation start to heatmap and map drawn, median of ``loads`` loads after a warm-up)."""
    start = time.perf_counter()
    page = standalone_page(log_dir)
    seconds = time.perf_counter() - start
    path = log_dir / "featviz.html"
    path.write_text(page, encoding="utf-8")
    times = []
    with browser(1400, 1000) as driver:
        for attempt in range(loads + 1):
            driver.get("about:blank")
            driver.get(path.as_uri())
            ready = wait_for(lambda: driver.execute_script(READY), "the standalone page to draw")
            if attempt:
                times.append(ready - driver.execute_script("return performance.timeOrigin"))
    print(f"standalone page: {len(page.encode()) / 1e6:.1f} MB, written in {seconds:.2f} s; load from file:// to")
    spread = f"min {min(times):.0f}, max {max(times):.0f}"
    print(f"  heatmap + map drawn: median {statistics.median(times):.0f} ms ({spread})")


if __name__ == "__main__":
    main()
