"""The FEATVIZ tab as one HTML file: the tab's own frontend (``static/index.js``, ``static/style.css``) with the
answers of the plugin's routes for one run written into the page, so it opens from ``file://`` (or inside a
tracker that shows HTML: a W&B ``wandb.Html``, an MLflow artifact) with no server.

The answers are the plugin's own (:class:`~lightning_featviz.dashboard.plugin.FeatvizPlugin` through werkzeug's
test client), so the page shows what the tab shows: the heatmap, the maps with the epoch slider, the inspector and
the wrong-cluster review with its exports. The inspector's route, one answer per sample and epoch, is carried as each
epoch's arrays in their stored types ((N, k) neighbour rows, distances; (N,) purity; the label-issue layer's (E, N)
label probability per kept epoch and (N,) codes into its phrases in words), from which
``static/standalone.js`` answers it as the route does; a thumbnail atlas page is a ``data:`` URL. The whole is
gzip-compressed JSON in base64 (browsers unpack it with ``DecompressionStream``).
"""

from __future__ import annotations

import base64
import gzip
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

from lightning_featviz.dashboard.data import find_runs
from lightning_featviz.dashboard.plugin import STATIC, FeatvizPlugin

#: The most analysed epochs a page holds (its size grows with them: about 1 MB per epoch of 2,000 samples and 5
#: layers, measured with random arrays, which do not compress).
MAX_EPOCHS = 20
#: The page's name in a run's log folder.
TAB_PAGE = "featviz_tab.html"


def _encoded(values: np.ndarray) -> tuple[str, str]:
    """An array as it is stored (``float16``, ``uint16`` or ``int32``): its little-endian type and base64 bytes."""
    array = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
    kind = {np.dtype(np.float16): "<f2", np.dtype(np.uint16): "<u2"}.get(values.dtype, "<i4")
    if kind == "<i4":
        array = array.astype("<i4")
    return kind, base64.b64encode(array.tobytes()).decode("ascii")


def _get(client: Client, route: str, **params: Any) -> Any:
    """The plugin's answer to ``route`` (JSON, or bytes for the atlas); a route's error raises with its message."""
    response = client.get(f"/{route}", query_string={key: str(value) for key, value in params.items()})
    if response.status_code != 200:
        raise ValueError(f"The FEATVIZ route {route} {params} answered {response.status_code}: {response.get_data()!r}")
    return response.get_data() if route == "atlas" else json.loads(response.get_data())


def _inspect_arrays(plugin: FeatvizPlugin, folder: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """One epoch's inspector: per layer its (N, k) neighbour rows and distances and (N,) purity, encoded; the
    label-issue layer's (E, N) label probability per kept epoch and (N,) codes into its phrases in words."""
    arrays = plugin._arrays(folder, entry)
    layers = [
        {
            "name": layer["name"],
            "neighbours": _encoded(arrays[f"L{i}_neighbours"]),
            "distances": _encoded(arrays[f"L{i}_distances"]),
            "purity": _encoded(arrays[f"L{i}_purity"]),
        }
        for i, layer in enumerate(entry["layers"])
    ]
    found = {"reference": entry["reference"], "predictions": arrays["predictions"].tolist(), "layers": layers}
    for i, layer in enumerate(entry["layers"]):  # the label-issue layer's: (E, N) label probability, N words
        if f"L{i}_trajectory" in arrays:
            words = (
                (_encoded(arrays[f"L{i}_words"]), arrays[f"L{i}_phrases"].tolist()) if f"L{i}_words" in arrays else None
            )
            found["trajectory"] = {
                "layer": layer["name"],
                "epochs": arrays[f"L{i}_trajepochs"].tolist(),
                "probability": _encoded(arrays[f"L{i}_trajectory"]),
                "words": words,
            }
    return found


def shown_epochs(epochs: list[int], most: int) -> list[int]:
    """At most ``most`` of the analysed ``epochs`` (ascending), evenly spread, the first and the last among them."""
    if len(epochs) <= most:
        return epochs
    if most == 1:
        return epochs[-1:]
    return [epochs[round(i * (len(epochs) - 1) / (most - 1))] for i in range(most)]


def page_data(run_dir: str | Path, run: str, max_epochs: int = MAX_EPOCHS) -> dict[str, Any]:
    """Every answer the tab asks of the plugin for the one run whose log folder is ``run_dir`` (the folder that
    holds ``featviz_dashboard/``), named ``run``, at :func:`shown_epochs` of its analysed epochs."""
    runs = find_runs(run_dir)
    if "." not in runs:
        raise ValueError(f"Expected `run_dir` to hold FEATVIZ dashboard files, but got {str(run_dir)!r}.")
    plugin = FeatvizPlugin(base_plugin.TBContext(logdir=str(run_dir)))
    client = Client(lambda environ, respond: plugin.get_plugin_apps()[environ["PATH_INFO"]](environ, respond))
    index = _get(client, "run", run=".")
    kept = set(shown_epochs([entry["epoch"] for entry in index["epochs"]], max_epochs))
    index["epochs"] = [entry for entry in index["epochs"] if entry["epoch"] in kept]
    keys = sorted({entry["samples"] for entry in index["epochs"]})
    samples = {key: _get(client, "samples", run=".", key=key) for key in keys}
    atlas = {}
    for key, described in samples.items():
        pages = -(-len(described["indices"]) // described["tiles"]) if described["thumbnail"] else 0
        for page in range(pages):
            jpeg = base64.b64encode(_get(client, "atlas", run=".", key=key, page=page)).decode("ascii")
            atlas[f"{key}/{page}"] = f"data:image/jpeg;base64,{jpeg}"
    layers = {}
    for name in dict.fromkeys(layer["name"] for entry in index["epochs"] for layer in entry["layers"]):
        answer = _get(client, "layer", run=".", layer=name)
        layers[name] = answer | {"epochs": [e for e in answer["epochs"] if e["epoch"] in kept]}
    wrong = {
        f"{entry['epoch']}/{layer['name']}": _get(client, "wrong", run=".", epoch=entry["epoch"], layer=layer["name"])
        for entry in index["epochs"]
        for layer in entry["layers"]
    }
    return {
        "runs": [{"run": run, "epochs": [entry["epoch"] for entry in index["epochs"]]}],
        "run": index,
        "k": int(index["k"]),
        "samples": samples,
        "atlas": atlas,
        "layers": layers,
        "wrong": wrong,
        "inspect": {str(entry["epoch"]): _inspect_arrays(plugin, runs["."], entry) for entry in index["epochs"]},
    }


def standalone_page(run_dir: str | Path, run: str | None = None, max_epochs: int = MAX_EPOCHS) -> str:
    """The FEATVIZ tab over ``run_dir``'s dashboard files as one self-contained HTML page (no server, no network).

    Args:
        run_dir: the run's log folder, the one that holds ``featviz_dashboard/``.
        run: the run's name on the page; by default the last two parts of ``run_dir`` (``lightning_logs/version_0``).
        max_epochs: the page holds at most this many analysed epochs, evenly spread, the first and last among them.
    """
    run = run or "/".join(Path(run_dir).resolve().parts[-2:])
    answers = json.dumps(page_data(run_dir, run, max_epochs), allow_nan=False, separators=(",", ":")).encode()
    packed = base64.b64encode(gzip.compress(answers, compresslevel=1)).decode("ascii")
    static = {name: (STATIC / name).read_text(encoding="utf-8") for name in ("index.js", "style.css", "standalone.js")}
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>FEATVIZ · {html.escape(run)}</title>\n"
        f"<style>{static['style.css']}</style></head>\n<body>\n"
        f"<script type='application/octet-stream' id='featviz-data'>{packed}</script>\n"
        f"<script>\n{static['standalone.js']}</script>\n"
        f"<script type='module'>\n{static['index.js']}\nrender();\n</script>\n</body></html>\n"
    )
