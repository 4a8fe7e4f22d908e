"""A time budget that thins the schedule of the callback's expensive outputs (:mod:`~lightning_featviz.report.plan`):
which of the outputs the schedule holds for an analysed epoch it makes.

Plain functions on numbers (seconds), no Lightning: the callback measures how long ``fit`` has run
without it (training, validation, other callbacks: the *base*) and how long its own work took (the
*spent* time: the capture in the validation loop, its forward hooks included, the kNN analysis and, in the loop,
the report), and asks :meth:`TimeBudget.tune` which of this epoch's scheduled outputs it may make so that, over the
run, ``spent <= overhead * base``. It never adds one.

The policy:

- the kNN scalars run on every analysed epoch (they are the headline and cost little); their cost
  counts against the budget all the same;
- the last analysed epoch, when the run's end is known (``max_epochs``), makes what the budget of the whole fit
  still covers (:func:`size_last_epoch`): figures first, then 2-D maps, projector, 3-D maps; its full cost is
  reserved from the start;
- before it, the rest of the budget is released evenly over the run (in step with base time) and shared equally
  by the outputs the user switched on: a scheduled output runs when its share of what has been released covers what
  it has spent so far plus its cost (:func:`plan_outputs`); the projector only comes with a map.

Costs are estimated from the bank's size (:func:`prior_costs`, measured on a 2-core machine) until an
output has run once; then its latest measured cost is used.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: The expensive outputs, in the order the budget considers them.
FIGURES = "figures"  #: neighbour grids, confusion and per-class purity, depth, gallery, wrong-cluster/label exports
MAPS_2D = "maps_2d"  #: 2-D t-SNE maps, their figures and quality scalars
PROJECTOR = "projector"  #: projector files (needs a map of the epoch)
MAPS_3D = "maps_3d"  #: 3-D t-SNE maps
OUTPUTS = (FIGURES, MAPS_2D, PROJECTOR, MAPS_3D)
KNN = "knn"  #: the kNN analysis: always runs

# Priors (seconds), from the quick start on the 2-core development machine: a 1,000-point layer's warm 2-D map
# ~0.6 s, 3-D ~1.2 s, its figures ~0.45 s (a demo-sized epoch's, five layers: 2.20 s in benchmarks/report_time.py),
# projector ~0.05 s (plus bytes); kNN 2·N²·D flops at ~100 GFLOP/s.
# Only used until the output has run once.
_SECONDS_PER_POINT = {FIGURES: 4.5e-4, MAPS_2D: 1.0e-3, PROJECTOR: 1.0e-4, MAPS_3D: 2.0e-3}
_FLOPS_PER_SECOND = 1e11


def prior_costs(samples: int, mapped: int, widths: Sequence[int]) -> dict[str, float]:
    """Estimated seconds of each output (and ``"knn"``) for a bank of ``samples`` rows (``mapped`` of them
    in maps) and layers of the given widths, before any was measured."""
    layers = max(len(widths), 1)
    costs = {output: per_point * mapped * layers for output, per_point in _SECONDS_PER_POINT.items()}
    costs[KNN] = sum(2.0 * samples * samples * max(width, 1) for width in widths) / _FLOPS_PER_SECOND
    return costs


@dataclass(frozen=True)
class Clock:
    """Where the run stands when an analysed epoch is planned.

    Attributes:
        epoch: this epoch (0-based).
        last_epoch: the last analysed epoch of the run, None when unknown (``max_epochs`` not set,
            ``max_steps``/``max_time`` may stop it first).
        every: analysed epochs are every ``every``-th.
        base: seconds ``fit`` has run so far without counting the callback's work.
        spent: seconds of the callback's work so far (kNN, reports).
        spent_by: of ``spent``, the seconds each output took on the epochs the budget chose it (not at the
            last epoch), by output.
        first_epoch: the epoch the clock started at (a resumed ``fit`` starts past 0).
    """

    epoch: int
    last_epoch: int | None
    every: int
    base: float
    spent: float
    spent_by: Mapping[str, float] = field(default_factory=dict)
    first_epoch: int = 0

    @property
    def spent_optional(self) -> float:
        """Seconds spent on outputs the budget chose."""
        return sum(self.spent_by.values())


def plan_outputs(clock: Clock, costs: Mapping[str, float], wanted: Sequence[str], overhead: float) -> frozenset[str]:
    """Which of the ``wanted`` outputs this epoch makes, within ``overhead`` (0.1: fit takes at most
    1.1 times as long) of the run's base time.

    Args:
        clock: where the run stands.
        costs: estimated seconds of each output and of ``"knn"`` this epoch.
        wanted: the outputs the user's arguments switch on.
        overhead: the budget, a share of the base time.

    Returns:
        The outputs to make; every wanted one at the last analysed epoch.
    """
    wanted = [output for output in OUTPUTS if output in wanted]
    if clock.last_epoch is not None and clock.epoch >= clock.last_epoch:
        return frozenset(wanted)
    epochs_done = clock.epoch - clock.first_epoch + 1  # this epoch's training and validation have run
    base_per_epoch = clock.base / epochs_done
    knn = costs.get(KNN, 0.0)
    if clock.last_epoch is None:  # no known end: pace on what has run so far
        released = overhead * clock.base - (clock.spent - clock.spent_optional) - knn
    else:
        epochs = clock.last_epoch - clock.first_epoch + 1
        analysed = len(range(clock.epoch, clock.last_epoch + 1, clock.every))
        final = knn + sum(costs.get(output, 0.0) for output in wanted)
        total = overhead * base_per_epoch * epochs - final - knn * (analysed - 1) - (clock.spent - clock.spent_optional)
        released = max(total, 0.0) * epochs_done / epochs
    share = max(released, 0.0) / max(len(wanted), 1)
    chosen: list[str] = []
    for output in wanted:
        if output == PROJECTOR and not ({MAPS_2D, MAPS_3D} & set(chosen)):
            continue
        if clock.spent_by.get(output, 0.0) + costs.get(output, 0.0) <= share:
            chosen.append(output)
    return frozenset(chosen)


def last_analysed_epoch(max_epochs: int | None, every: int, max_steps: int = -1) -> int | None:
    """The last epoch of ``fit`` that is analysed: known from ``max_epochs`` when no ``max_steps`` limit
    could end the run first; None otherwise."""
    if max_epochs is None or max_epochs < 1 or (max_steps is not None and max_steps >= 0):
        return None
    return (max_epochs - 1) // every * every


def size_last_epoch(
    clock: Clock, costs: Mapping[str, float], due: frozenset[str], overhead: float
) -> tuple[frozenset[str], float]:
    """The outputs of the last analysed epoch that fit the budget of the whole fit: each in the order of
    :data:`OUTPUTS` (figures, 2-D maps, projector, 3-D maps) while the fit's budget, less what was spent and this
    epoch's kNN, covers it; the projector only with a map. Returns them and the seconds that were left."""
    left = overhead * clock.base - clock.spent - costs.get(KNN, 0.0)
    chosen: list[str] = []
    for output in OUTPUTS:
        if output not in due or (output == PROJECTOR and not {MAPS_2D, MAPS_3D} & set(chosen)):
            continue
        if costs.get(output, 0.0) <= left:
            chosen.append(output)
            left -= costs.get(output, 0.0)
    return frozenset(chosen), left


class TimeBudget:
    """The callback's side of the budget: a clock over ``fit``, the seconds its own work took, the latest
    measured cost of each output, and the plan of each analysed epoch (:func:`plan_outputs`).

    Args:
        overhead: the budget, a share of ``fit``'s time without the callback (0.1: at most 1.1 times).
    """

    def __init__(self, overhead: float):
        self.overhead = overhead
        self.measured: dict[str, float] = {}
        self._start: float | None = None
        self._spent = 0.0  # seconds fit waited for the callback: not part of its base time
        self._alongside = 0.0  # seconds of background reports that took training's cores: charged, not waited for
        self._by: dict[str, float] = {}
        self._first = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, object]:
        """A copy (pickling the callback, spawning processes) has no lock and starts no clock."""
        return {"overhead": self.overhead, "measured": dict(self.measured)}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(float(state["overhead"]))  # type: ignore[misc, arg-type]
        self.measured = dict(state["measured"])  # type: ignore[call-overload]

    def start(self, epoch: int = 0) -> None:
        """``fit`` starts (at ``epoch``, past 0 when resumed): the clock runs from now, nothing spent."""
        self._start, self._spent, self._alongside, self._by, self._first = time.perf_counter(), 0.0, 0.0, {}, epoch

    @property
    def running(self) -> bool:
        return self._start is not None

    def spend(self, seconds: float, alongside: bool = False) -> None:
        """Count ``seconds`` of the callback's work: time ``fit`` waited for it, or (``alongside``) a background
        report's that ran while ``fit`` went on (on its cores): charged to the budget, but not taken out of the
        base time, which it never stopped."""
        with self._lock:
            if alongside:
                self._alongside += seconds
            else:
                self._spent += seconds

    def record(self, costs: Mapping[str, float], optional: bool = True) -> None:
        """What each output took (kept as its latest cost); ``optional``: they were the budget's choice (not
        kNN, not the last epoch's full report), so they count against what it released."""
        with self._lock:
            self.measured.update(costs)
            if optional:
                for key, value in costs.items():
                    if key != KNN:
                        self._by[key] = self._by.get(key, 0.0) + value

    def clock(self, epoch: int, last_epoch: int | None, every: int) -> Clock:
        """Where the run stands now."""
        elapsed = time.perf_counter() - (self._start if self._start is not None else time.perf_counter())
        with self._lock:
            waited, alongside, by = self._spent, self._alongside, dict(self._by)
        return Clock(epoch, last_epoch, every, max(elapsed - waited, 1e-9), waited + alongside, by, self._first)

    def costs(self, samples: int, mapped: int, widths: Sequence[int]) -> dict[str, float]:
        """Each output's measured cost where it ran before, else its prior for this bank."""
        return {**prior_costs(samples, mapped, widths), **self.measured}

    def tune(
        self, clock: Clock, costs: Mapping[str, float], due: frozenset[str], wanted: Sequence[str]
    ) -> tuple[frozenset[str], str]:
        """Of the outputs ``due`` by the schedule, those this epoch makes: at the last analysed epoch those that fit
        the budget of the whole fit (:func:`size_last_epoch`), before it those its share of the budget released so
        far covers (:func:`plan_outputs`, ``wanted``: every output switched on); and why the others are left out."""
        if clock.last_epoch is not None and clock.epoch >= clock.last_epoch:
            chosen, _ = size_last_epoch(clock, costs, due, self.overhead)
        else:
            chosen = plan_outputs(clock, costs, wanted, self.overhead) & due
        left = [output for output in OUTPUTS if output in due - chosen]
        needs = sum(costs.get(output, 0.0) for output in left)
        why = f"{self.overhead:.0%} of fit so far = {self.overhead * clock.base:.1f} s, {clock.spent:.1f} s spent"
        if clock.last_epoch is not None and clock.epoch < clock.last_epoch:
            kept = costs.get(KNN, 0.0) + sum(costs.get(output, 0.0) for output in wanted)
            why += f", ~{kept:.1f} s kept for the last epoch"
        return chosen, f"{why}; they take ~{needs:.1f} s" if left else ""


def wanted_outputs(figures: bool, dims: Sequence[int], projector: bool) -> list[str]:
    """The outputs switched on: figures when any is; a map of each of ``dims`` (empty: maps off), and the projector
    with them."""
    wanted = [FIGURES] if figures else []
    wanted += [MAPS_2D] if 2 in dims else []
    wanted += [MAPS_3D] if 3 in dims else []
    wanted += [PROJECTOR] if projector and dims else []
    return wanted
