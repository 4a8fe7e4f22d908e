"""One epoch's kNN analysis of a gathered bank (rank 0): whether the epoch means anything, then per
layer the neighbour statistics and the scalars every rank logs; :class:`~.results.EpochResults` holds the outcome."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor

from lightning_featviz.analysis.cache import ResultCache
from lightning_featviz.analysis.heap import release_free_heap
from lightning_featviz.analysis.knn import Metric, NeighbourStats, neighbour_stats
from lightning_featviz.capture.bank import BankData
from lightning_featviz.capture.warn import Warn

#: Above this share of tied neighbourhoods a layer's purity is undefined.
MAX_TIED = 0.5
#: Query-reference pairs from which a layer's search gives the C heap's free pages back before the next layer's
#: (:func:`~lightning_featviz.analysis.heap.release_free_heap`, ~1 ms a call): a search of 2,000 x 2,000 frees blocks
#: glibc keeps anyway, one of 20,000 x 20,000 tens of MB (``benchmarks/memory.py --large``).
HEAP_PAIRS = 2**22
Tag = Callable[..., str]


def degenerate(bank: BankData, reference: BankData | None, k: int) -> tuple[str, str] | None:
    """``(key, message)`` when the epoch cannot be analysed — too few samples for k neighbours,
    negative labels, a single class — else None."""
    searched = reference if reference is not None else bank
    if len(searched) < k + (1 if reference is None else 0) or len(bank) < 2:
        return "few", (
            f"FeatureVisualizer kept {len(searched)} samples this epoch, fewer than k + 1 = {k + 1}; "
            "metrics are skipped."
        )
    if int(bank.labels.min()) < 0 or (reference is not None and int(reference.labels.min()) < 0):
        return "negative", "FeatureVisualizer saw negative labels, which are not class ids; metrics are skipped."
    if int(bank.labels.unique().numel()) < 2:
        return "one-class", (
            "FeatureVisualizer saw a single class this epoch; class purity means nothing, metrics are skipped."
        )
    return None


@dataclass(frozen=True)
class LayerSearch:
    """How every layer of an epoch is searched.

    Attributes:
        k: neighbours per sample.
        num_classes: C.
        metric: the distance.
        device: where the search runs (a GPU's tensors take the torch search, the CPU's FAISS).
        chunk_size: queries per matrix product of the GPU search.
        exclude: (N,) the reference row that holds the same sample as each bank row (-1: none), or None.
        search_k: layer -> K, the neighbours its one search finds for every output of the epoch (maps, label
            issues: :func:`lightning_featviz.analysis.neighbourhoods.neighbours_needed`); absent: what purity needs.
    """

    k: int
    num_classes: int
    metric: Metric = "euclidean"
    device: torch.device = torch.device("cpu")
    chunk_size: int = 1024
    exclude: Tensor | None = None
    search_k: Mapping[str, int] = field(default_factory=dict)


def layer_stats(
    bank: BankData,
    reference: BankData | None,
    layers: Sequence[str],
    search: LayerSearch,
    cache: ResultCache[NeighbourStats],
    warn: Warn,
) -> tuple[dict[str, NeighbourStats], list[str]]:
    """kNN statistics of each layer's (N, D_layer) vectors, as ``search`` says: leave-one-out within ``bank``, or
    its queries searched in ``reference`` (never among the rows ``search.exclude`` names: the same sample).
    A layer with NaN/Inf values is skipped with a warning; a search whose inputs are bit-identical to
    the last epoch's (pixel space, frozen layers) is reused. ``search.search_k`` widens a layer's one
    search to the K neighbours the epoch's other outputs need; they take theirs from it.

    Returns:
        The statistics of each layer whose neighbourhoods are defined, and the layers whose are not:
        for most samples the neighbours tied at the k-th distance disagree on sharing the sample's
        class (a constant layer, a dead ReLU, many exact duplicates), so purity would depend on the
        order of the samples; each is warned about once.
    """
    stats: dict[str, NeighbourStats] = {}
    undefined: list[str] = []
    for layer in layers:
        vectors = bank.vectors[layer].float()  # float16 storage is computed on in float32
        reference_vectors = reference.vectors[layer].float() if reference is not None else None
        if not _all_finite(vectors) or (reference_vectors is not None and not _all_finite(reference_vectors)):
            warn(f"nan/{layer}", f"Layer {layer!r} produced NaN or Inf activations; it is skipped this epoch.")
            continue
        reference_labels = reference.labels if reference is not None else None
        device, wide_k = search.device, search.search_k.get(layer, 0)
        run = partial(
            neighbour_stats,
            vectors.to(device),
            bank.labels,
            search.k,
            search.num_classes,
            search.metric,
            reference=reference_vectors.to(device) if reference_vectors is not None else None,
            reference_labels=reference_labels,
            chunk_size=search.chunk_size,
            exclude=search.exclude,
            search_k=wide_k,
        )
        wide = torch.tensor([search.num_classes, wide_k])
        key = (vectors, bank.labels, reference_vectors, reference_labels, wide, search.exclude)
        found = cache.get(key, run)
        pairs = len(vectors) * (len(reference_vectors) if reference_vectors is not None else len(vectors))
        if pairs >= HEAP_PAIRS:  # the search's freed blocks, before the next layer's
            release_free_heap()
        if found.tied > MAX_TIED:
            undefined.append(layer)
            warn(
                f"tied/{layer}",
                f"Layer {layer!r}: {found.tied:.0%} of the samples have their k-th and (k+1)-th neighbours at the "
                "same distance, some of their class and some not (a constant layer, a dead ReLU, or many exact "
                "duplicates), so their purity depends on the order of the samples; the layer's purity is "
                "undefined (NaN) and it is not analysed.",
            )
            continue
        stats[layer] = found
    cache.next_round()
    return stats, undefined


def epoch_metrics(
    stats: dict[str, NeighbourStats],
    labels: Tensor,
    class_names: Sequence[str],
    tag: Tag,
    undefined: Sequence[str] = (),
    per_class: bool = False,
) -> dict[str, float]:
    """Per layer: kNN purity and kNN accuracy, by tag (NaN for the ``undefined`` layers); with
    ``per_class``, also the purity of each class present (C scalars per layer: 6,000 tags per epoch for
    ImageNet and 6 layers, so off by default; the per-class purity figure shows them instead)."""
    metrics: dict[str, float] = {}
    for layer in undefined:
        metrics[tag("knn_purity", layer)] = metrics[tag("knn_accuracy", layer)] = float("nan")
    for layer, layer_stats in stats.items():
        metrics[tag("knn_purity", layer)] = layer_stats.mean_purity
        metrics[tag("knn_accuracy", layer)] = layer_stats.accuracy(labels)
        if not per_class:
            continue
        for class_id, value in enumerate(layer_stats.class_purity.tolist()):
            if value == value:  # NaN: no sample of that class
                metrics[tag("purity_of_class", layer, "_".join(class_names[class_id].split()))] = value
    return metrics


def purity_ceiling(query_labels: Tensor, searched_labels: Tensor, k: int, leave_one_out: bool) -> float:
    """The highest mean kNN purity@k the samples allow: a query of a class with fewer than k other
    samples among those searched cannot have k neighbours of its class, however good the features.

    Args:
        query_labels: (Q,) class ids of the queries.
        searched_labels: (N,) class ids of the samples searched (the queries themselves, leave-one-out).
        k: neighbours per query.
        leave_one_out: the queries are the samples searched (a query is not its own neighbour).
    """
    size = int(max(query_labels.max(), searched_labels.max())) + 1
    available = torch.bincount(searched_labels, minlength=size) - int(leave_one_out)
    return float((available.clamp(0, k)[query_labels].float() / k).mean())


def _all_finite(vectors: Tensor) -> bool:
    # Two reductions instead of an (N, D) mask or a float64 copy: amax/amin propagate NaN, and an
    # infinity is the largest or smallest value.
    return bool(vectors.amax().isfinite() & vectors.amin().isfinite()) if vectors.numel() else True
