"""lightning_featviz: see what an image classifier learns while it is fine-tuned."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Each name is imported when first used: a report process needs the functional core, not
# Lightning (about 250 MB less to import). ``__all__`` stays a literal list, as type checkers
# require of re-exports. The callback, its option groups, the post-hoc entry point, the demo's data and the
# functional core of docs/api.md's examples; every other function is imported from its module
# (``from lightning_featviz.analysis.knn import knn_purity``).
_MODULE_OF = {
    "ActivationCapture": "capture.hooks",
    "CaptureOptions": "options",
    "ColouredDigits": "demo.datasets",
    "FeatureVisualizer": "callback",
    "MapOptions": "options",
    "MapPanel": "render.maps",
    "OutputOptions": "options",
    "ProjectorOptions": "options",
    "ResourceOptions": "options",
    "WrongClusterOptions": "options",
    "analyse_checkpoint": "posthoc",
    "image_folder": "loading",
    "knn_search": "analysis.knn",
    "map_image": "render.maps",
    "neighbour_stats": "analysis.knn",
    "trustworthiness": "analysis.tsne",
    "tsne_map": "analysis.tsne",
}

__all__ = [
    "ActivationCapture",
    "CaptureOptions",
    "ColouredDigits",
    "FeatureVisualizer",
    "MapOptions",
    "MapPanel",
    "OutputOptions",
    "ProjectorOptions",
    "ResourceOptions",
    "WrongClusterOptions",
    "analyse_checkpoint",
    "image_folder",
    "knn_search",
    "map_image",
    "neighbour_stats",
    "trustworthiness",
    "tsne_map",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'lightning_featviz' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lightning_featviz.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])


if TYPE_CHECKING:
    from lightning_featviz.analysis.knn import knn_search, neighbour_stats
    from lightning_featviz.analysis.tsne import trustworthiness, tsne_map
    from lightning_featviz.callback import FeatureVisualizer
    from lightning_featviz.capture.hooks import ActivationCapture
    from lightning_featviz.demo.datasets import ColouredDigits
    from lightning_featviz.loading import image_folder
    from lightning_featviz.options import (
        CaptureOptions,
        MapOptions,
        OutputOptions,
        ProjectorOptions,
        ResourceOptions,
        WrongClusterOptions,
    )
    from lightning_featviz.posthoc import analyse_checkpoint
    from lightning_featviz.render.maps import MapPanel, map_image
