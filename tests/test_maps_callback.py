"""t-SNE maps and projector embeddings from real Trainer runs, read back by TensorBoard itself."""

import json
import math
import os
import re
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import tensorboard
from conftest import TinyNet, read_events, tiny_trainer
from google.protobuf import text_format
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
from torch import nn

from lightning_featviz import FeatureVisualizer, MapOptions, ResourceOptions

LAYERS = ["input", "conv2", "pool"]


def _fit_with_maps(tmp_path, digits_val, background):
    """Two epochs of TinyNet with maps and projector on, logged to TensorBoard."""
    from torch.utils.data import Subset

    from lightning_featviz.demo.model import ClassificationData

    data = ClassificationData(Subset(digits_val, range(240)), Subset(digits_val, range(240, 400)), digits_val.classes)
    visualizer = FeatureVisualizer(
        LAYERS, overhead=None, k=5, max_samples=120, resources=ResourceOptions(background=background)
    )
    trainer = tiny_trainer(tmp_path, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer])
    torch.manual_seed(0)
    trainer.fit(TinyNet(), datamodule=data)
    return tmp_path, trainer.log_dir, visualizer


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory, digits_val):
    """Reports rendered in the background process."""
    return _fit_with_maps(tmp_path_factory.mktemp("run"), digits_val, background=True)


def test_reports_rendered_in_the_background_process_equal_reports_rendered_in_the_loop(
    fitted_run, tmp_path, digits_val
):
    """Byte for byte, except what comes from t-SNE: the process computes on one thread, the loop on
    torch's default, and a PCA's last bits differ with the thread count (then the maps do a little)."""
    background, in_loop = read_events(fitted_run[0]), read_events(_fit_with_maps(tmp_path, digits_val, False)[0])
    assert background.Tags()["images"] and sorted(background.Tags()["images"]) == sorted(in_loop.Tags()["images"])
    assert sorted(background.Tags()["scalars"]) == sorted(in_loop.Tags()["scalars"])
    for tag in background.Tags()["images"]:
        pictures = [(e.step, e.width, e.height, e.encoded_image_string) for e in background.Images(tag)]
        others = [(e.step, e.width, e.height, e.encoded_image_string) for e in in_loop.Images(tag)]
        if "/tsne_" in tag:
            assert [p[:3] for p in pictures] == [p[:3] for p in others], tag
        else:
            assert pictures == others, tag
    for tag in background.Tags()["scalars"]:
        values, others = ([(e.step, e.value) for e in run.Scalars(tag)] for run in (background, in_loop))
        if "/tsne_" in tag:
            assert [v[0] for v in values] == [v[0] for v in others], tag
            assert np.allclose([v[1] for v in values], [v[1] for v in others], atol=0.05), tag
        else:
            assert values == others, tag


def test_maps_figures_and_quality_scalars_are_logged_every_epoch(fitted_run):
    tmp_path, _, _ = fitted_run
    events = read_events(tmp_path)
    images, scalars = set(events.Tags()["images"]), set(events.Tags()["scalars"])
    for d in ("2d", "3d"):
        for layer in LAYERS:
            assert len(events.Images(f"featviz/tsne_{d}/{layer}")) == 2
            for measure in ("tsne_trustworthiness@5", "tsne_purity@5"):
                values = [v.value for v in events.Scalars(f"featviz/{measure}/{layer}/{d}")]
                assert len(values) == 2 and all(0 <= v <= 1 for v in values)
            # the second epoch's map was warm-started from the first and aligned to it
            assert len(events.Scalars(f"featviz/tsne_displacement/{layer}/{d}")) == 1
        comparison = events.Images(f"featviz/tsne_{d}/input_vs_pool")
        assert len(comparison) == 2 and comparison[0].width > comparison[0].height
    assert "featviz/tsne_2d/all_layers" in images and "featviz/tsne_3d/all_layers" not in images
    # pixel space does not change: the same map again, not a refit that moves
    assert events.Scalars("featviz/tsne_displacement/input/2d")[0].value == 0.0
    assert "featviz/tsne_trustworthiness@5/pool/2d" in scalars


def test_wrong_cluster_gallery_confusion_and_depth_figures_are_logged(fitted_run):
    tmp_path, log_dir, visualizer = fitted_run
    events = read_events(tmp_path)
    images, scalars = set(events.Tags()["images"]), set(events.Tags()["scalars"])
    for layer in LAYERS:
        assert len(events.Images(f"featviz/neighbour_confusion/{layer}")) == 2
        assert len(events.Images(f"featviz/purity_by_class/{layer}")) == 2
        assert f"featviz/wrong_cluster_share@5/{layer}" in scalars
    assert len(events.Images("featviz/purity_by_depth/all_layers")) == 2
    # the last layer is the default for the gallery and the export
    assert "featviz/wrong_cluster/pool" in images and "featviz/wrong_cluster/input" not in images
    assert len(list((Path(log_dir) / "featviz_wrong_cluster").glob("epoch_00[01]_pool.csv"))) == 2
    assert visualizer.wrong_cluster_indices.keys() == set(LAYERS)


def test_projector_config_lists_the_latest_epoch_first_and_keeps_every_nth(fitted_run):
    _, log_dir, _ = fitted_run
    config = ProjectorConfig()
    with open(f"{log_dir}/projector_config.pbtxt") as handle:
        text_format.Parse(handle.read(), config)
    names = {e.tensor_name for e in config.embeddings}
    # epoch 1 is the latest; epoch 0 is kept (a multiple of projector.keep_every_n_epochs=5); epoch 1's
    # "latest" entries replaced epoch 0's
    expected = {
        f"{when}/epoch_{epoch:03d}/{layer}/{what}"
        for when, epoch in (("latest", 1), ("previous", 0))
        for layer in LAYERS
        for what in ("tsne_2d", "tsne_3d", "vectors")
    }
    assert names == expected
    assert min(names).startswith("latest/epoch_001/")  # the projector lists names in order, opens on the first
    flat = [e for e in config.embeddings if e.tensor_name.endswith("/tsne_2d")]
    assert flat and all(list(e.tensor_shape) == [120, 3] for e in flat)  # 2-D maps drawn with z = 0
    sprites = {e.sprite.image_path for e in config.embeddings}
    assert len(sprites) == 1  # the same samples every epoch: one sprite file


def test_the_readmes_projector_row_names_the_entries_the_projector_lists(fitted_run):
    _, log_dir, _ = fitted_run
    config = ProjectorConfig()
    text_format.Parse(Path(f"{log_dir}/projector_config.pbtxt").read_text(), config)
    names = {e.tensor_name for e in config.embeddings}
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| projector:"))
    patterns = []  # `latest/epoch_{e}/{layer}/{vectors,tsne_2d}`: {e} an epoch, {layer} a layer, {a,b} either
    for written in re.findall(r"`([^`]+)`", row.split(" | ")[0]):
        pattern = re.escape(written).replace(r"\{e\}", "[0-9]{3}").replace(r"\{layer\}", "[^/]+")
        pattern = re.sub(r"\\\{([^}]*)\\\}", lambda m: "(" + m.group(1).replace(",", "|") + ")", pattern)
        patterns.append(re.compile(pattern.replace(r"\.\.\.", ".+")))
    assert all(any(p.fullmatch(name) for p in patterns) for name in names), (row, sorted(names))
    assert all(any(p.fullmatch(name) for name in names) for p in patterns), (row, sorted(names))


def test_maps_state_is_saved_and_restored_for_warm_starts(fitted_run):
    _, _, visualizer = fitted_run
    state = visualizer.state_dict()
    again = FeatureVisualizer(LAYERS, overhead=None, k=5, max_samples=120)
    again.load_state_dict(torch.load(_saved(state), weights_only=True))
    indices = state["maps"]["pool\t2"]["indices"].numpy()
    assert len(indices) == 120
    np.testing.assert_array_equal(
        again._map_tracker.previous("pool", 2, indices), visualizer._map_tracker.previous("pool", 2, indices)
    )


def _saved(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


@pytest.fixture
def tensorboard_server(fitted_run):
    with tensorboard(fitted_run[0]) as url:
        yield url


def test_a_real_tensorboard_server_serves_the_embeddings_metadata_and_sprite(fitted_run, tensorboard_server):
    projector = f"{tensorboard_server}/data/plugin/projector"
    deadline = time.monotonic() + 120
    runs: list[str] = []
    while time.monotonic() < deadline:  # the server loads the log dir in the background
        runs = json.loads(_get(f"{projector}/runs"))
        if runs:
            break
        time.sleep(0.2)
    assert len(runs) == 1, runs
    run = urllib.parse.quote(runs[0])
    info = json.loads(_get(f"{projector}/info?run={run}"))
    names = {e["tensorName"] for e in info["embeddings"]}
    assert "latest/epoch_001/pool/vectors" in names and "latest/epoch_001/pool/tsne_3d" in names

    name = urllib.parse.quote("latest/epoch_001/pool/tsne_2d")
    metadata = _get(f"{projector}/metadata?run={run}&name={name}").decode().splitlines()
    assert metadata[0] == "class\tprediction\tcorrect\tindex\tpurity@5\twrong_cluster" and len(metadata) == 121
    rows = [line.split("\t") for line in metadata[1:]]
    digits = {f"class {d}" for d in range(10)}  # a word in front: the projector labels by the first text column
    assert all(label in digits and correct in ("true", "false") for label, _, correct, *_ in rows)
    assert all(0 <= float(purity) <= 1 for *_, purity, _ in rows)
    assert all(cluster == "-" or cluster in digits for *_, cluster in rows)

    # The projector shows exactly the map of the figures (the one the callback kept for warm starts), z = 0.
    tensor = np.frombuffer(_get(f"{projector}/tensor?run={run}&name={name}"), dtype=np.float32).reshape(-1, 3)
    _, _, visualizer = fitted_run
    indices = np.array([int(row[3]) for row in rows])
    np.testing.assert_allclose(
        tensor[:, :2], visualizer._map_tracker.previous("pool", 2, indices), rtol=1e-4, atol=1e-4
    )
    assert not tensor[:, 2].any()

    sprite = _get(f"{projector}/sprite_image?run={run}&name={name}")
    assert sprite[:3] == b"\xff\xd8\xff"  # a JPEG


class DeadLayerNet(TinyNet):
    """TinyNet with an extra layer whose output is always zero."""

    def __init__(self):
        super().__init__()
        self.dead = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
        nn.init.zeros_(self.dead[1].weight)
        nn.init.zeros_(self.dead[1].bias)
        self.dead.requires_grad_(False)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.pool(self.relu2(self.conv2(x)))
        self.dead(x)
        return self.fc(x.flatten(1))


def test_constant_layer_images_out_of_range_and_many_classes_each_warn_once(tmp_path, small_data):
    names = [f"class {i}" for i in range(60)]
    visualizer = FeatureVisualizer(["input", "dead", "pool"], overhead=None, k=5, max_samples=40, class_names=names)
    small_data.val = _Scaled(small_data.val)
    with pytest.warns(UserWarning) as record:
        tiny_trainer(tmp_path, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer]).fit(
            DeadLayerNet(), datamodule=small_data
        )
    messages = [str(w.message) for w in record]
    for expected in ("Layer 'dead'", "colours points by label only up to 50", "span [0, 255]"):
        assert sum(expected in m for m in messages) == 1, (expected, messages)
    assert sum("Perplexity 30.0 is too large for 40 samples" in m for m in messages) == 1
    events = read_events(tmp_path)
    assert any("Layer 'dead'" in m and "undefined (NaN)" in m for m in messages)  # not an index-order number
    assert len(events.Images("featviz/tsne_2d/pool")) == 2 and "featviz/tsne_2d/dead" not in events.Tags()["images"]
    assert all(math.isnan(value.value) for value in events.Scalars("featviz/knn_purity@5/dead"))


class _Scaled(torch.utils.data.Dataset):
    """Images in [0, 255] instead of [0, 1]."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return x * 255, y


class StillNet(TinyNet):
    """Trains with a learning rate so small, and batch-norm statistics frozen, that the model has
    stopped changing, though its features are not bit-identical from one epoch to the next."""

    def __init__(self):
        super().__init__()
        self.bn1.momentum = 0.0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-6)


def test_maps_of_a_model_that_stopped_changing_stay_in_place_from_epoch_to_epoch(tmp_path, small_data):
    visualizer = FeatureVisualizer(
        ["conv2", "pool"],
        overhead=None,
        k=5,
        max_samples=160,
        maps=MapOptions(dims=[2], every_n_epochs=1),
        projector=False,
    )
    trainer = tiny_trainer(tmp_path, max_epochs=3, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer])
    trainer.fit(StillNet(), datamodule=small_data)
    events = read_events(tmp_path)
    for layer in ("conv2", "pool"):
        # mean distance a point moved, over the map's RMS radius: a few percent at most
        moves = [v.value for v in events.Scalars(f"featviz/tsne_displacement/{layer}/2d")]
        assert len(moves) == 2 and 0 < max(moves) < 0.05


@pytest.mark.parametrize("background", [True, False])
def test_a_failing_report_warns_once_and_training_and_other_outputs_go_on(tmp_path, small_data, background):
    logger = TensorBoardLogger(tmp_path)
    Path(logger.log_dir).mkdir(parents=True)
    (Path(logger.log_dir) / "featviz_projector").write_text("a file where a folder should go")  # a broken disk
    visualizer = FeatureVisualizer(
        LAYERS,
        overhead=None,
        k=5,
        max_samples=60,
        maps=MapOptions(dims=[2], every_n_epochs=1),
        resources=ResourceOptions(background=background),
    )
    trainer = tiny_trainer(tmp_path, max_epochs=3, logger=logger, callbacks=[visualizer])
    with pytest.warns(UserWarning, match="could not analyse or report an epoch") as record:
        trainer.fit(TinyNet(), datamodule=small_data)
    assert trainer.state.finished and trainer.current_epoch == 3
    assert sum("could not analyse or report" in str(w.message) for w in record) == 1
    events = read_events(tmp_path)
    assert len(events.Images("featviz/tsne_2d/pool")) == 3  # everything before the projector was written
    assert len(visualizer.history) == 3 * len(LAYERS)


def test_reports_left_when_fit_ends_render_on_every_core(tmp_path, small_data, monkeypatch):
    """While training runs the report process takes one thread; the reports still queued when
    ``fit`` ends, with nothing training, take every core."""
    from pytorch_lightning import Callback

    from lightning_featviz.runtime.report_process import ReportProcess

    training_done, asked = threading.Event(), []
    render = ReportProcess.render

    def recorded(self, job, threads=1):
        asked.append(threads)
        if len(asked) == 1:
            training_done.wait(timeout=60)  # hold the first report until training is over
        return render(self, job, threads)

    monkeypatch.setattr(ReportProcess, "render", recorded)

    class TrainingDone(Callback):  # runs before the visualizer's own on_fit_end
        def on_fit_end(self, trainer, pl_module):
            training_done.set()

    visualizer = FeatureVisualizer(
        ["conv2", "pool"],
        overhead=None,
        k=5,
        max_samples=60,
        maps=MapOptions(dims=[2]),
        resources=ResourceOptions(background=True),
    )
    callbacks = [TrainingDone(), visualizer]
    trainer = tiny_trainer(tmp_path, max_epochs=2, logger=TensorBoardLogger(tmp_path), callbacks=callbacks)
    trainer.fit(TinyNet(), datamodule=small_data)
    assert asked == [1, os.cpu_count()]  # the first during training, the second after it
    assert len(read_events(tmp_path).Images("featviz/tsne_2d/pool")) == 2


class WithTwin(TinyNet):
    """TinyNet with a layer that passes the pooled features through unchanged (as a ResNet's
    ``avgpool`` does ``layer4``'s 1×1 maps on 32-px images)."""

    def __init__(self):
        super().__init__()
        self.same = nn.Identity()

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.same(self.pool(self.relu2(self.conv2(x))))
        return self.fc(x.flatten(1))


def test_two_identical_layers_are_said_once_and_drawn_once(tmp_path, digits_val):
    from torch.utils.data import Subset

    from lightning_featviz.demo.model import ClassificationData

    data = ClassificationData(Subset(digits_val, range(96)), Subset(digits_val, range(96, 196)), digits_val.classes)
    visualizer = FeatureVisualizer(
        ["input", "pool", "same"],
        overhead=None,
        k=5,
        maps=MapOptions(dims=[2]),
        resources=ResourceOptions(background=False),
    )
    trainer = tiny_trainer(tmp_path, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer], num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match="Layers 'pool' and 'same' give identical vectors") as record:
        trainer.fit(WithTwin(), datamodule=data)
    assert sum("identical vectors" in str(w.message) for w in record) == 1  # two epochs, said once
    events = read_events(tmp_path)
    images, scalars = set(events.Tags()["images"]), set(events.Tags()["scalars"])
    assert "featviz/tsne_2d/same" in images and "featviz/tsne_2d/pool" not in images
    assert "featviz/neighbours/pool" not in images and "featviz/tsne_2d/input_vs_same" in images
    assert {"featviz/knn_purity@5/pool", "featviz/knn_purity@5/same"} <= scalars
