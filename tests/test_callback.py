"""Real Trainer runs of the callback, read back with TensorBoard's own reader."""

import pickle
import random

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyNet, hooks_left, read_events, tiny_trainer
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, Dataset, Subset

from lightning_featviz import CaptureOptions, FeatureVisualizer, MapOptions, OutputOptions, ResourceOptions
from lightning_featviz.demo.model import ClassificationData
from lightning_featviz.options import GROUPS

LAYERS = ["input", "conv2", "pool"]


def _visualizer(*args, **kwargs) -> FeatureVisualizer:
    """The callback with maps and confusion figures off: these tests are about capture, kNN and logging
    (maps have their own tests; the invariance test below runs every output)."""
    defaults = {"maps": False, "outputs": OutputOptions(confusion=False)}
    return FeatureVisualizer(*args, overhead=None, **{**defaults, **kwargs})


def test_fit_logs_the_documented_scalar_and_image_tags(tmp_path, small_data):
    visualizer = _visualizer(layers=LAYERS, k=5, max_samples=120, outputs=OutputOptions(query_indices=[3, 50, 7]))
    model = TinyNet()
    trainer = tiny_trainer(tmp_path, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer])
    trainer.fit(model, datamodule=small_data)

    events = read_events(tmp_path)
    scalars, images = set(events.Tags()["scalars"]), set(events.Tags()["images"])
    for layer in LAYERS:
        for kind in ("knn_purity", "knn_accuracy"):
            values = events.Scalars(f"featviz/{kind}@5/{layer}")
            assert len(values) == 2  # two epochs; the sanity check is not logged
            assert all(0.0 <= v.value <= 1.0 for v in values)
        assert f"featviz/neighbours/{layer}" in images
    assert not any("purity_of_class" in tag for tag in scalars)  # per-class purity: a figure, not C scalars
    side_by_side = events.Images("featviz/neighbours/input_vs_pool")
    assert len(side_by_side) == 2 and side_by_side[0].width > side_by_side[0].height
    assert "featviz/knn_purity@5/pool" in trainer.callback_metrics
    assert not any("purity_of_class" in tag for tag in trainer.callback_metrics)
    assert [row["layer"] for row in visualizer.history] == LAYERS * 2
    assert hooks_left(model) == 0


def test_purity_is_computed_on_the_same_samples_every_epoch(tmp_path, small_data):
    visualizer = _visualizer(layers=["input"], k=5, max_samples=100, seed=1)
    tiny_trainer(tmp_path, logger=False, callbacks=[visualizer]).fit(TinyNet(), datamodule=small_data)
    first, second = (row["knn_purity"] for row in visualizer.history)
    assert first == second  # pixel space does not train: same samples give the same purity


def test_an_argument_changed_after_construction_reaches_every_part_at_the_next_run(tmp_path, small_data):
    visualizer = _visualizer(layers=LAYERS, k=5, max_samples=120, outputs=OutputOptions(neighbour_grids=False))
    visualizer.k = 3  # read at setup, by the capture, the analysis and the report alike
    trainer = tiny_trainer(tmp_path, logger=False, callbacks=[visualizer])
    trainer.validate(TinyNet(), datamodule=small_data, verbose=False)
    assert "featviz/knn_purity@3/pool" in trainer.callback_metrics
    assert not any("@5" in name for name in trainer.callback_metrics)


def test_model_checkpoint_and_early_stopping_can_monitor_purity(tmp_path, small_data):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="featviz/knn_purity@5/pool", mode="max")
    early_stopping = EarlyStopping(monitor="featviz/knn_purity@5/pool", mode="max", patience=5)
    visualizer = _visualizer(LAYERS, k=5)
    trainer = tiny_trainer(
        tmp_path, logger=False, enable_checkpointing=True, callbacks=[visualizer, checkpoint, early_stopping]
    )
    trainer.fit(TinyNet(), datamodule=small_data)
    purities = [row["knn_purity"] for row in visualizer.history if row["layer"] == "pool"]
    assert len(purities) == 2  # both epochs analysed
    # Both callbacks read the value the visualizer computed: the best of the two epochs.
    assert float(checkpoint.best_model_score) == pytest.approx(max(purities))
    assert float(early_stopping.best_score) == pytest.approx(max(purities))


def test_an_exception_mid_epoch_leaves_no_hook_on_the_model(tmp_path, small_data):
    model = TinyNet(fail_at_batch=2)
    trainer = tiny_trainer(tmp_path, logger=False, callbacks=[_visualizer(LAYERS, k=5)])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(model, datamodule=small_data)
    assert hooks_left(model) == 0


def test_an_unknown_layer_fails_at_setup_with_close_matches(tmp_path, small_data):
    trainer = tiny_trainer(tmp_path, logger=False, callbacks=[_visualizer(["input", "conv3"], k=5)])
    with pytest.raises(ValueError, match=r"got 'conv3'.*Close matches: \['conv2', 'conv1'\]"):
        trainer.fit(TinyNet(), datamodule=small_data)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, r"Expected `k` to be an integer >= 1, but got 0"),
        ({"k": 10, "max_samples": 10}, r"Expected `max_samples` to be an integer > k = 10, but got 10"),
        ({"capture": {"input_size": -2}}, r"Expected `capture.input_size` to be an integer >= 1, but got -2"),
        ({"capture": {"thumbnail_size": 0}}, "capture.thumbnail_size"),
        ({"capture": {"metric": "manhattan"}}, "capture.metric"),
        ({"capture": {"reduction": "max"}}, "capture.reduction"),
        ({"capture": {"reference": "test"}}, "capture.reference"),
        ({"capture": {"max_reference": 10}, "k": 10}, r"Expected `capture.max_reference` to be an integer > k = 10"),
        ({"outputs": {"query_indices": [3, -1]}}, "outputs.query_indices"),
        ({"layers": []}, "layers"),
        ({"layers": "avgpool"}, "layers"),
        ({"capture": {"image_mean": [0.5, 0.5, 0.5]}}, "capture.image_std"),
        ({"maps": {"perplexity": 0}}, r"Expected `maps.perplexity` to be a number > 0, but got 0"),
        ({"maps": "yes"}, r"Expected `maps` to be MapOptions\(...\) or True/False, but got 'yes'"),
    ],
)
def test_bad_arguments_fail_in_init_naming_argument_and_value(kwargs, match):
    with pytest.raises(ValueError, match=match):  # a group's field fails where the group is made
        groups = {name: GROUPS[name](**value) for name, value in kwargs.items() if isinstance(value, dict)}
        FeatureVisualizer(overhead=None, **{**kwargs, **groups})


def test_without_tensorboard_figures_and_metrics_go_to_files_with_one_warning(tmp_path, small_data):
    trainer = tiny_trainer(tmp_path, logger=CSVLogger(tmp_path), callbacks=[_visualizer(LAYERS, k=5, max_samples=60)])
    with pytest.warns(UserWarning, match="No TensorBoard logger") as record:
        trainer.fit(TinyNet(), datamodule=small_data)
    assert len([w for w in record if "No TensorBoard logger" in str(w.message)]) == 1
    root = tmp_path / "lightning_logs" / "version_0" / "featviz"
    assert len(list((root / "featviz" / "neighbours" / "pool").glob("step=*.png"))) == 2
    assert "featviz/knn_purity@5/conv2" in (root / "metrics.csv").read_text()
    assert len((root / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_degenerate_epoch_warns_once_and_training_goes_on(tmp_path, digits_val):
    data = ClassificationData(
        Subset(digits_val, range(64)), Subset(digits_val, range(64, 72)), digits_val.classes, batch_size=4
    )
    trainer = tiny_trainer(tmp_path, logger=False, callbacks=[_visualizer(LAYERS, k=10)])
    with pytest.warns(UserWarning, match="fewer than k \\+ 1 = 11") as record:
        trainer.fit(TinyNet(), datamodule=data)
    assert trainer.state.finished and len([w for w in record if "fewer than k" in str(w.message)]) == 1


def test_a_single_class_epoch_warns_and_skips(tmp_path, digits_val):
    zeros = [i for i in range(1000) if digits_val.targets[i] == 0][:40]
    data = ClassificationData(
        Subset(digits_val, range(64)), Subset(digits_val, zeros), digits_val.classes, batch_size=8
    )
    visualizer = _visualizer(LAYERS, k=5)
    with pytest.warns(UserWarning, match="single class"):
        tiny_trainer(tmp_path, logger=False, callbacks=[visualizer]).fit(TinyNet(), datamodule=data)
    assert visualizer.history == []


class DictDigits(Dataset):
    def __init__(self, base, scale_labels=False):
        self.base, self.scale_labels = base, scale_labels

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, label = self.base[i]
        return {"pixels": image, "target": float(label) if self.scale_labels else label, "index": i}


class DictNet(TinyNet):
    def training_step(self, batch, batch_idx):
        return super().training_step((batch["pixels"], batch["target"].long()), batch_idx)

    def validation_step(self, batch, batch_idx):
        return super().validation_step((batch["pixels"], batch["target"].long()), batch_idx)


def test_dict_batches_with_a_custom_extractor_and_indices(tmp_path, digits_val):
    data = ClassificationData(
        DictDigits(Subset(digits_val, range(96))), DictDigits(Subset(digits_val, range(96, 200))), digits_val.classes
    )
    visualizer = _visualizer(
        LAYERS, k=5, capture=CaptureOptions(batch_extractor=lambda b: (b["pixels"], b["target"], b["index"]))
    )
    tiny_trainer(tmp_path, logger=False, callbacks=[visualizer]).fit(DictNet(), datamodule=data)
    assert len(visualizer.history) == 6


def test_labels_that_are_not_class_ids_fail_in_the_sanity_check_with_a_hint(tmp_path, digits_val):
    data = ClassificationData(
        DictDigits(Subset(digits_val, range(64)), True), DictDigits(Subset(digits_val, range(64, 128)), True), []
    )
    visualizer = _visualizer(LAYERS, k=5, capture=CaptureOptions(batch_extractor=lambda b: (b["pixels"], b["target"])))
    with pytest.raises(TypeError, match="integer class ids.*batch_extractor"):
        tiny_trainer(tmp_path, logger=False, callbacks=[visualizer]).fit(DictNet(), datamodule=data)


def test_a_shuffled_validation_loader_is_refused_with_a_hint(tmp_path, small_data):
    class Shuffled(ClassificationData):
        def val_dataloader(self):
            return DataLoader(self.val, batch_size=16, shuffle=True)

    data = Shuffled(small_data.train, small_data.val, small_data.classes, batch_size=32)
    visualizer = _visualizer(LAYERS, k=5)
    with pytest.warns(UserWarning, match="shuffle=False"):
        tiny_trainer(tmp_path, logger=False, callbacks=[visualizer]).fit(TinyNet(), datamodule=data)
    assert visualizer.history == []


@pytest.mark.parametrize("background", [False, True])
def test_reference_train_searches_training_images_and_does_not_change_training(tmp_path, small_data, background):
    def run(callbacks, name):
        pl.seed_everything(7, verbose=False)
        model = TinyNet()
        trainer = tiny_trainer(tmp_path, logger=TensorBoardLogger(tmp_path, name=name), callbacks=callbacks)
        trainer.fit(model, datamodule=small_data)
        events = read_events(trainer.log_dir)
        logged = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in ("val_loss", "val_acc")}
        rngs = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
        return model, rngs, logged

    # every output on (maps, projector, gallery, confusion, static report, reference="train"),
    # the report on the worker thread or in the loop
    visualizer = FeatureVisualizer(
        LAYERS,
        overhead=None,
        k=5,
        capture=CaptureOptions(reference="train", max_reference=100),
        resources=ResourceOptions(background=background),
        outputs=OutputOptions(monitor_class_purity=True, report_dir=tmp_path / "report"),
    )
    with_callback, rng_with, logged_with = run([visualizer], "with")
    without, rng_without, logged_without = run([], "without")
    for a, b in zip(with_callback.state_dict().values(), without.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(rng_with[0], rng_without[0])  # torch's, NumPy's and Python's global RNGs untouched
    assert np.array_equal(rng_with[1], rng_without[1]) and rng_with[2] == rng_without[2]
    assert logged_with == logged_without and len(logged_with["val_loss"]) == 2  # identical validation metrics
    assert len(visualizer.history) == 6 and with_callback.training
    assert all(p.requires_grad for p in with_callback.parameters()) and (tmp_path / "report" / "index.html").exists()


def test_validate_runs_the_analysis_and_the_callback_pickles(tmp_path, small_data):
    visualizer = _visualizer(LAYERS, k=5)
    trainer = tiny_trainer(tmp_path, logger=False, callbacks=[visualizer])
    trainer.validate(TinyNet(), datamodule=small_data)
    assert "featviz/knn_purity@5/input" in trainer.callback_metrics
    restored = pickle.loads(pickle.dumps(visualizer))
    assert restored.history == visualizer.history


def test_class_purity_reaches_callback_metrics_when_asked(tmp_path, small_data):
    trainer = tiny_trainer(
        tmp_path, logger=False, callbacks=[_visualizer(LAYERS, k=5, outputs=OutputOptions(monitor_class_purity=True))]
    )
    trainer.fit(TinyNet(), datamodule=small_data)
    assert any(tag.startswith("featviz/purity_of_class@5/pool/") for tag in trainer.callback_metrics)


class WithNaN(Dataset):
    def __init__(self, base, bad_index):
        self.base, self.bad_index = base, bad_index

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, label = self.base[i]
        return (torch.full_like(image, float("nan")) if i == self.bad_index else image), label


def test_nan_activations_warn_once_per_layer_and_skip_it(tmp_path, digits_val):
    val = WithNaN(Subset(digits_val, range(240, 340)), bad_index=5)
    data = ClassificationData(Subset(digits_val, range(96)), val, digits_val.classes, batch_size=32)
    visualizer = _visualizer(LAYERS, k=5)
    with pytest.warns(UserWarning, match="'pool' produced NaN or Inf") as record:
        tiny_trainer(tmp_path, logger=False, callbacks=[visualizer]).fit(TinyNet(), datamodule=data)
    assert len([w for w in record if "'pool' produced NaN" in str(w.message)]) == 1
    assert visualizer.history == []  # every layer sees the NaN image; training still finished
    assert not [w for w in record if "could not analyse" in str(w.message)]  # skipped, not failed


def test_negative_labels_warn_and_skip(tmp_path, digits_val):
    class Negative(Dataset):
        def __len__(self):
            return 64

        def __getitem__(self, i):
            return digits_val[i][0], -1 if i % 5 == 0 else digits_val[i][1]

    class IgnoreNegative(TinyNet):
        def validation_step(self, batch, batch_idx):
            x, y = batch
            return super().validation_step((x, y.clamp_min(0)), batch_idx)

    data = ClassificationData(Subset(digits_val, range(64)), Negative(), digits_val.classes, batch_size=16)
    visualizer = _visualizer(LAYERS, k=5)
    with pytest.warns(UserWarning, match="negative labels"):
        tiny_trainer(tmp_path, logger=False, callbacks=[visualizer]).fit(IgnoreNegative(), datamodule=data)
    assert visualizer.history == []


def test_the_bank_size_is_predicted_logged_and_measured_the_same(tmp_path, small_data, caplog):
    visualizer = FeatureVisualizer(LAYERS, overhead=None, k=5, max_samples=160, maps=MapOptions(every_n_epochs=None))
    with caplog.at_level("INFO"):
        tiny_trainer(tmp_path, max_epochs=1, logger=False, callbacks=[visualizer]).fit(TinyNet(), datamodule=small_data)
    line = next(r.getMessage() for r in caplog.records if "FeatureVisualizer bank" in r.getMessage())
    # input 3 x 16 x 16, conv2 16 channels, pool 16: 800 floats + a 32 x 32 thumbnail + 28 bytes each, and the
    # thumbnails' memo: a thumbnail and an index each
    predicted = 160 * (800 * 4 + 3 * 32 * 32 + 28 + 3 * 32 * 32 + 8) / 2**20
    assert f"= {predicted:.1f} MiB" in line and "768 (input) + 16 (conv2) + 16 (pool)" in line
    assert "float32" in line


def test_over_the_memory_budget_the_sanity_check_fails_naming_the_knobs(tmp_path, small_data):
    visualizer = _visualizer(LAYERS, k=5, resources=ResourceOptions(memory_budget_mb=0.01))
    trainer = tiny_trainer(tmp_path, logger=False, callbacks=[visualizer])
    with pytest.raises(
        ValueError, match="`resources.memory_budget_mb` = 0.01.*`max_samples`.*`capture.input_size`.*float16"
    ):
        trainer.fit(TinyNet(), datamodule=small_data)
    assert trainer.global_step == 0  # before any training


def test_without_a_sanity_check_an_oversized_bank_turns_the_callback_off_and_training_goes_on(tmp_path, small_data):
    visualizer = _visualizer(LAYERS, k=5, resources=ResourceOptions(memory_budget_mb=0.01))
    trainer = tiny_trainer(tmp_path, logger=False, num_sanity_val_steps=0, callbacks=[visualizer])
    with pytest.warns(UserWarning, match="FeatureVisualizer is off for this run"):
        trainer.fit(TinyNet(), datamodule=small_data)
    assert trainer.state.finished and visualizer.history == []


def test_float16_storage_gives_the_same_purity(tmp_path, small_data):
    histories = []
    for dtype in ("float32", "float16"):
        visualizer = FeatureVisualizer(
            LAYERS,
            overhead=None,
            k=5,
            capture=CaptureOptions(storage_dtype=dtype),
            maps=MapOptions(every_n_epochs=None),
        )
        pl.seed_everything(0)
        tiny_trainer(tmp_path / dtype, max_epochs=1, logger=False, callbacks=[visualizer]).fit(
            TinyNet(), datamodule=small_data
        )
        histories.append({row["layer"]: row["knn_purity"] for row in visualizer.history})
    for layer in LAYERS:
        assert histories[1][layer] == pytest.approx(histories[0][layer], abs=0.02)


def test_a_thousand_class_run_writes_at_most_ten_scalar_tags_per_layer_per_epoch(tmp_path):
    """Scalars grow with layers, not layers × classes (per-class purity is a figure by default)."""
    classes = [f"n{i:08d}" for i in range(1000)]  # ImageNet-like class ids
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(1000, 3, 16, 16, generator=generator), torch.arange(1000)
    dataset = torch.utils.data.TensorDataset(images, labels)
    data = ClassificationData(Subset(dataset, range(256)), dataset, classes, batch_size=250)
    layers = ["input", "pool"]
    visualizer = FeatureVisualizer(
        layers,
        overhead=None,
        k=5,
        max_samples=200,
        maps=MapOptions(dims=[2, 3]),
        resources=ResourceOptions(background=False),
    )
    trainer = tiny_trainer(tmp_path, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer], num_sanity_val_steps=0)
    with pytest.warns(UserWarning):  # over 50 classes: no confusion figure, the projector cannot colour them
        trainer.fit(TinyNet(num_classes=1000), datamodule=data)
    events = read_events(tmp_path)
    ours = [tag for tag in events.Tags()["scalars"] if tag.startswith("featviz/")]
    for layer in layers:
        tags = [tag for tag in ours if f"/{layer}/" in tag or tag.endswith(f"/{layer}")]
        assert 3 <= len(tags) <= 10, tags
        assert all(len(events.Scalars(tag)) <= 2 for tag in tags)  # at most one value per epoch (2 epochs)
    assert len(ours) <= 10 * len(layers)
    assert len(events.Images("featviz/purity_by_class/pool")) == 2


def test_the_state_key_names_layers_and_k_and_follows_a_change_after_construction():
    visualizer = FeatureVisualizer(["conv1", "pool"], k=5)
    assert visualizer.state_key == "FeatureVisualizer{'layers': ['conv1', 'pool'], 'k': 5}"
    assert visualizer.state_key is visualizer.state_key  # made once, read many times
    visualizer.k = 7
    assert visualizer.state_key == "FeatureVisualizer{'layers': ['conv1', 'pool'], 'k': 7}"
    assert FeatureVisualizer().state_key == "FeatureVisualizer{'layers': 'auto', 'k': 10}"
