"""The data path's two new pieces, without a Trainer: the report job's half of the analysis filling the epoch's one
results object, and the run's folder, the sink that writes the files the report hands it."""

from __future__ import annotations

import csv

import numpy as np
import torch

from lightning_featviz.analysis.embedding import MapTracker
from lightning_featviz.analysis.epoch import OutputAnalysis, analyse_epoch
from lightning_featviz.analysis.knn import neighbour_stats
from lightning_featviz.analysis.results import EpochResults
from lightning_featviz.capture.bank import BankData
from lightning_featviz.outputs.projector import CONFIG_FILE, ProjectorEntry
from lightning_featviz.outputs.run_folder import RunFolder
from lightning_featviz.outputs.sinks import FolderSink


def _results(n: int = 60, k: int = 5) -> EpochResults:
    """Three clusters of 2-D-ish vectors with three labels (a few swapped), in layers ``a`` (= ``b``) and ``c``."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    vectors = torch.nn.functional.one_hot(labels, 3).float() * 4 + torch.randn(n, 3, generator=generator) * 0.3
    noisy = labels.clone()
    noisy[:3] = (labels[:3] + 1) % 3  # three labels in another class's cluster
    layers = {"a": vectors, "b": vectors.clone(), "c": vectors * 2 + 1}
    bank = BankData(torch.arange(n), noisy, noisy.clone(), torch.ones(n), layers, torch.zeros(n, 0))
    stats = {layer: neighbour_stats(v, noisy, k, 3, search_k=20) for layer, v in layers.items()}
    return EpochResults(bank, bank, stats, ["x", "y", "z"], k, epoch=2)


def test_analyse_epoch_fills_the_one_results_object_with_twins_maps_wrong_cluster_and_label_issues():
    results, warned = _results(), []
    wanted = OutputAnalysis(dims=(2,), map_samples=2000, label_issues=True, confusion=True)
    done = analyse_epoch(results, MapTracker(perplexity=5.0, n_jobs=1), wanted, lambda *warning: warned.append(warning))
    assert done.twins == {"a": "b"} and [key for key, _ in warned if key.startswith("identical")] == ["identical/a"]
    assert set(done.stats) == {"a", "b", "c"} and set(done.shown().stats) == {"b", "c"}  # scalars for all
    assert set(done.maps) == {"b", "c"} and done.maps["c"].maps[2].shape == (60, 2)
    assert set(done.wrong_cluster) == {"b", "c"} and set(done.wrong_cluster["c"].rows.tolist()) >= {0, 1, 2}
    assert done.label_issues is not None and done.label_issues.layer == "c"  # the last layer shown
    assert set(done.label_issues.validation.order()[:3].tolist()) == {0, 1, 2}
    assert set(done.confusion) == {"b", "c"} and done.confusion["c"].shape == (3, 3)
    assert {"maps_2d", "wrong_cluster", "label_issues", "confusion"} <= set(done.seconds)
    plain = analyse_epoch(results, MapTracker(perplexity=5.0, n_jobs=1), OutputAnalysis(), lambda *warning: None)
    assert plain.maps == {} and plain.label_issues is None and plain.confusion == {}
    assert set(plain.wrong_cluster) == {"b", "c"}


def test_the_run_folder_is_a_folder_sink_that_writes_tables_projector_entries_and_folder_files(tmp_path):
    folder = RunFolder(tmp_path)
    assert isinstance(folder, FolderSink) and folder.projector_dir is None
    rows = ({"rank": rank, "index": 10 + rank} for rank in range(1, 4))  # streamed
    path = folder.log_csv("featviz_wrong_cluster/epoch_002_layer", ["rank", "index"], rows, step=7)
    assert path == str(tmp_path / "featviz_wrong_cluster" / "epoch_002_layer.csv")
    with open(path, newline="") as handle:
        assert [row["index"] for row in csv.DictReader(handle)] == ["11", "12", "13"]
    entry = ProjectorEntry("latest/epoch_002/layer/vectors", np.ones((3, 2)), ["class", "index"], [["a", 1]] * 3)
    folder.log_projector([str(tmp_path / "tb")], [entry], "latest/")
    assert "latest/epoch_002/layer/vectors" in (tmp_path / "tb" / CONFIG_FILE).read_text()

    class Files:
        def write(self, root):
            (root / "tab.txt").write_text("written")

    folder.log_folder_files(Files(), step=7)
    assert (tmp_path / "tab.txt").read_text() == "written"
