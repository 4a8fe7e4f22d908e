"""Checks of :class:`~lightning_featviz.FeatureVisualizer`'s arguments: a bad one fails in ``__init__``,
naming the argument, what it should be, and the value it got."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np


def require(condition: bool, name: str, requirement: str, value: Any) -> None:
    if not condition:
        raise ValueError(f"Expected `{name}` to be {requirement}, but got {value!r}.")


def is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def normalised_layers(layers: Any) -> list[str] | dict[str, str] | Literal["auto"]:
    """``layers`` as the callback keeps it: ``"auto"`` (for None too), a list of paths or a dict path -> name."""
    if layers is None or layers == "auto":
        return "auto"
    return dict(layers) if isinstance(layers, Mapping) else list(layers)


def check_arguments(
    layers: Any,
    k: Any,
    max_samples: Any,
    every_n_epochs: Any,
    overhead: Any,
    dashboard: Any,
    groups: Mapping[str, Any],
) -> None:
    """Raise ``ValueError`` for the first top-level argument that is not valid, or a group's field that does not fit
    them (``capture.max_reference`` and ``outputs.query_indices`` against ``k`` and ``max_samples``); each group
    checks its own fields when it is made."""
    if layers is not None and layers != "auto":
        names = list(layers.keys() if isinstance(layers, Mapping) else layers) if not isinstance(layers, str) else []
        ok = bool(names) and all(isinstance(n, str) for n in names)
        require(ok, "layers", "'auto', None or a non-empty list of layer names", layers)
    require(is_int(k) and k >= 1, "k", "an integer >= 1", k)
    require(is_int(max_samples) and max_samples > k, "max_samples", f"an integer > k = {k}", max_samples)
    reference = groups["capture"].max_reference
    require(reference > k, "capture.max_reference", f"an integer > k = {k}", reference)
    queries = groups["outputs"].query_indices
    if queries is not None:
        ok = len(queries) <= max_samples
        require(ok, "outputs.query_indices", f"at most {max_samples} non-negative dataset positions", list(queries))
    require(is_int(every_n_epochs) and every_n_epochs >= 1, "every_n_epochs", "an integer >= 1", every_n_epochs)
    ok = overhead is None or (is_number(overhead) and 0 < overhead <= 10)
    require(ok, "overhead", "None or a share of fit time in (0, 10] (0.1: at most 1.1 times)", overhead)
    require(isinstance(dashboard, bool), "dashboard", "True or False", dashboard)
