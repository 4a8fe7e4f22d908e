"""A large bank with default arguments: report seconds and bytes written per epoch at 20,000 samples,
and a 50,000-sample run that completes within the memory budget.

The bank of ``benchmarks/memory.py --large``: 64x64 images made from their index (no download), ten
classes, five layers (input and four conv stages of a small CNN), every sample kept
(``max_samples`` = the dataset). Everything else is the callback's defaults, so ``trainer.validate``
makes every output: kNN scalars, grids, confusion, gallery and label issues, 2-D and 3-D maps of a
stratified subsample (``map_samples=2000``), their quality, the projector. ``validate`` runs three
times in one process (the first epoch fits maps cold, the next ones warm, as in ``fit``; between runs the
weights are nudged, so every layer's vectors change as they do from epoch to epoch) after one run without
the callback; the report's seconds per epoch are a run's wall time minus the run without the callback (so
they include capture), the bytes are what the run wrote under the log dir (new and rewritten files in
full, the event file's growth).

Targets (issue 16): <= 30 s of report and <= 20 MB written per epoch at 20,000 samples; at 50,000 the
run completes within the default ``memory_budget_mb`` (2048 MiB of bank).

    python benchmarks/scale.py [--samples 20000] [--large 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

sys.path.insert(0, str(Path(__file__).parent))
from memory import NoiseImages, SmallCNN  # noqa: E402

from lightning_featviz import FeatureVisualizer  # noqa: E402

LAYERS = ["input", "stages.0", "stages.1", "stages.2", "stages.3"]


def snapshot(folder: str) -> dict[Path, os.stat_result]:
    return {path: path.stat() for path in Path(folder).rglob("*") if path.is_file()}


def bytes_written(before: dict[Path, os.stat_result], after: dict[Path, os.stat_result]) -> int:
    """Bytes a run wrote: new files and files replaced or rewritten in full; what TensorBoard's event files
    grew by (they are only appended to)."""
    total = 0
    for path, now in after.items():
        old = before.get(path)
        if old is None or old.st_ino != now.st_ino or old.st_mtime_ns != now.st_mtime_ns:
            appended = old is not None and old.st_ino == now.st_ino and "tfevents" in path.name
            total += now.st_size - old.st_size if appended else now.st_size
    return total


def validate_runs(samples: int, runs: int) -> dict:
    """Seconds and bytes of ``runs`` validate calls with the callback, after one without."""
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(NoiseImages(samples), batch_size=250)
    model = SmallCNN()
    with tempfile.TemporaryDirectory() as logs:
        plain = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
        start = time.perf_counter()
        plain.validate(model, loader, verbose=False)
        without = time.perf_counter() - start
        visualizer = FeatureVisualizer(LAYERS, max_samples=samples)
        trainer = pl.Trainer(
            logger=TensorBoardLogger(logs),
            callbacks=[visualizer],
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        seconds, written = [], []
        for run in range(runs):
            if run:  # a training step's worth of change: every layer's vectors differ, as from epoch to epoch
                with torch.no_grad():
                    for parameter in model.parameters():
                        parameter.mul_(1 + 0.02 * torch.randn_like(parameter))
            before = snapshot(logs)
            start = time.perf_counter()
            trainer.validate(model, loader, verbose=False)
            seconds.append(time.perf_counter() - start)
            written.append(bytes_written(before, snapshot(logs)))
    return {
        "without_s": without,
        "with_s": seconds,
        "bytes": written,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "analysed_layers": len({row["layer"] for row in visualizer.history}),
        "budget_mib": visualizer.resources.memory_budget_mb,
    }


def measured(samples: int, runs: int) -> dict:
    """``validate_runs`` in a fresh process (its peak resident memory is its own)."""
    command = [sys.executable, __file__, "--run", str(samples), str(runs)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--large", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--run", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(validate_runs(*args.run)))
        return
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # each case as it is measured
    print(f"threads: {torch.get_num_threads()}, load average before: {os.getloadavg()[0]:.1f}")
    small = measured(args.samples, args.runs)
    print(f"{args.samples} samples x {len(LAYERS)} layers, defaults (validate: every output)")
    print(f"  validate without the callback: {small['without_s']:.1f} s")
    report = [s - small["without_s"] for s in small["with_s"]]
    for epoch, (extra, written) in enumerate(zip(report, small["bytes"], strict=True)):
        print(f"  epoch {epoch}: report {extra:6.1f} s, written {written / 1e6:6.1f} MB")
    warm = report[1:] or report
    worst_bytes = max(small["bytes"]) / 1e6
    print(
        f"target: report <= 30 s per epoch -> {'met' if max(warm) <= 30 else 'NOT met'} "
        f"(warm epochs, max {max(warm):.1f} s; first epoch {report[0]:.1f} s)"
    )
    print(
        f"target: <= 20 MB written per epoch -> {'met' if worst_bytes <= 20 else 'NOT met'} (max {worst_bytes:.1f} MB)"
    )
    large = measured(args.large, 1)
    complete = large["analysed_layers"] == len(LAYERS)
    print(
        f"{args.large} samples: validate with every output in {large['with_s'][0]:.0f} s "
        f"(without the callback {large['without_s']:.0f} s), peak resident {large['peak_mib']:.0f} MiB, "
        f"{large['bytes'][0] / 1e6:.1f} MB written, {large['analysed_layers']} of {len(LAYERS)} layers analysed"
    )
    verdict = "met" if complete else "NOT met"
    print(f"target: the {args.large}-sample run completes within memory_budget_mb={large['budget_mib']:g} -> {verdict}")


if __name__ == "__main__":
    main()
