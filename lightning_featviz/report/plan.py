"""Which outputs an analysed epoch of ``fit`` makes: a fixed schedule per output, which the time budget
(:mod:`~lightning_featviz.report.budget`) may thin, saying so.

The schedule does not depend on the machine: the kNN scalars every analysed epoch; the figures every
``figures_every``-th analysed epoch and the maps (with the projector) every ``maps_every``-th, counted from the first
analysed epoch of the fit, and both at its last analysed epoch (when ``max_epochs`` tells it). With a budget, an
output the schedule holds may be left out (never added) where its measured cost would not fit; every such
decision is a line of :attr:`OutputPlan.schedule` and a row of :meth:`OutputPlan.table` (logged as
``featviz/schedule``). ``validate`` makes every output.

No Lightning: the callback tells where ``fit`` stands (epoch, ``max_epochs``, ``max_steps``) in plain numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning_featviz.report.budget import (
    FIGURES,
    KNN,
    MAPS_2D,
    MAPS_3D,
    OUTPUTS,
    PROJECTOR,
    TimeBudget,
    last_analysed_epoch,
    wanted_outputs,
)

#: The tag of the schedule's text summary (a Markdown table of the fit's analysed epochs so far).
SCHEDULE_TAG = "featviz/schedule"


def on_cadence(index: int, every: int | None, last: bool) -> bool:
    """Whether the ``index``-th analysed epoch of a fit (0-based) makes an output made every ``every``-th analysed
    epoch (None: never), and always at the last."""
    return every is not None and (index % every == 0 or last)


class OutputPlan:
    """The outputs of each analysed epoch: the schedule, thinned by the time budget where one is set.

    Args:
        overhead: the budget, a share of ``fit``'s time without the callback; None: the schedule as it is.
        every_n_epochs: the callback analyses every n-th epoch of ``fit``.
        figures_every: figures every n-th analysed epoch (and the last); None: no figures.
        maps_every: maps and projector every n-th analysed epoch (and the last); None: no maps.
        dims: the map dimensions drawn.
        projector: whether the projector is switched on.
    """

    def __init__(
        self,
        overhead: float | None,
        every_n_epochs: int,
        figures_every: int | None,
        maps_every: int | None,
        dims: Sequence[int],
        projector: bool,
    ):
        self.budget = TimeBudget(overhead) if overhead is not None else None
        self.every_n_epochs = every_n_epochs
        self.figures_every, self.maps_every = figures_every, maps_every
        self.wanted = wanted_outputs(figures_every is not None, list(dims) if maps_every else [], projector)
        #: This epoch's outputs (None: every one, as in ``validate``).
        self.outputs: frozenset[str] | None = None
        #: One line per analysed epoch of ``fit``: what it made, and what the budget left out and why.
        self.schedule: list[str] = []
        self._rows: list[tuple[int, str, str, str]] = []  # (epoch, made, left out, why) for the text summary
        self._final_epochs: set[int] = set()  # the planned last epoch: it made what its budget allowed, for good
        self._made: dict[int, frozenset[str]] = {}  # the outputs each epoch of fit made
        self._first = 0

    def start(self, epoch: int) -> None:
        """``fit`` starts at ``epoch``: the schedule counts analysed epochs from here; the budget's clock runs."""
        if self.budget is not None:
            self.budget.start(epoch)
        self.schedule, self._rows, self._first = [], [], epoch

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
        made = self._made.get(epoch, frozenset(OUTPUTS))  # an output the epoch did not make has no cost to learn
        measured = {output: spent for output, spent in costs.items() if output in made or output == KNN}
        self.budget.record(measured, optional=epoch not in self._final_epochs)

    def scheduled(self, epoch: int, last: int | None) -> frozenset[str]:
        """What the schedule holds for ``epoch`` of ``fit`` (``last``: its last analysed epoch, None if unknown)."""
        index, final = (epoch - self._first) // self.every_n_epochs, last is not None and epoch >= last
        due = {FIGURES} if on_cadence(index, self.figures_every, final) else set()
        if on_cadence(index, self.maps_every, final):
            due |= {MAPS_2D, MAPS_3D, PROJECTOR}
        return frozenset(output for output in self.wanted if output in due)

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
        """Choose this epoch's outputs (:attr:`outputs`); the schedule line of a ``fit`` epoch."""
        self.outputs = None
        if not fitting:
            return None
        last = last_analysed_epoch(max_epochs, self.every_n_epochs, max_steps)
        due = self.scheduled(epoch, last)
        chosen, why = due, ""
        if self.budget is not None and self.budget.running and due:
            clock = self.budget.clock(epoch, last, self.every_n_epochs)
            chosen, why = self.budget.tune(clock, self.budget.costs(samples, mapped, widths), due, self.wanted)
        self.outputs = self._made[epoch] = chosen
        final = last is not None and epoch >= last
        if final:
            self._final_epochs.add(epoch)
        made = ", ".join(["kNN scalars", *(_words(o) for o in OUTPUTS if o in chosen)])
        left = ", ".join(_words(o) for o in OUTPUTS if o in due - chosen)
        line = f"epoch {epoch}{' (last)' if final else ''}: {made}"
        if left:
            line += f"; left out by the budget: {left} ({why})"
        self.schedule.append(line)
        self._rows.append((epoch, made, left or "-", why if left else "-"))
        return line

    def lacking(self, epoch: int) -> list[str]:
        """The outputs a run that ends after ``epoch`` still makes from its bank when ``fit`` ends: every one, unless
        ``epoch`` was the planned last epoch (which made what the schedule and its budget gave it)."""
        return [] if epoch in self._final_epochs else list(self.wanted)

    def table(self) -> str:
        """The fit's schedule so far as a Markdown table (the text summary ``featviz/schedule``)."""
        head = [
            f"Figures every {self.figures_every or '-'} and maps every {self.maps_every or '-'} analysed epochs, "
            f"and both at the last; {self._budget_words()}.",
            "",
            "| epoch | made | left out | why |",
            "| --- | --- | --- | --- |",
        ]
        return "\n".join(head + [f"| {e} | {made} | {left} | {why} |" for e, made, left, why in self._rows])

    def _budget_words(self) -> str:
        if self.budget is None:
            return "no time budget (`overhead=None`): every output the schedule holds"
        return f"time budget {self.budget.overhead:.0%} of fit time (`overhead`), which may leave outputs out"

    def maps_due(self, fitting: bool, epoch: int) -> bool:
        """Whether this epoch makes maps: always in ``validate``; in ``fit``, as planned."""
        if self.maps_every is None:
            return False
        return not fitting or self.outputs is None or bool({MAPS_2D, MAPS_3D} & self.outputs)

    @property
    def figures_due(self) -> bool:
        return self.outputs is None or FIGURES in self.outputs


def _words(output: str) -> str:
    return output.replace("_", " ")
