"""The time budget's policy on numbers (which outputs an epoch makes), and on a real Trainer run."""

import time

import pytest
from conftest import TinyNet, read_events, tiny_trainer
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_featviz import CaptureOptions, FeatureVisualizer, MapOptions
from lightning_featviz.report.budget import (
    FIGURES,
    KNN,
    MAPS_2D,
    MAPS_3D,
    OUTPUTS,
    PROJECTOR,
    Clock,
    TimeBudget,
    last_analysed_epoch,
    plan_outputs,
    size_last_epoch,
)

COSTS = {KNN: 0.1, FIGURES: 1.0, MAPS_2D: 3.0, PROJECTOR: 0.5, MAPS_3D: 6.0}


def _simulate(epochs, base_per_epoch, costs, overhead, every=1, known_end=True):
    """Run the policy over a whole fit as the callback does: per analysed epoch, plan, then spend the kNN
    and the chosen outputs' costs. Returns the plans and the callback's total seconds."""
    last = last_analysed_epoch(epochs, every) if known_end else None
    spent, by = 0.0, {}
    plans = {}
    for epoch in range(0, epochs, every):
        clock = Clock(epoch, last, every, base_per_epoch * (epoch + 1), spent, dict(by))
        chosen = plan_outputs(clock, costs, OUTPUTS, overhead)
        plans[epoch] = chosen
        spent += costs[KNN] + sum(costs[o] for o in chosen)
        if last is None or epoch < last:
            for o in chosen:
                by[o] = by.get(o, 0.0) + costs[o]
    return plans, spent


def test_the_run_stays_within_the_budget_when_the_last_epoch_fits_in_it():
    base, epochs, overhead = 10.0, 20, 0.3
    plans, spent = _simulate(epochs, base, COSTS, overhead)
    assert spent <= overhead * base * epochs + 1e-9
    made = [e for e, chosen in plans.items() if MAPS_2D in chosen]
    assert len(made) >= 3 and made[-1] == epochs - 1  # maps spread over the run, not only at its end


def test_maps_are_spread_over_the_run_rather_than_spent_at_its_start():
    plans, _ = _simulate(epochs=20, base_per_epoch=10.0, costs=COSTS, overhead=0.3)
    made = [e for e, chosen in plans.items() if MAPS_2D in chosen]
    assert made[0] > 0 and max(b - a for a, b in zip(made, made[1:], strict=False)) <= 8


def test_a_cheap_output_comes_more_often_than_a_dear_one():
    plans, _ = _simulate(epochs=20, base_per_epoch=10.0, costs=COSTS, overhead=0.3)
    count = {o: sum(o in chosen for chosen in plans.values()) for o in OUTPUTS}
    assert count[FIGURES] > count[MAPS_2D] > count[MAPS_3D] >= 1


def test_a_generous_budget_makes_every_output_every_epoch():
    plans, _ = _simulate(epochs=6, base_per_epoch=10.0, costs=COSTS, overhead=5.0)
    assert all(chosen == frozenset(OUTPUTS) for chosen in plans.values())


def test_the_projector_is_never_planned_without_a_map():
    costs = {**COSTS, MAPS_2D: 100.0, MAPS_3D: 100.0, PROJECTOR: 0.0}
    plans, _ = _simulate(epochs=10, base_per_epoch=10.0, costs=costs, overhead=0.5)
    for epoch, chosen in plans.items():
        if epoch < 9:
            assert PROJECTOR not in chosen or {MAPS_2D, MAPS_3D} & chosen


def test_an_output_runs_when_its_equal_share_of_the_released_budget_covers_it():
    # 40 s run, no known end: 10% = 4 s, minus 0.4 s of kNN so far and 0.1 s now: 0.875 s per output.
    clock = Clock(epoch=3, last_epoch=None, every=1, base=40.0, spent=0.4)
    assert plan_outputs(clock, COSTS, OUTPUTS, overhead=0.1) == frozenset()
    clock = Clock(epoch=3, last_epoch=None, every=1, base=60.0, spent=0.4)  # 1.375 s each
    assert plan_outputs(clock, COSTS, OUTPUTS, overhead=0.1) == frozenset({FIGURES})
    spent = Clock(epoch=3, last_epoch=None, every=1, base=60.0, spent=1.4, spent_by={FIGURES: 1.0})
    assert plan_outputs(spent, COSTS, OUTPUTS, overhead=0.1) == frozenset()


def test_without_a_known_end_the_plan_paces_on_the_time_run_so_far():
    plans, spent = _simulate(epochs=12, base_per_epoch=10.0, costs=COSTS, overhead=0.2, known_end=False)
    assert spent <= 0.2 * 10.0 * 12 + COSTS[KNN]
    assert any(MAPS_2D in chosen for chosen in plans.values())


def test_the_last_analysed_epoch_is_unknown_when_max_steps_may_end_the_run():
    assert last_analysed_epoch(10, 1) == 9
    assert last_analysed_epoch(10, 3) == 9
    assert last_analysed_epoch(10, 4) == 8
    assert last_analysed_epoch(10, 1, max_steps=100) is None
    assert last_analysed_epoch(-1, 1) is None


def test_the_last_epoch_makes_what_the_budget_of_the_whole_fit_still_covers_cheapest_first():
    due = frozenset(OUTPUTS)
    # 10% of 60 s = 6 s; 1 s spent, 0.1 s of kNN now: 4.9 s left: figures (1) and 2-D maps (3), not 3-D (6)
    clock = Clock(epoch=9, last_epoch=9, every=1, base=60.0, spent=1.0)
    chosen, left = size_last_epoch(clock, COSTS, due, overhead=0.1)
    assert chosen == frozenset({FIGURES, MAPS_2D, PROJECTOR}) and left == pytest.approx(0.4)
    poor = Clock(epoch=9, last_epoch=9, every=1, base=10.0, spent=0.5)
    assert size_last_epoch(poor, COSTS, due, overhead=0.1)[0] == frozenset()  # 1 s of budget, all spent
    only_maps = size_last_epoch(clock, {**COSTS, MAPS_2D: 100.0}, due, overhead=0.1)[0]
    assert PROJECTOR not in only_maps  # never without a map


def test_overhead_that_is_not_a_positive_share_fails_early_naming_the_argument():
    with pytest.raises(ValueError, match="Expected `overhead` to be None or a share of fit time"):
        FeatureVisualizer(["input"], overhead=0)
    with pytest.raises(ValueError, match="Expected `maps.every_n_epochs` to be None or an integer"):
        FeatureVisualizer(["input"], maps=MapOptions(every_n_epochs="sometimes"))


def test_a_fit_stopped_by_max_steps_makes_the_missing_outputs_of_its_last_epoch_when_it_ends(tmp_path, small_data):
    maps = MapOptions(dims=[2], every_n_epochs=10)
    visualizer = FeatureVisualizer(["input", "pool"], k=5, max_samples=80, overhead=None, maps=maps)
    trainer = tiny_trainer(
        tmp_path, max_epochs=5, max_steps=8, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer]
    )
    trainer.fit(TinyNet(), datamodule=small_data)
    events = read_events(tmp_path)
    assert trainer.current_epoch < 4  # stopped by max_steps, at epoch 1: its end was not known in advance
    steps = [event.step for event in events.Images("featviz/tsne_2d/pool")]
    purity = [event.step for event in events.Scalars("featviz/knn_purity@5/pool")]
    assert steps == [purity[0], purity[-1]]  # the first analysed epoch (the schedule), the last (when fit ended)


def test_a_resumed_fit_plans_from_the_epochs_it_runs_not_from_epoch_zero():
    # Resumed at epoch 10 of 20: 10 s of base is one epoch, so the run ahead is 10 epochs of 10 s.
    fresh = Clock(epoch=0, last_epoch=9, every=1, base=10.0, spent=0.0)
    resumed = Clock(epoch=10, last_epoch=19, every=1, base=10.0, spent=0.0, first_epoch=10)
    assert plan_outputs(fresh, COSTS, OUTPUTS, 1.0) == frozenset({FIGURES})
    assert plan_outputs(resumed, COSTS, OUTPUTS, 1.0) == frozenset({FIGURES})


def test_a_background_report_is_charged_to_the_budget_but_not_taken_out_of_the_base_time():
    """A report on another process runs while fit goes on: fit's base time is not shorter for it (taking it out
    printed "20101% used" when background reports outlasted the epochs)."""
    budget = TimeBudget(0.1)
    budget.start()
    budget.spend(1000.0, alongside=True)  # far more than the run so far
    clock = budget.clock(epoch=0, last_epoch=9, every=1)
    assert clock.spent == 1000.0 and clock.base > 1e-6  # the base is the time fit ran, not clamped to nothing


def test_the_forward_hooks_time_counts_as_the_callbacks_not_as_trainings(tmp_path, small_data):
    """A layer's reduction runs inside the model's forward (here a callable that takes 50 ms a batch): the budget
    charges it to the callback, as it does the rest of the capture, instead of counting it as training time."""

    def slow_pool(output):
        time.sleep(0.05)
        return output.flatten(1)

    capture = CaptureOptions(reduction={"pool": slow_pool})
    visualizer = FeatureVisualizer(["pool"], k=5, max_samples=80, capture=capture)
    trainer = tiny_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0, logger=False, callbacks=[visualizer])
    trainer.fit(TinyNet(), datamodule=small_data)
    batches = trainer.num_val_batches[0]  # 160 validation images, batches of 32
    assert batches == 5
    assert visualizer._plan.budget.clock(epoch=0, last_epoch=0, every=1).spent >= batches * 0.05
