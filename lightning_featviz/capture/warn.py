"""The one type of the package's warnings: ``warn(key, message)``, which warns once per key (the callback's
:class:`~lightning_featviz.runtime.guard.Guard`, or a list a report keeps for the training process to warn with).

Declared here, at the bottom of the flow, because every folder that warns may import ``capture``.
"""

from __future__ import annotations

from collections.abc import Callable

#: ``warn(key, message)``: a warning, once per ``key``.
Warn = Callable[[str, str], None]
