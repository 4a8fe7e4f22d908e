"""What the callback does with a failure: warn once per kind and let training go on, or raise (``strict``)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any


class Guard:
    """Warnings issued once per key, and calls whose failure warns once instead of ending training.

    Args:
        strict: raise the failures of :meth:`call` instead.
    """

    def __init__(self, strict: bool):
        self.strict = strict
        self.warned: set[str] = set()

    def warn_once(self, key: str, message: str) -> None:
        """Warn ``message`` unless a warning of ``key`` was issued before."""
        if key not in self.warned:
            self.warned.add(key)
            warnings.warn(message, stacklevel=3)

    def call(self, action: Callable[..., Any], *args: Any) -> Any:
        """Call ``action``; a failure of the analysis or a report warns once and training goes on
        (None is returned), unless ``strict`` asks for it to be raised."""
        try:
            return action(*args)
        except Exception as error:
            if self.strict:
                raise
            self.warn_once(
                f"report/{type(error).__name__}",
                f"FeatureVisualizer could not analyse or report an epoch ({type(error).__name__}: {error}); "
                "training goes on. Pass `strict=True` to raise instead.",
            )
            return None
