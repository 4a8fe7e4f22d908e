"""The schedule of each output on a real Trainer run: the same outputs at the same epochs on every run, and the
budget's decisions read back from the event file as TensorBoard shows them."""

import pytorch_lightning as pl
from conftest import TinyNet, read_events, tiny_trainer
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_featviz import FeatureVisualizer, OutputOptions
from lightning_featviz.report.plan import SCHEDULE_TAG, OutputPlan


def _schedule_text(events) -> str:
    """The latest ``featviz/schedule`` text summary (the whole fit's table)."""
    return events.Tensors(f"{SCHEDULE_TAG}/text_summary")[-1].tensor_proto.string_val[0].decode()


def _logged(tmp_path, small_data, **options) -> tuple[dict[str, list[int]], list[int], str]:
    """One 3-epoch fit: the epochs (by step) of each image tag, the steps of the epochs, the schedule text."""
    pl.seed_everything(0, verbose=False)  # as a script would: the same weights, the same wrong clusters
    visualizer = FeatureVisualizer(["input", "pool"], k=5, max_samples=80, **options)
    trainer = tiny_trainer(tmp_path, max_epochs=3, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer])
    trainer.fit(TinyNet(), datamodule=small_data)
    events = read_events(tmp_path)
    steps = [event.step for event in events.Scalars("featviz/knn_purity@5/pool")]
    images = {tag: [steps.index(event.step) for event in events.Images(tag)] for tag in events.Tags()["images"]}
    return images, steps, _schedule_text(events)


def test_two_runs_of_one_script_log_the_same_outputs_at_the_scheduled_epochs(tmp_path, small_data):
    # maps follow the same cadence code (the last test); left off here, a t-SNE fit costs more than a fit
    options = {"overhead": None, "outputs": OutputOptions(every_n_epochs=2, confusion=False), "maps": False}
    first, steps, text = _logged(tmp_path / "a", small_data, **options)
    second, _, text_again = _logged(tmp_path / "b", small_data, **options)
    assert first == second and text == text_again
    # figures every 2nd analysed epoch and at the last: 0 and 2, none at 1
    assert first["featviz/neighbours/pool"] == [0, 2] and first["featviz/neighbours/input"] == [0, 2]
    assert len(steps) == 3  # the kNN scalars every analysed epoch
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[1] for row in rows] == ["kNN scalars, figures", "kNN scalars", "kNN scalars, figures"]
    assert "no time budget" in text


def test_the_budget_leaves_scheduled_outputs_out_and_the_event_file_says_which_and_why(tmp_path, small_data):
    options = {"overhead": 1e-6, "outputs": OutputOptions(every_n_epochs=1, confusion=False), "maps": False}
    images, _, text = _logged(tmp_path, small_data, **options)
    assert "featviz/neighbours/pool" not in images  # 1e-6 of a short fit pays for no figure
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 3 and all("| kNN scalars | figures |" in row for row in rows)
    assert all("of fit so far" in row and "they take" in row for row in rows)  # why: the budget's numbers


def test_the_schedule_counts_analysed_epochs_from_the_first_and_always_holds_the_last():
    plan = OutputPlan(None, 2, figures_every=3, maps_every=None, dims=(2,), projector=True)
    plan.start(0)
    due = {epoch: plan.scheduled(epoch, last=14) for epoch in range(0, 15, 2)}  # analysed: 0, 2, ..., 14
    assert [e for e, outputs in due.items() if outputs] == [0, 6, 12, 14]
    assert plan.wanted == ["figures"]  # maps off: neither maps nor projector
    maps = OutputPlan(None, 1, figures_every=None, maps_every=4, dims=(2, 3), projector=True)
    maps.start(10)  # a resumed fit counts from where it starts
    assert maps.scheduled(10, last=None) == {"maps_2d", "maps_3d", "projector"}
    assert [e for e in range(10, 20) if maps.scheduled(e, last=None)] == [10, 14, 18]
    assert [e for e in range(10, 20) if maps.scheduled(e, last=19)] == [10, 14, 18, 19]


def test_an_output_the_budget_left_out_teaches_the_budget_no_cost():
    """A report times its figures step even when it made none; that near-zero time must not become their cost
    (the budget would then plan on figures that cost nothing)."""
    plan = OutputPlan(0.1, 1, figures_every=1, maps_every=None, dims=(2,), projector=False)
    plan.start(0)
    plan.plan(True, 0, max_epochs=3, max_steps=-1, samples=100, mapped=100, widths=[8])
    assert plan.outputs == frozenset()  # microseconds into the fit, 10% buys no figure
    plan.record_report(0, {"figures": 0.001, "knn": 0.01}, 0.0, took_training_cores=False)
    assert plan.budget is not None and plan.budget.measured == {"knn": 0.01}
