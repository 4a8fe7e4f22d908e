"""Checks of :class:`~lightning_featviz.FeatureVisualizer`'s arguments: a bad one fails in ``__init__``,
naming the argument, what it should be, and the value it got."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def require(condition: bool, name: str, requirement: str, value: Any) -> None:
    if not condition:
        raise ValueError(f"Expected `{name}` to be {requirement}, but got {value!r}.")


def is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_arguments(args: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` for the first argument of ``args`` (the callback's, by name) that is not valid."""
    layers, k = args["layers"], args["k"]
    if layers is not None and layers != "auto":
        names = list(layers.keys() if isinstance(layers, Mapping) else layers) if not isinstance(layers, str) else []
        ok = bool(names) and all(isinstance(n, str) for n in names)
        require(ok, "layers", "'auto', None or a non-empty list of layer names", layers)
    require(is_int(k) and k >= 1, "k", "an integer >= 1", k)
    for name in ("max_samples", "max_reference"):
        require(is_int(args[name]) and args[name] > k, name, f"an integer > k = {k}", args[name])
    queries, max_samples = args["query_indices"], args["max_samples"]
    if queries is not None:
        ok = all(is_int(i) and i >= 0 for i in queries) and len(queries) <= max_samples
        require(ok, "query_indices", f"at most {max_samples} non-negative dataset positions", queries)
    for name, choices in [
        ("metric", ("euclidean", "cosine")),
        ("reference", ("val", "train")),
        ("tsne_backend", ("opentsne", "sklearn")),
        ("storage_dtype", ("float32", "float16")),
        ("input_kind", (None, "image", "sequence", "vector", "tokens")),
    ]:
        require(args[name] in choices, name, " or ".join(repr(c) for c in choices), args[name])
    reduction = args["reduction"]
    if isinstance(reduction, Mapping):
        ok = all(isinstance(key, str) for key in reduction)
        require(ok, "reduction", "'avg', 'adaptive', 'flatten' or a mapping layer -> reduction", reduction)
    else:
        options = ("avg", "adaptive", "flatten")
        require(reduction in options, "reduction", " or ".join(repr(c) for c in options), reduction)
    every = args["tsne_every_n_epochs"]
    ok = every is None or every == "budget" or (is_int(every) and every >= 1)
    require(ok, "tsne_every_n_epochs", "'budget', None or an integer >= 1", every)
    overhead = args["overhead"]
    ok = overhead is None or (_is_number(overhead) and 0 < overhead <= 10)
    require(ok, "overhead", "None or a share of fit time in (0, 10] (0.1: at most 1.1 times)", overhead)
    dims = args["tsne_dims"]
    ok = not isinstance(dims, str) and len(dims) > 0 and set(dims) <= {2, 3}
    require(ok, "tsne_dims", "a non-empty selection of 2 and 3", dims)
    for name in ("perplexity", "memory_budget_mb"):
        require(_is_number(args[name]) and args[name] > 0, name, "a number > 0", args[name])
    share = args["min_share"]
    require(_is_number(share) and 0 < share <= 1, "min_share", "a number in (0, 1]", share)
    for name, low in [
        ("max_gallery", 1),
        ("pool_size", 1),
        ("input_size", 1),
        ("thumbnail_size", 4),
        ("every_n_epochs", 1),
        ("dataloader_idx", 0),
        ("chunk_size", 1),
        ("projector_every_n_epochs", 1),
        ("map_samples", 10),
    ]:
        require(is_int(args[name]) and args[name] >= low, name, f"an integer >= {low}", args[name])
    layer = args["wrong_cluster_layer"]
    require(layer is None or isinstance(layer, str), "wrong_cluster_layer", "None or a layer name", layer)
    mean = args["image_mean"]
    require((mean is None) == (args["image_std"] is None), "image_mean", "given together with `image_std`", mean)
    extractor = args["batch_extractor"]
    require(extractor is None or callable(extractor), "batch_extractor", "callable", extractor)
    folder = args["report_dir"]
    require(folder is None or isinstance(folder, (str, Path)), "report_dir", "None or a folder path", folder)
    dashboard = args["dashboard"]
    require(isinstance(dashboard, bool), "dashboard", "True or False", dashboard)
