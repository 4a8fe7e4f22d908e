"""Exact k-nearest-neighbour search and the class-purity statistics built on it.

Shapes: Q queries, N reference vectors, D dimensions, k neighbours, C classes. Vectors are rows:
``queries`` is (Q, D) and ``reference`` is (N, D).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import torch
from torch import Tensor

Metric = Literal["euclidean", "cosine"]
T = TypeVar("T")


def knn_search(
    queries: Tensor,
    reference: Tensor,
    k: int,
    metric: Metric = "euclidean",
    exclude_self: bool = False,
    chunk_size: int = 1024,
    backend: Literal["auto", "torch", "faiss"] = "auto",
) -> tuple[Tensor, Tensor]:
    """Exact k nearest neighbours of each query among the reference vectors.

    The torch search runs in chunks of ``chunk_size`` queries (memory O(chunk_size * N)), on the
    tensors' device. On the CPU, FAISS's exact ``IndexFlatL2`` is used when it is installed
    (``pip install lightning_featviz[faiss]``; faster on CPU, the same neighbours up to ties).

    Args:
        queries: (Q, D) float tensor.
        reference: (N, D) float tensor on the same device.
        k: neighbours per query; ``k <= N`` (``k <= N - 1`` with ``exclude_self``).
        metric: ``"euclidean"`` (L2 distance) or ``"cosine"`` (1 - cosine similarity).
        exclude_self: leave-one-out search; query ``i`` is reference row ``i`` and never its own
            neighbour (``queries`` and ``reference`` are the same set, Q == N).
        chunk_size: queries per matrix product.
        backend: ``"auto"`` (FAISS for CPU tensors when importable, else torch), ``"torch"`` or
            ``"faiss"``.

    Returns:
        ``(distances, indices)``, both (Q, k), nearest first; ``indices`` are rows of ``reference``.
    """
    if queries.ndim != 2 or reference.ndim != 2 or queries.shape[1] != reference.shape[1]:
        raise ValueError(
            f"Expected `queries` (Q, D) and `reference` (N, D) with the same D, "
            f"but got {tuple(queries.shape)} and {tuple(reference.shape)}."
        )
    available = reference.shape[0] - int(exclude_self)
    if not 1 <= k <= available:
        raise ValueError(
            f"Expected `k` to be in [1, {available}] for {reference.shape[0]} reference rows, but got {k}."
        )
    if exclude_self and queries.shape[0] != reference.shape[0]:
        raise ValueError("Expected `queries` and `reference` to be the same set with `exclude_self=True`.")
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"Expected `metric` to be 'euclidean' or 'cosine', but got {metric!r}.")

    queries, reference = queries.float(), reference.float()
    if metric == "cosine":
        queries = torch.nn.functional.normalize(queries, dim=1)
        reference = torch.nn.functional.normalize(reference, dim=1)
    if _use_faiss(backend, queries):
        sq, idx = _faiss_search(queries, reference, k, exclude_self)
    else:
        sq, idx = _torch_search(queries, reference, k, exclude_self, chunk_size)
    sq = sq.clamp_min_(0)
    return (0.5 * sq if metric == "cosine" else sq.sqrt()), idx  # unit vectors: ||q - r||^2 = 2 (1 - cos)


def _torch_search(
    queries: Tensor, reference: Tensor, k: int, exclude_self: bool, chunk_size: int
) -> tuple[Tensor, Tensor]:
    """Squared distances (Q, k) and indices (Q, k) by chunked matrix products and top-k."""
    ref_sq = torch.linalg.vector_norm(reference, dim=1).square()
    all_sq, all_idx = [], []
    for start in range(0, queries.shape[0], chunk_size):
        chunk = queries[start : start + chunk_size]
        # ||q - r||^2 = ||q||^2 - 2 q.r + ||r||^2; ||q||^2 is constant per row, so rank without it.
        scores = torch.addmm(ref_sq, chunk, reference.T, alpha=-2.0)
        if exclude_self:
            scores.diagonal(offset=start).fill_(float("inf"))
        top, idx = torch.topk(scores, k, dim=1, largest=False, sorted=True)
        all_sq.append(top + torch.linalg.vector_norm(chunk, dim=1).square()[:, None])
        all_idx.append(idx)
    return torch.cat(all_sq), torch.cat(all_idx)


def _use_faiss(backend: str, queries: Tensor) -> bool:
    if backend == "torch" or (backend == "auto" and queries.device.type != "cpu"):
        return False
    try:
        import faiss  # noqa: F401
    except ImportError:
        if backend == "faiss":
            raise ImportError("`backend='faiss'` needs FAISS: pip install faiss-cpu") from None
        return False
    return True


def _faiss_search(queries: Tensor, reference: Tensor, k: int, exclude_self: bool) -> tuple[Tensor, Tensor]:
    """Squared distances and indices from FAISS's exact ``IndexFlatL2``; leave-one-out by searching
    k + 1 and dropping the query itself (or, among exact duplicates, the farthest)."""
    import faiss

    index = faiss.IndexFlatL2(reference.shape[1])
    index.add(reference.detach().cpu().contiguous().numpy())
    found = index.search(queries.detach().cpu().contiguous().numpy(), k + int(exclude_self))
    sq, idx = torch.from_numpy(found[0]), torch.from_numpy(found[1])
    if exclude_self:
        is_self = idx == torch.arange(len(idx))[:, None]
        # keep the k entries that are not the query; where the query is missing, drop the last one
        drop = torch.where(is_self.any(dim=1), is_self.float().argmax(dim=1), torch.full((len(idx),), k))
        keep = torch.ones_like(idx, dtype=torch.bool)
        keep[torch.arange(len(idx)), drop] = False
        sq, idx = sq[keep].view(-1, k), idx[keep].view(-1, k)
    return sq, idx


def knn_purity(neighbour_labels: Tensor, labels: Tensor) -> Tensor:
    """Fraction of each sample's neighbours that share its label.

    Args:
        neighbour_labels: (Q, k) integer labels of the neighbours.
        labels: (Q,) integer labels of the queries.

    Returns:
        (Q,) float tensor in [0, 1].
    """
    return (neighbour_labels == labels[:, None]).float().mean(dim=1)


def knn_vote(neighbour_labels: Tensor, num_classes: int) -> Tensor:
    """Majority-vote class of each sample's neighbours, (Q, k) -> (Q,).

    A tie goes to the tied class that holds the nearest neighbour: the vote at rank r weighs
    ``1 + 2**-(r + 1)``, and all the bonuses together add up to less than one vote.
    """
    q, k = neighbour_labels.shape
    rank_bonus = torch.pow(2.0, -torch.arange(1, k + 1, dtype=torch.float64, device=neighbour_labels.device))
    weights = (1.0 + rank_bonus).expand(q, k)
    scores = torch.zeros(q, num_classes, dtype=torch.float64, device=neighbour_labels.device)
    scores.scatter_add_(1, neighbour_labels.long(), weights)
    return scores.argmax(dim=1)


def per_class_mean(values: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Mean of ``values`` (Q,) within each class of ``labels`` (Q,); (C,), NaN for absent classes."""
    sums = torch.zeros(num_classes, dtype=torch.float64).scatter_add_(0, labels.long().cpu(), values.double().cpu())
    counts = torch.bincount(labels.long().cpu(), minlength=num_classes).double()
    return (sums / counts).float()  # 0 / 0 -> NaN marks a class with no sample


@dataclass
class NeighbourStats:
    """kNN results for Q query samples against a reference set, k neighbours, C classes.

    Attributes:
        distances: (Q, k) distances, nearest first.
        indices: (Q, k) rows of the reference set.
        purity: (Q,) fraction of neighbours sharing the query's label.
        votes: (Q,) majority-vote class of the neighbours.
        class_purity: (C,) mean purity per true class (NaN where a class has no query).
    """

    distances: Tensor
    indices: Tensor
    purity: Tensor
    votes: Tensor
    class_purity: Tensor

    @property
    def mean_purity(self) -> float:
        return float(self.purity.mean())

    def accuracy(self, labels: Tensor) -> float:
        """Fraction of queries whose majority vote equals their label (``labels``: (Q,))."""
        return float((self.votes == labels).float().mean())


def neighbour_stats(
    vectors: Tensor,
    labels: Tensor,
    k: int,
    num_classes: int,
    metric: Metric = "euclidean",
    reference: Tensor | None = None,
    reference_labels: Tensor | None = None,
    chunk_size: int = 1024,
) -> NeighbourStats:
    """kNN statistics of ``vectors`` (Q, D) with ``labels`` (Q,).

    Without ``reference`` the search is leave-one-out within ``vectors``; with it, each query is
    searched among ``reference`` (N, D) whose labels are ``reference_labels`` (N,).
    """
    leave_one_out = reference is None
    if (reference is None) != (reference_labels is None):
        raise ValueError("Expected `reference` and `reference_labels` to be given together.")
    ref, ref_labels = (
        (vectors, labels) if reference is None or reference_labels is None else (reference, reference_labels)
    )
    distances, indices = knn_search(vectors, ref, k, metric, exclude_self=leave_one_out, chunk_size=chunk_size)
    neighbour_labels = ref_labels.to(indices.device)[indices]
    labels = labels.to(indices.device)
    purity = knn_purity(neighbour_labels, labels)
    return NeighbourStats(
        distances=distances.cpu(),
        indices=indices.cpu(),
        purity=purity.cpu(),
        votes=knn_vote(neighbour_labels, num_classes).cpu(),
        class_purity=per_class_mean(purity, labels, num_classes).cpu(),
    )


def _same(a: Tensor | None, b: Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


class ResultCache(Generic[T]):
    """Reuses results (kNN searches, t-SNE maps) whose inputs are bit-identical to earlier ones.

    Pixel space gives the same vectors every epoch, frozen layers do too, and some layers repeat
    another's vectors (a ResNet's ``layer4`` and ``avgpool`` on small images). Comparing inputs is
    O(N * D); the search it saves is O(N^2 * D). Only the entries used since the last
    :meth:`next_round` are kept, so memory stays at one round's inputs.
    """

    def __init__(self) -> None:
        self._previous: list[tuple[tuple[Tensor | None, ...], T]] = []
        self._current: list[tuple[tuple[Tensor | None, ...], T]] = []

    def get(self, key: tuple[Tensor | None, ...], compute: Callable[[], T]) -> T:
        """``compute()``'s result, or the one stored under an equal ``key`` (a tuple of tensors)."""
        stored = [
            result
            for stored_key, result in self._current + self._previous
            if len(stored_key) == len(key) and all(_same(a, b) for a, b in zip(stored_key, key, strict=True))
        ]
        result = stored[0] if stored else compute()
        self._current.append((key, result))
        return result

    def next_round(self) -> None:
        """Forget everything not used in the round that just ended."""
        self._previous, self._current = self._current, []
