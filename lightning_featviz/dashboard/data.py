"""The dashboard's files: what the FEATVIZ tab of TensorBoard reads, written beside a run's event files.

Layout of ``<run log dir>/featviz_dashboard/``::

    index.json               the run: class names, k, and per epoch its layers with purity and kNN accuracy
    samples_<id>.json        a sample set: dataset indices, labels, paths, thumbnail size, tiles per page
    samples_<id>_<page>.jpg  its thumbnails, one T × T tile per sample, row-major in pages of at most
                             :data:`PAGE_TILES` tiles (JPEG): page ``row // tiles``, tile ``row % tiles``
    epoch_<epoch>.npz        one epoch, not deflated: predictions, and per layer (``L<i>_`` keys, ``i`` its
                             place in the epoch's layer list) neighbours, distances, purity, votes, maps
                             (with the rows they show where a map is of a subsample), wrong-cluster flags,
                             training dynamics (scores, label-probability trajectories, trajectories in words)

A sample set is written once and named by a hash of its indices and labels, so epochs that keep the same
samples (the usual case) share it, and a set that changes (a resumed run, a training reference) gets its own.
Every file is written to a temporary name and renamed into place, so a reader never sees half a file while
training writes; a resumed run's epochs replace or join those already listed.

Over 300 lines: the layout's types, its writer and its readers, one format in one module.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lightning_featviz.outputs.files import write_atomically

#: The folder under a run's log dir that holds the dashboard's files.
FOLDER = "featviz_dashboard"
#: Bumped when the layout changes in a way an older reader cannot read.
FORMAT_VERSION = 2
#: JPEG quality of the thumbnail pages (1,024 noise thumbnails of 32 px: 256 KB, where quality 90 takes 360 KB and
#: a PNG 2.2 MB; ``python benchmarks/scale.py`` prints what a 20,000-sample run writes).
ATLAS_QUALITY = 85
#: Thumbnails per page (32 × 32 tiles): a page is built and encoded alone, so writing a sample set of any size
#: holds one page's pixels (3 MB at 32 px), and the tab loads only the pages it shows.
PAGE_TILES = 1024


@dataclass
class Samples:
    """A set of N samples shown by the dashboard.

    Attributes:
        indices: (N,) dataset indices.
        labels: (N,) class ids.
        thumbnails: (N, T, T, 3) uint8 RGB, or None when the samples are not images.
        paths: N file paths, or None.
    """

    indices: np.ndarray
    labels: np.ndarray
    thumbnails: np.ndarray | None = None
    paths: Sequence[str] | None = None

    def key(self) -> str:
        """A name for this set: a hash of its indices and labels."""
        digest = hashlib.sha1(np.ascontiguousarray(self.indices, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return digest.hexdigest()[:12]


@dataclass
class LayerEpoch:
    """One layer at one epoch, for N query samples and their k neighbours.

    Attributes:
        neighbours: (N, k) rows of the reference sample set, nearest first.
        distances: (N, k) their distances.
        purity: (N,) share of each sample's neighbours with its label.
        votes: (N,) majority class of the neighbours.
        mean_purity: the layer's kNN purity.
        accuracy: the layer's kNN accuracy (share of votes equal to the label).
        maps: dims -> (M, dims) aligned t-SNE coordinates (absent on epochs without maps).
        map_rows: (M,) the rows the maps show (a large bank's subsample), None when M = N, every row.
        flagged: (F,) rows in the wrong cluster, strongest first.
        cluster: (F,) the class each flagged row sits among.
        count: (F,) how many of its k neighbours hold that class.
        own: (F,) how many hold its own label.
        dynamics: (N,) the dynamics score of each sample (NaN: not tracked), the label-issue layer only.
        trajectory: (E, N) each sample's probability of its label at the (E,) ``trajectory_epochs`` (NaN: unseen).
        words: N phrases, what each sample's predictions did over those epochs (``""``: not tracked), or None.
    """

    neighbours: np.ndarray
    distances: np.ndarray
    purity: np.ndarray
    votes: np.ndarray
    mean_purity: float
    accuracy: float
    maps: dict[int, np.ndarray] = field(default_factory=dict)
    map_rows: np.ndarray | None = None
    flagged: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    cluster: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    count: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    own: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    dynamics: np.ndarray | None = None
    trajectory: np.ndarray | None = None
    trajectory_epochs: np.ndarray | None = None
    words: Sequence[str] | None = None


def replace_atomically(path: Path, data: bytes, durable: bool = False) -> None:
    """Write ``data`` to ``path`` whole or not at all (:func:`~lightning_featviz.outputs.files.write_atomically`)."""
    write_atomically(path, data, durable)


def atlas_page(thumbnails: np.ndarray) -> Image.Image:
    """(P, T, T, 3) thumbnails, P <= :data:`PAGE_TILES`, tiled row-major into one square page of
    ``sqrt(PAGE_TILES)`` tiles a side (a short last page is cut after its last row)."""
    count, size = len(thumbnails), thumbnails.shape[1]
    columns = math.isqrt(PAGE_TILES)
    rows = math.ceil(count / columns)
    padded = np.zeros((rows * columns, size, size, 3), np.uint8)
    padded[:count] = thumbnails
    grid = padded.reshape(rows, columns, size, size, 3).transpose(0, 2, 1, 3, 4).reshape(rows * size, -1, 3)
    return Image.fromarray(grid)


def write_samples(folder: Path, samples: Samples) -> str:
    """Write ``samples`` (once: an existing set of the same key is kept); return its key."""
    key = samples.key()
    if (folder / f"samples_{key}.json").exists():
        return key
    description: dict[str, Any] = {
        "indices": [int(i) for i in samples.indices],
        "labels": [int(i) for i in samples.labels],
        "paths": None if samples.paths is None else [str(p) for p in samples.paths],
        "thumbnail": 0,
        "columns": 0,
        "tiles": 0,
    }
    thumbnails = samples.thumbnails
    if thumbnails is not None and len(thumbnails):
        for page, start in enumerate(range(0, len(thumbnails), PAGE_TILES)):
            buffer = io.BytesIO()
            atlas_page(thumbnails[start : start + PAGE_TILES]).save(buffer, format="JPEG", quality=ATLAS_QUALITY)
            replace_atomically(folder / f"samples_{key}_{page}.jpg", buffer.getvalue())
        description |= {"thumbnail": int(thumbnails.shape[1]), "columns": math.isqrt(PAGE_TILES), "tiles": PAGE_TILES}
    replace_atomically(folder / f"samples_{key}.json", json.dumps(description).encode())
    return key


def index_type(rows: np.ndarray) -> type[np.unsignedinteger[Any]] | type[np.int32]:
    """The smallest type that holds these non-negative integers (rows, classes): uint16 below 65,536, else int32."""
    return np.uint16 if rows.size == 0 or int(rows.max()) < 2**16 else np.int32


def layer_arrays(prefix: str, layer: LayerEpoch) -> dict[str, np.ndarray]:
    """A layer's arrays under ``prefix`` keys, in their stored types."""
    arrays: dict[str, np.ndarray] = {
        f"{prefix}neighbours": layer.neighbours.astype(index_type(layer.neighbours)),
        f"{prefix}distances": layer.distances.astype(np.float16),
        f"{prefix}purity": layer.purity.astype(np.float16),
        f"{prefix}votes": layer.votes.astype(index_type(layer.votes)),
        f"{prefix}flagged": layer.flagged.astype(np.int32),
        f"{prefix}cluster": layer.cluster.astype(np.int32),
        f"{prefix}count": layer.count.astype(np.int16),
        f"{prefix}own": layer.own.astype(np.int16),
    }
    arrays |= {f"{prefix}map{dims}": coords.astype(np.float32) for dims, coords in layer.maps.items()}
    if layer.map_rows is not None and layer.maps:
        arrays[f"{prefix}maprows"] = layer.map_rows.astype(np.int32)
    if layer.dynamics is not None and layer.trajectory is not None and layer.trajectory_epochs is not None:
        arrays[f"{prefix}dynamics"] = layer.dynamics.astype(np.float32)  # ranks near 1 stay apart
        arrays[f"{prefix}trajectory"] = layer.trajectory.astype(np.float16)
        arrays[f"{prefix}trajepochs"] = layer.trajectory_epochs.astype(np.int32)
    if layer.words is not None:  # a few distinct phrases (classes × epochs): each sample's is a code into them
        phrases, codes = np.unique(np.asarray(layer.words, dtype=str), return_inverse=True)
        arrays[f"{prefix}phrases"], arrays[f"{prefix}words"] = phrases, codes.astype(index_type(codes))
    return arrays


def read_index(folder: Path) -> dict[str, Any]:
    """The run's ``index.json``, or an empty index where none is written yet (not checked: :func:`checked_index`)."""
    path = folder / "index.json"
    if not path.exists():
        return {"version": FORMAT_VERSION, "k": 0, "class_names": [], "epochs": []}
    index: dict[str, Any] = json.loads(path.read_text())
    return index


def checked_index(index: Any) -> dict[str, Any]:
    """``index`` if it has the layout of an ``index.json``, else a ``ValueError`` that says where it does not."""
    if not isinstance(index, dict) or not isinstance(index.get("epochs"), list):
        raise ValueError("expected an object with a list of `epochs`")
    if not isinstance(index.get("class_names"), list) or not isinstance(index.get("k"), int):
        raise ValueError("expected `class_names` (a list) and `k` (a number)")
    fields = {"epoch": int, "step": int, "file": str, "samples": str, "reference": str, "layers": list}
    for number, entry in enumerate(index["epochs"]):
        entry = entry if isinstance(entry, dict) else {}
        wrong = [name for name, kind in fields.items() if not isinstance(entry.get(name), kind)]
        layers = entry.get("layers") or []
        if not wrong and not all(isinstance(layer, dict) and isinstance(layer.get("name"), str) for layer in layers):
            wrong = ["layers"]
        if wrong:
            raise ValueError(f"entry {number} of `epochs` lacks or mistypes {wrong}")
    return index


def write_epoch(
    log_dir: str | Path,
    epoch: int,
    step: int,
    k: int,
    class_names: Sequence[str],
    samples: Samples,
    predictions: np.ndarray,
    confidences: np.ndarray,
    layers: Mapping[str, LayerEpoch],
    reference: Samples | None = None,
) -> Path:
    """Write one epoch for the dashboard under ``log_dir/featviz_dashboard``; return that folder.

    Args:
        log_dir: the run's log dir (where its TensorBoard event files are).
        epoch: the epoch; written again, it replaces the earlier entry (a resumed run).
        step: the global step the epoch was logged at.
        k: neighbours per sample.
        class_names: C names of the class ids.
        samples: the N query samples.
        predictions: (N,) the model's predicted class, -1 where unknown.
        confidences: (N,) its probability, NaN where unknown.
        layers: layer name -> its results, in layer order.
        reference: what the neighbours are rows of, when not ``samples`` itself (a training reference).
    """
    folder = Path(log_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    sample_key = write_samples(folder, samples)
    reference_key = write_samples(folder, reference) if reference is not None else sample_key
    arrays: dict[str, np.ndarray] = {
        "predictions": np.asarray(predictions).astype(np.int32),
        "confidences": np.asarray(confidences).astype(np.float16),
    }
    for i, layer in enumerate(layers.values()):
        arrays |= layer_arrays(f"L{i}_", layer)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # deflated: 30% smaller, 7-10 ms more per epoch (issue 26)
    name = f"epoch_{epoch:04d}.npz"
    replace_atomically(folder / name, buffer.getvalue())
    try:
        index = checked_index(read_index(folder))
    except (OSError, ValueError) as error:  # cut short by a kill or a full disk, or not ours
        warnings.warn(
            f"FeatureVisualizer: {folder / 'index.json'} does not read ({error}); it is written anew from epoch "
            f"{epoch} on (the files of earlier epochs stay, no longer listed).",
            stacklevel=2,
        )
        index = {"version": FORMAT_VERSION, "k": 0, "class_names": [], "epochs": []}
    entry = {
        "epoch": int(epoch),
        "step": int(step),
        "file": name,
        "samples": sample_key,
        "reference": reference_key,
        "layers": [
            {
                "name": layer_name,
                "purity": _finite(layer.mean_purity),
                "accuracy": _finite(layer.accuracy),
                "maps": sorted(layer.maps),
                "flagged": len(layer.flagged),
            }
            for layer_name, layer in layers.items()
        ],
    }
    epochs = [e for e in index["epochs"] if e["epoch"] != epoch] + [entry]
    index |= {"version": FORMAT_VERSION, "k": int(k), "class_names": [str(c) for c in class_names]}
    index["epochs"] = sorted(epochs, key=lambda e: e["epoch"])
    replace_atomically(folder / "index.json", json.dumps(index).encode(), durable=True)
    return folder


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def read_epoch(folder: Path, name: str) -> dict[str, np.ndarray]:
    """Every array of one epoch file (``name`` as listed in the index)."""
    with np.load(folder / name, allow_pickle=False) as stored:
        return {key: stored[key] for key in stored.files}


def find_runs(log_dir: str | Path) -> dict[str, Path]:
    """Runs under ``log_dir`` that hold dashboard files: run name (its folder relative to ``log_dir``, as
    TensorBoard names runs; ``.`` for ``log_dir`` itself) -> its dashboard folder."""
    root = Path(log_dir)
    runs: dict[str, Path] = {}
    for parent, folders, _ in os.walk(root):
        if FOLDER in folders and (Path(parent) / FOLDER / "index.json").exists():
            name = Path(parent).relative_to(root).as_posix()
            runs[name] = Path(parent) / FOLDER
        folders[:] = sorted(f for f in folders if f != FOLDER and not f.startswith("."))
    return dict(sorted(runs.items()))
