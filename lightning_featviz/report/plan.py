"""Which outputs an analysed epoch makes: the time budget's plan (:mod:`~lightning_featviz.report.budget`), an
explicit map cadence, and the costs that reports measure as they run.

No Lightning: the callback tells where ``fit`` stands (epoch, ``max_epochs``, ``max_steps``) in plain numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from lightning_featviz.report.budget import (
    FIGURES,
    KNN,
    MAPS_2D,
    MAPS_3D,
    PROJECTOR,
    TimeBudget,
    last_analysed_epoch,
    wanted_outputs,
)


class OutputPlan:
    """The outputs of each analysed epoch, under a time budget or a fixed map cadence.

    Args:
        overhead: the budget, a share of ``fit``'s time without the callback; None: no budget (every output).
        every_n_epochs: the callback analyses every n-th epoch of ``fit``.
        maps_every: ``"budget"``, every n-th epoch, or None (no maps).
        dims: the map dimensions drawn.
        figures: whether any figure is switched on.
        projector: whether the projector is switched on.
    """

    def __init__(
        self,
        overhead: float | None,
        every_n_epochs: int,
        maps_every: int | Literal["budget"] | None,
        dims: Sequence[int],
        figures: bool,
        projector: bool,
    ):
        self.budget = TimeBudget(overhead) if overhead is not None else None
        self.every_n_epochs = every_n_epochs
        self.maps_every = maps_every
        self.wanted = wanted_outputs(figures, list(dims), projector, maps_every == "budget")
        #: This epoch's outputs (None: every one).
        self.outputs: frozenset[str] | None = None
        #: One line per analysed epoch of ``fit`` under the budget: what it made, when the next map comes.
        self.schedule: list[str] = []
        self._final_epochs: set[int] = set()  # epochs whose report made everything as the last one

    def start(self, epoch: int) -> None:
        """``fit`` starts at ``epoch``: the budget's clock runs from now."""
        if self.budget is not None:
            self.budget.start(epoch)
        self.schedule = []

    def spend(self, seconds: float, fitting: bool) -> None:
        """``fit`` waited ``seconds`` for the callback (only ``fit``'s time counts)."""
        if self.budget is not None and fitting:
            self.budget.spend(seconds)

    def record_knn(self, seconds: float) -> None:
        if self.budget is not None:
            self.budget.record({KNN: seconds}, optional=False)

    def record_report(self, epoch: int, costs: dict[str, float], seconds: float, took_training_cores: bool) -> None:
        """A written report of ``epoch``: its outputs' costs, and (``took_training_cores``: a background report
        on the CPU) its ``seconds``, which ``fit`` paid for."""
        if self.budget is None:
            return
        if took_training_cores:
            self.budget.spend(seconds, alongside=True)
        self.budget.record(costs, optional=epoch not in self._final_epochs)

    def record_trackers(self, seconds: float) -> None:
        """The trackers' writes took ``seconds`` on their own thread while ``fit`` went on (the tracker writer
        calls this from there): charged to the budget like a background report's, not taken out of the base time."""
        if self.budget is not None:
            self.budget.spend(seconds, alongside=True)

    def plan(
        self,
        fitting: bool,
        epoch: int,
        max_epochs: int | None,
        max_steps: int,
        samples: int,
        mapped: int,
        widths: Sequence[int],
    ) -> str | None:
        """Choose this epoch's outputs (:attr:`outputs`); the schedule line when the budget chose them."""
        self.outputs = None
        if self.budget is None or not self.budget.running or not fitting:
            return None
        last = last_analysed_epoch(max_epochs, self.every_n_epochs, max_steps)
        clock = self.budget.clock(epoch, last, self.every_n_epochs)
        chosen, line = self.budget.plan(clock, samples, mapped, widths, self.wanted)
        if self.maps_every not in (None, "budget") and self.maps_due(fitting, epoch):  # an explicit cadence
            chosen |= {MAPS_2D, MAPS_3D, PROJECTOR}
        self.outputs = chosen
        if last is not None and epoch >= last:
            self._final_epochs.add(epoch)
        self.schedule.append(line)
        return line

    def maps_due(self, fitting: bool, epoch: int) -> bool:
        """Whether this epoch makes maps: always in ``validate``; in ``fit``, as planned or by the cadence."""
        if self.maps_every is None:
            return False
        if not fitting:
            return True
        if self.maps_every == "budget":  # as planned (every epoch without a budget)
            return self.outputs is None or bool({MAPS_2D, MAPS_3D} & self.outputs)
        return epoch % self.maps_every == 0

    @property
    def figures_due(self) -> bool:
        return self.outputs is None or FIGURES in self.outputs
