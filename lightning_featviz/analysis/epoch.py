"""The part of an epoch's analysis that its report job runs, in the background: the layers that repeat another
(twins), the t-SNE maps, the images in the wrong cluster and the label issues, all into the epoch's one
:class:`~lightning_featviz.analysis.results.EpochResults` (whose kNN statistics the training process filled).

:func:`analyse_epoch` is the one entry; what it computes is what :class:`OutputAnalysis` asks for.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from lightning_featviz.analysis.embedding import MapTracker
from lightning_featviz.analysis.heap import release_free_heap
from lightning_featviz.analysis.label_issues import (
    IN_SAMPLE_MODEL_WEIGHT,
    LabelIssueOptions,
    LabelIssues,
    find_label_issues,
    label_issue_k,
)
from lightning_featviz.analysis.maps import fit_maps
from lightning_featviz.analysis.results import EpochResults, LabelIssueResults
from lightning_featviz.analysis.wrong_cluster import WrongCluster, find_wrong_cluster, neighbourhood_confusion
from lightning_featviz.capture.bank import BankData
from lightning_featviz.capture.warn import Warn


@dataclass(frozen=True)
class OutputAnalysis:
    """What an epoch's outputs need analysed beyond the kNN statistics.

    Attributes:
        dims: the map dimensions to fit this epoch (empty: no maps).
        map_samples: maps show at most this many bank rows (the same stratified rows every epoch).
        seed: the seed of the maps and of their rows.
        min_share: the wrong-cluster rule: the other class holds at least this share of the k neighbours.
        label_issues: score the label issues of the wrong-cluster layer.
        wrong_cluster_layer: that layer; None: the last layer shown.
        confusion: each shown layer's neighbourhood confusion matrix.
    """

    dims: Sequence[int] = ()
    map_samples: int = 2000
    seed: int = 0
    min_share: float = 0.6
    label_issues: bool = False
    wrong_cluster_layer: str | None = None
    confusion: bool = False


def identical_layers(bank: BankData, layers: Sequence[str]) -> dict[str, str]:
    """Layers whose (N, D) vectors equal, element for element, those of a later layer: twin -> that layer."""
    twins: dict[str, str] = {}
    for i, layer in enumerate(layers):
        vectors = bank.vectors[layer]
        later = (other for other in layers[i + 1 :] if bank.vectors[other].shape == vectors.shape)
        if (same := next((other for other in later if torch.equal(bank.vectors[other], vectors)), None)) is not None:
            twins[layer] = same
    return twins


def wrong_clusters(results: EpochResults, min_share: float) -> dict[str, WrongCluster]:
    """Per layer of ``results.stats``, the samples that sit in another class's cluster."""
    found = {}
    for layer, stats in results.stats.items():
        votes = (stats.votes, stats.vote_counts) if stats.vote_counts is not None else None  # kNN's majority
        labels, num_classes = results.bank.labels, len(results.class_names)
        found[layer] = find_wrong_cluster(results.neighbour_labels(layer), labels, num_classes, min_share, votes)
    return found


def known_probabilities(bank: BankData) -> Tensor | None:
    """The bank's (N, C) class probabilities, or None when no batch gave logits."""
    return bank.probabilities.float() if bank.probabilities.shape[1] > 1 else None


def validation_label_issues(results: EpochResults, layer: str, warn: Warn) -> LabelIssues:
    """The validation samples' label issues in ``layer``, searched like the kNN statistics: among themselves (the
    epoch's own search where it holds the label-issue k neighbours), or among the training reference. The list's
    scores, and those the label-issue layer's history records each analysed epoch."""
    bank, searched, num_classes = results.bank, results.searched, len(results.class_names)
    vectors, probabilities = bank.vectors[layer].float(), known_probabilities(bank)
    if searched is bank:
        stats, k = results.stats[layer], label_issue_k(bank.labels)
        shared = stats.neighbours(k) if stats.leave_one_out and stats.metric == "euclidean" else None
        options = LabelIssueOptions(k=k)
        return find_label_issues(
            vectors, bank.labels, num_classes, probabilities, options=options, warn=warn, neighbours=shared
        )
    reference = searched.vectors[layer].float()
    return find_label_issues(vectors, bank.labels, num_classes, probabilities, reference, searched.labels, warn=warn)


def label_issues_of(results: EpochResults, layer: str, warn: Warn) -> LabelIssueResults:
    """Label issues in ``layer``: of the validation samples (:func:`validation_label_issues`), and of the training
    reference's samples among themselves, with the model's in-sample probabilities tempered (None without one)."""
    validation, searched = validation_label_issues(results, layer, warn), results.searched
    if searched is results.bank:
        return LabelIssueResults(layer, validation)
    in_sample = LabelIssueOptions(model_weight=IN_SAMPLE_MODEL_WEIGHT)  # the model trained on these labels
    training = find_label_issues(
        searched.vectors[layer].float(),
        searched.labels,
        len(results.class_names),
        known_probabilities(searched),
        options=in_sample,
        warn=warn,
    )
    return LabelIssueResults(layer, validation, training)


def chosen_layer(results: EpochResults, layer: str | None) -> str | None:
    """The wrong-cluster layer: ``layer`` where given, else the last layer shown (None: no layer is)."""
    shown = list(results.shown().stats)
    return layer or (shown[-1] if shown else None)


def analyse_epoch(results: EpochResults, maps: MapTracker, wanted: OutputAnalysis, warn: Warn) -> EpochResults:
    """``results`` (the kNN statistics of an epoch) completed with what ``wanted`` asks for: the twin layers (each
    warned about once), the maps of the layers shown (``maps`` continues them from the last epoch; a layer whose map
    cannot be made is warned about and left out), every shown layer's wrong cluster and, where asked, the label
    issues of the wrong-cluster layer (where it is one of those) and each shown layer's neighbourhood confusion.
    ``seconds`` says what each part took."""
    twins = identical_layers(results.bank, list(results.stats))
    for twin, kept in twins.items():
        warn(
            f"identical/{twin}",
            f"Layers {twin!r} and {kept!r} give identical vectors (a ResNet's layer4 and avgpool do on small "
            f"images); figures and projector entries show {kept!r} only, the scalars are logged for both.",
        )
    results = replace(results, twins=twins, seconds={})
    shown = results.shown()
    if shown.stats and wanted.dims:
        fitted, seconds = fit_maps(
            maps, shown.bank, shown.stats, wanted.dims, shown.k, wanted.map_samples, wanted.seed, warn
        )
        results.maps = fitted
        results.seconds |= {f"maps_{d}d": spent for d, spent in seconds.items()}
    started = time.perf_counter()
    results.wrong_cluster = wrong_clusters(shown, wanted.min_share) if shown.stats else {}
    results.seconds["wrong_cluster"] = time.perf_counter() - started
    chosen = chosen_layer(results, wanted.wrong_cluster_layer)
    if wanted.label_issues and chosen in results.wrong_cluster:
        started = time.perf_counter()
        results.label_issues = label_issues_of(shown, chosen, warn)
        release_free_heap()  # the label-issue search's freed blocks
        results.seconds["label_issues"] = time.perf_counter() - started
    if wanted.confusion:
        started, num_classes = time.perf_counter(), len(shown.class_names)
        results.confusion = {
            layer: neighbourhood_confusion(shown.neighbour_labels(layer), shown.bank.labels, num_classes)
            for layer in shown.stats
        }
        results.seconds["confusion"] = time.perf_counter() - started
    return results
