"""One neighbour search per layer per epoch (counted in a real fit), equal to separate searches; map
subsamples; exact and sampled trustworthiness against scikit-learn."""

from collections import Counter

import numpy as np
import pytest
import torch
from conftest import TinyNet, read_events, tiny_trainer
from pytorch_lightning.loggers import TensorBoardLogger
from sklearn.manifold import trustworthiness as sklearn_trustworthiness

import lightning_featviz.analysis.embedding
import lightning_featviz.analysis.knn
import lightning_featviz.analysis.label_issues
import lightning_featviz.analysis.maps
from lightning_featviz import FeatureVisualizer, ResourceOptions
from lightning_featviz.analysis.knn import knn_search, neighbour_stats
from lightning_featviz.analysis.label_issues import LabelIssueOptions, find_label_issues
from lightning_featviz.analysis.neighbourhoods import map_k, map_rows, neighbours_needed, trustworthiness_estimate


def _clusters(n=300, d=12, classes=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, d, generator=generator) * 3
    return centres[labels] + torch.randn(n, d, generator=generator), labels


def test_a_widened_search_gives_the_same_purity_ties_and_neighbours_as_separate_searches():
    vectors, labels = _clusters()
    alone = neighbour_stats(vectors, labels, 10, 4)
    shared = neighbour_stats(vectors, labels, 10, 4, search_k=90)
    assert torch.equal(alone.indices, shared.indices) and torch.equal(alone.distances, shared.distances)
    assert torch.equal(alone.purity, shared.purity) and alone.tied == shared.tied
    assert shared.wide_indices is not None and shared.wide_indices.shape == (300, 90)
    for k in (15, 30, 90):  # the map's change check, t-SNE affinities at perplexity 10 and 30
        distances, indices = knn_search(vectors, vectors, k, exclude_self=True)
        got = shared.neighbours(k)
        assert got is not None and torch.equal(got[1], indices) and torch.allclose(got[0], distances)


def test_label_issues_from_the_shared_search_equal_label_issues_that_search_themselves():
    vectors, labels = _clusters()
    labels = labels.clone()
    labels[:12] = (labels[:12] + 1) % 4  # a few wrong labels to find
    shared = neighbour_stats(vectors, labels, 10, 4, search_k=90)
    alone = find_label_issues(vectors, labels, 4, options=LabelIssueOptions(k=20))
    reused = find_label_issues(vectors, labels, 4, neighbours=shared.neighbours(20), options=LabelIssueOptions(k=20))
    assert torch.equal(alone.scores, reused.scores) and torch.equal(alone.suggested, reused.suggested)


def test_trustworthiness_from_the_shared_search_equals_scikit_learns():
    vectors, _ = _clusters(n=400)
    rng = np.random.default_rng(0)
    embedding = vectors[:, :2].numpy() + rng.normal(scale=0.5, size=(400, 2))  # a poor map: many misses
    on_map = torch.as_tensor(embedding).float()
    map_neighbours = knn_search(on_map, on_map, 10, exclude_self=True)[1]
    reference = sklearn_trustworthiness(vectors.numpy(), embedding, n_neighbors=10)
    shared = knn_search(vectors, vectors, 45, exclude_self=True)
    with_shared, error = trustworthiness_estimate(vectors, map_neighbours, shared)
    searched_alone, _ = trustworthiness_estimate(vectors, map_neighbours)
    assert error == 0.0
    assert with_shared == pytest.approx(reference, abs=1e-6)
    assert searched_alone == pytest.approx(reference, abs=1e-6)


def test_a_sampled_trustworthiness_is_within_three_standard_errors_of_the_exact_one():
    vectors, _ = _clusters(n=1200)
    embedding = vectors[:, :2] + torch.randn(1200, 2, generator=torch.Generator().manual_seed(1))
    map_neighbours = knn_search(embedding, embedding, 10, exclude_self=True)[1]
    exact, _ = trustworthiness_estimate(vectors, map_neighbours)
    estimate, error = trustworthiness_estimate(vectors, map_neighbours, exact_limit=300)
    assert 0 < error < 0.02
    assert abs(estimate - exact) <= 3 * error


def test_the_search_width_is_what_the_largest_user_needs():
    assert neighbours_needed(2000, 10, 30.0, maps=False) == 21
    assert neighbours_needed(2000, 10, 30.0, maps=False, label_k=50) == 50
    assert neighbours_needed(2000, 10, 30.0, maps=True) == 90 == map_k(2000, 30.0, 10)
    assert neighbours_needed(40, 5, 30.0, maps=True) == 38  # 3 x the perplexity clamped to 13 - 1e-6


def test_map_rows_keep_each_class_share_and_are_the_same_dataset_samples_in_any_order():
    labels = torch.cat([torch.zeros(600), torch.ones(300), torch.full((100,), 2)]).long()
    indices = torch.randperm(5000, generator=torch.Generator().manual_seed(0))[:1000]
    rows = map_rows(labels, indices, 200, seed=3)
    assert rows is not None and len(rows) == 200
    assert Counter(labels[rows].tolist()) == {0: 120, 1: 60, 2: 20}
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(1))
    again = map_rows(labels[order], indices[order], 200, seed=3)
    assert again is not None and set(indices[order][again].tolist()) == set(indices[rows].tolist())
    assert map_rows(labels, indices, 1000) is None


def test_one_fit_epoch_searches_each_layers_vectors_once_for_every_output(tmp_path, small_data, monkeypatch):
    """Every search of layer vectors in the whole epoch (kNN, label issues, 2-D and 3-D maps and their
    quality, projector) is counted by query width; searches on the maps themselves (2 or 3 columns) are not."""
    widths: list[int] = []

    def counted(queries, *args, **kwargs):
        widths.append(int(queries.shape[1]))
        return knn_search(queries, *args, **kwargs)

    for module in (
        lightning_featviz.analysis.knn,
        lightning_featviz.analysis.embedding,
        lightning_featviz.analysis.maps,
        lightning_featviz.analysis.label_issues,
    ):
        monkeypatch.setattr(module, "knn_search", counted)
    visualizer = FeatureVisualizer(
        ["input", "pool"], k=5, max_samples=120, overhead=None, resources=ResourceOptions(background=False)
    )
    trainer = tiny_trainer(tmp_path, max_epochs=1, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer])
    torch.manual_seed(0)  # weights under which some samples sit in another class's cluster (a gallery to draw)
    trainer.fit(TinyNet(), datamodule=small_data)
    events = read_events(tmp_path)
    for tag in ("featviz/tsne_2d/pool", "featviz/tsne_3d/pool", "featviz/wrong_cluster/pool"):
        assert len(events.Images(tag)) == 1, tag
    assert len(events.Scalars("featviz/tsne_trustworthiness@5/pool/3d")) == 1
    counts = Counter(width for width in widths if width > 3)
    assert counts == {768: 1, 16: 1}  # input (3 x 16 x 16) and pool (16 channels): one search each


def test_a_large_bank_is_mapped_on_its_subsample_and_its_projector_entries_are_bounded(tmp_path):
    """1,200 samples x two 1,500-wide layers, maps of 400 rows: every entry holds those 400 rows, with
    their own metadata, and the vectors (400 x 3,000 = 1.2 M values < 2 M: kept whole) or, for a bank whose
    mapped vectors exceed 2 M values, their top 50 principal components."""
    from lightning_featviz.analysis.embedding import MapTracker
    from lightning_featviz.analysis.maps import fit_layer_maps
    from lightning_featviz.capture.bank import BankData
    from lightning_featviz.report.projector_entries import projector_entries

    n, width = 1200, 1500
    vectors, labels = _clusters(n=n, d=width, classes=5)
    indices = torch.arange(n) * 7
    bank = BankData(
        indices,
        labels,
        labels.clone(),
        torch.ones(n),
        {"a": vectors, "b": vectors * 2},
        torch.zeros(n, 3, 8, 8, dtype=torch.uint8),
    )
    stats = {layer: neighbour_stats(bank.vectors[layer], labels, 5, 5) for layer in ("a", "b")}
    rows = map_rows(labels, indices, 400)
    assert rows is not None
    tracker = MapTracker(perplexity=10.0)
    maps = {layer: fit_layer_maps(tracker, layer, bank, [2], 5, stats[layer], rows) for layer in ("a", "b")}
    assert maps["a"].maps[2].shape == (400, 2) and maps["a"].trust_error[2] == 0.0
    entries = projector_entries(bank, stats, maps, [str(c) for c in range(5)], 5, epoch=0)
    assert {entry.vectors.shape for entry in entries} == {(400, width), (400, 3)}
    first = entries[0]
    assert [row[3] for row in first.rows] == indices[rows].tolist()  # the index column: the mapped samples
    assert first.thumbnails is not None and len(first.thumbnails) == 400
    wide = BankData(indices, labels, labels.clone(), torch.ones(n), {"a": torch.cat([vectors] * 4, 1)}, bank.thumbnails)
    wide_stats = {"a": stats["a"]}
    wide_maps = {"a": fit_layer_maps(tracker, "a", wide, [2], 5, None, rows)}
    wide_entries = projector_entries(wide, wide_stats, wide_maps, [str(c) for c in range(5)], 5, epoch=0)
    vectors_entry = next(entry for entry in wide_entries if entry.name.endswith("/vectors"))
    assert vectors_entry.vectors.shape == (400, 50)  # 400 x 6,000 = 2.4 M values: top 50 components
