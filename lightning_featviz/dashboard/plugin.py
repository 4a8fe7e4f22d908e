"""The FEATVIZ tab: a TensorBoard plugin that serves the dashboard's files of every run under the log dir.

TensorBoard finds it through the package's ``tensorboard_plugins`` entry point and shows its frontend,
``static/index.js`` (an ES module, no build step), in an iframe whose relative fetches reach the routes below.
Routes answer JSON (JPEG for thumbnails), every one through TensorBoard's ``http_util.Respond`` (which adds
``X-Content-Type-Options: nosniff``): a bad or missing argument answers 400 with the reason, a path outside the
run's dashboard folder 403, a file that does not read 500 naming the file; a broken run is listed with its reason
and never hides the others.

Over 300 lines: one method per route and the checks every route shares (arguments, confinement, unreadable files).
"""

from __future__ import annotations

import json
import math
import re
import time
import zipfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import Request, Response

from lightning_featviz.dashboard.data import checked_index, find_runs, read_epoch, read_index

PLUGIN_NAME = "featviz"
STATIC = Path(__file__).parent / "static"
#: Seconds a search of the log dir for runs stays valid (a new run appears after at most this long).
RUNS_TTL = 3.0
STATIC_TYPES = {"index.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}


class BadRequest(ValueError):
    """A request the routes cannot answer; its message goes back with status 400."""


class Forbidden(ValueError):
    """A path that lies outside the run's dashboard folder; its message goes back with status 403."""


class Unreadable(ValueError):
    """A file of the run that does not read (cut short, not the format); its message goes back with status 500."""


def _number(value: str, name: str) -> int:
    """``value`` as a whole number written in ASCII digits, or :class:`BadRequest`."""
    if not re.fullmatch(r"[0-9]+", value):
        raise BadRequest(f"Expected `{name}` to be a whole number, but got {value!r}.")
    return int(value)


def _json_response(request: Request, body: Any, status: int = 200) -> Response:
    return http_util.Respond(request, json.dumps(body, allow_nan=False), "application/json", code=status)


def _answer(request: Request, route: Callable[[], Response]) -> Response:
    """``route()``'s response, or the error it raised as JSON with its status."""
    try:
        return route()
    except BadRequest as error:
        return _json_response(request, {"error": str(error)}, 400)
    except Forbidden as error:
        return _json_response(request, {"error": str(error)}, 403)
    except Unreadable as error:
        return _json_response(request, {"error": str(error)}, 500)


def _rounded(values: np.ndarray, digits: int = 4) -> list[Any]:
    """A float array as nested lists, rounded, NaN as None (JSON has no NaN)."""
    rounded = np.round(values.astype(np.float64), digits)
    return [None if isinstance(v, float) and math.isnan(v) else v for v in rounded.tolist()]


def _words(arrays: dict[str, np.ndarray], prefix: str, row: int) -> str | None:
    """What sample ``row``'s predictions did over the kept epochs, in words, at the layer of ``prefix`` (None where
    the history does not track it, the layer has no training dynamics or the file predates the words)."""
    if f"{prefix}words" not in arrays:
        return None
    return str(arrays[f"{prefix}phrases"][int(arrays[f"{prefix}words"][row])]) or None


def _trajectory(entry: dict[str, Any], arrays: dict[str, np.ndarray], row: int) -> dict[str, Any] | None:
    """Sample ``row``'s probability of its given label per kept epoch, at the epoch's label-issue layer (the one
    whose training dynamics it holds), and in words: ``{"layer", "epochs", "probability", "words"}`` (None: not
    seen; no words), or None."""
    for i, layer in enumerate(entry["layers"]):
        if f"L{i}_trajectory" in arrays:
            probability = _rounded(arrays[f"L{i}_trajectory"][:, row], 3)
            epochs, words = arrays[f"L{i}_trajepochs"].tolist(), _words(arrays, f"L{i}_", row)
            return {"layer": layer["name"], "epochs": epochs, "probability": probability, "words": words}
    return None


@lru_cache(maxsize=64)
def _epoch_arrays(path: str, stamp: int) -> dict[str, np.ndarray]:
    """An epoch file's arrays; ``stamp`` (its modification time) makes a rewritten file read again."""
    folder, name = Path(path).parent, Path(path).name
    return read_epoch(folder, name)


@lru_cache(maxsize=16)
def _json_file(path: str, stamp: int) -> Any:
    return json.loads(Path(path).read_text())


def _read(path: Path, read: Callable[[], Any]) -> Any:
    """``read()``, with any failure to read ``path`` as :class:`Unreadable` naming the file."""
    try:
        return read()
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as error:  # JSON's: ValueError
        raise Unreadable(f"{path.name} of this run does not read ({type(error).__name__}: {error}).") from error


class FeatvizPlugin(base_plugin.TBPlugin):
    """TensorBoard's FEATVIZ tab (plugin name ``featviz``).

    Args:
        context: TensorBoard's plugin context; its ``logdir`` is searched for runs with dashboard files.
    """

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext):
        self.log_dir = Path(context.logdir or ".")
        self._found: tuple[float, dict[str, Path]] | None = None

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="FEATVIZ", disable_reload=True)

    def is_active(self) -> bool:
        return bool(self._runs())

    def get_plugin_apps(self) -> dict[str, Callable[..., Any]]:
        routes: dict[str, Callable[[Request], Any]] = {
            "/runs": self.runs,
            "/run": self.run,
            "/samples": self.samples,
            "/layer": self.layer,
            "/inspect": self.inspect,
            "/wrong": self.wrong,
        }
        apps: dict[str, Callable[..., Any]] = {f"/{name}": self._static(name) for name in STATIC_TYPES}
        apps["/atlas"] = self._atlas
        apps |= {path: self._json(route) for path, route in routes.items()}
        return apps

    # ------------------------------------------------------------------ plumbing

    def _static(self, name: str) -> Callable[..., Any]:
        @Request.application
        def serve(request: Request) -> Response:
            return http_util.Respond(request, (STATIC / name).read_bytes(), STATIC_TYPES[name])

        return serve

    def _json(self, route: Callable[[Request], Any]) -> Callable[..., Any]:
        @Request.application
        def serve(request: Request) -> Response:
            return _answer(request, lambda: _json_response(request, route(request)))

        return serve

    def _runs(self) -> dict[str, Path]:
        """The runs with dashboard files, looked up at most every ``RUNS_TTL`` seconds (a log dir can be large)."""
        now = time.monotonic()
        if self._found is None or now - self._found[0] > RUNS_TTL:
            self._found = (now, find_runs(self.log_dir))
        return self._found[1]

    def _folder(self, request: Request) -> Path:
        return self._folder_of(request.args.get("run"))

    def _folder_of(self, run: str | None) -> Path:
        """The dashboard folder of ``run``, checked to lie inside the log dir."""
        runs = self._runs()
        if run not in runs:
            raise BadRequest(f"Expected `run` to be one of {sorted(runs)}, but got {run!r}.")
        folder = runs[run].resolve()
        if not folder.is_relative_to(self.log_dir.resolve()):
            raise Forbidden(f"The dashboard folder of run {run!r} lies outside the log dir (a link?); it is not read.")
        return folder

    def _index(self, folder: Path) -> dict[str, Any]:
        return _read(folder / "index.json", lambda: checked_index(read_index(folder)))

    def _entry(self, request: Request, index: dict[str, Any]) -> dict[str, Any]:
        epochs = {e["epoch"]: e for e in index["epochs"]}
        value = request.args.get("epoch", "")
        if not re.fullmatch(r"-?[0-9]+", value) or int(value) not in epochs:
            raise BadRequest(f"Expected `epoch` to be one of {sorted(epochs)}, but got {value!r}.")
        return epochs[int(value)]

    @staticmethod
    def _layer_of(entry: dict[str, Any], name: str | None) -> int:
        names = [layer["name"] for layer in entry["layers"]]
        if name not in names:
            raise BadRequest(f"Expected `layer` to be one of {names} at epoch {entry['epoch']}, but got {name!r}.")
        return names.index(name)

    @staticmethod
    def _arrays(folder: Path, entry: dict[str, Any]) -> dict[str, np.ndarray]:
        path = (folder / entry["file"]).resolve()
        if not path.is_relative_to(folder):
            raise Forbidden(f"The index of this run names {entry['file']!r}, outside its dashboard folder; not read.")
        return _read(path, lambda: _epoch_arrays(str(path), path.stat().st_mtime_ns))

    @staticmethod
    def _samples(folder: Path, key: str) -> dict[str, Any]:
        path = folder / f"samples_{key}.json"
        if not re.fullmatch(r"[0-9a-f]{12}", key) or not path.exists():
            raise BadRequest(f"Expected `key` to name a sample set of this run, but got {key!r}.")
        described: dict[str, Any] = _read(path, lambda: _json_file(str(path), path.stat().st_mtime_ns))
        if described["thumbnail"] and "tiles" not in described:  # format 1: one atlas of every tile, page 0
            described = described | {"tiles": len(described["indices"])}
        return described

    # ------------------------------------------------------------------ routes

    def runs(self, request: Request) -> list[dict[str, Any]]:
        """Every run with dashboard files: its name and analysed epochs; a run whose files do not read is listed
        with no epoch and ``error``, its reason."""
        listed = []
        for name in self._runs():
            try:
                listed.append(
                    {"run": name, "epochs": [e["epoch"] for e in self._index(self._folder_of(name))["epochs"]]}
                )
            except (Unreadable, Forbidden) as error:
                listed.append({"run": name, "epochs": [], "error": str(error)})
        return listed

    def run(self, request: Request) -> dict[str, Any]:
        """A run's index: class names, k, and per epoch its layers' purity and kNN accuracy (the heatmap)."""
        return self._index(self._folder(request))

    def samples(self, request: Request) -> dict[str, Any]:
        """A sample set: dataset indices, labels, paths, thumbnail size and atlas columns."""
        return self._samples(self._folder(request), request.args.get("key", ""))

    @Request.application  # type: ignore[arg-type]
    def _atlas(self, request: Request) -> Response:
        return _answer(request, lambda: self._atlas_page(request))

    def _atlas_page(self, request: Request) -> Response:
        folder = self._folder(request)
        key = request.args.get("key", "")
        self._samples(folder, key)
        page = _number(request.args.get("page", "0"), "page")
        path = folder / f"samples_{key}_{page}.jpg"
        if not path.exists() and page == 0:
            path = folder / f"samples_{key}.jpg"  # format 1: one atlas
        if not path.exists():
            raise BadRequest(f"Expected `page` to be a page of thumbnails of this sample set, but got {page}.")
        data = _read(path, path.read_bytes)
        # a set's file never changes
        return http_util.Respond(request, data, "image/jpeg", headers=[("Cache-Control", "private, max-age=86400")])

    def layer(self, request: Request) -> dict[str, Any]:
        """One layer at every epoch (for the map's slider): maps (with the rows they show, null for every row),
        per-sample purity, predictions, flags."""
        folder = self._folder(request)
        name = request.args.get("layer")
        out, errors = [], []
        for entry in self._index(folder)["epochs"]:
            names = [layer["name"] for layer in entry["layers"]]
            if name not in names:
                continue
            try:
                arrays, prefix = self._arrays(folder, entry), f"L{names.index(name)}_"
            except (Unreadable, Forbidden) as error:  # that epoch only: the others are served
                errors.append({"epoch": entry["epoch"], "error": str(error)})
                continue
            maps = {
                d: _rounded(arrays[f"{prefix}map{d}"].reshape(-1), 3) for d in (2, 3) if f"{prefix}map{d}" in arrays
            }
            out.append(
                {
                    "epoch": entry["epoch"],
                    "samples": entry["samples"],
                    "maps": maps,
                    "rows": arrays[f"{prefix}maprows"].tolist() if f"{prefix}maprows" in arrays else None,
                    "purity": _rounded(arrays[f"{prefix}purity"], 3),
                    "predictions": arrays["predictions"].tolist(),
                    "flagged": arrays[f"{prefix}flagged"].tolist(),
                    "cluster": arrays[f"{prefix}cluster"].tolist(),
                }
            )
        if not out and errors:
            raise Unreadable("; ".join(error["error"] for error in errors))
        if not out:
            raise BadRequest(f"Expected `layer` to be a layer of this run, but got {name!r}.")
        return {"layer": name, "epochs": out, "errors": errors}

    def inspect(self, request: Request) -> dict[str, Any]:
        """One sample's k neighbours at every layer of one epoch (rows of the epoch's reference set)."""
        folder = self._folder(request)
        entry = self._entry(request, self._index(folder))
        arrays = self._arrays(folder, entry)
        value, count = request.args.get("row", ""), len(arrays["predictions"])
        if not re.fullmatch(r"[0-9]+", value) or int(value) >= count:  # (not int(): it reads "²" and "-1")
            raise BadRequest(f"Expected `row` to be a row in [0, {count}), but got {value!r}.")
        row = int(value)
        layers = [
            {
                "name": layer["name"],
                "neighbours": arrays[f"L{i}_neighbours"][row].tolist(),
                "distances": _rounded(arrays[f"L{i}_distances"][row], 3),
                "purity": _rounded(arrays[f"L{i}_purity"][row : row + 1], 3)[0],
            }
            for i, layer in enumerate(entry["layers"])
        ]
        prediction = int(arrays["predictions"][row])
        return {
            "epoch": entry["epoch"],
            "row": row,
            "prediction": prediction,
            "reference": entry["reference"],
            "layers": layers,
            "trajectory": _trajectory(entry, arrays, row),
        }

    def wrong(self, request: Request) -> dict[str, Any]:
        """The samples in the wrong cluster of one layer and epoch, strongest first, with reasons and neighbours (and,
        at the label-issue layer, each one's dynamics score and trajectory in words)."""
        folder = self._folder(request)
        index = self._index(folder)
        entry = self._entry(request, index)
        i = self._layer_of(entry, request.args.get("layer"))
        arrays, names = self._arrays(folder, entry), index["class_names"]
        samples = self._samples(folder, entry["samples"])
        k = int(index["k"])
        rows, dynamics = [], arrays.get(f"L{i}_dynamics")
        for row, cluster, count, own in zip(
            arrays[f"L{i}_flagged"].tolist(),
            arrays[f"L{i}_cluster"].tolist(),
            arrays[f"L{i}_count"].tolist(),
            arrays[f"L{i}_own"].tolist(),
            strict=True,
        ):
            label = samples["labels"][row]
            rows.append(
                {
                    "row": row,
                    "index": samples["indices"][row],
                    "path": samples["paths"][row] if samples["paths"] else None,
                    "label": label,
                    "cluster": cluster,
                    "count": count,
                    "strength": round(count / k, 4),
                    "prediction": int(arrays["predictions"][row]),
                    "reason": (
                        f"{count} of its {k} nearest neighbours are {names[cluster]!r}; "
                        f"{own} share its label {names[label]!r}"
                    ),
                    "neighbours": arrays[f"L{i}_neighbours"][row].tolist(),
                    "dynamics": _rounded(dynamics[row : row + 1])[0] if dynamics is not None else None,
                    "words": _words(arrays, f"L{i}_", row),
                }
            )
        return {
            "epoch": entry["epoch"],
            "layer": entry["layers"][i]["name"],
            "reference": entry["reference"],
            "rows": rows,
        }
