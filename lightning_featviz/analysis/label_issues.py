"""Label issues worth acting on: one score per sample from its neighbourhood's labels and the model's
probabilities, a suggested label, and a category in words.

Plain functions on arrays; nothing here draws or knows Lightning. Shapes: N samples, k neighbours,
C classes.

The score (see docs/label_issues.md):

1. **Neighbourhood label distribution** ``q`` (N, C): each sample's k nearest neighbours (leave-one-out)
   vote for their labels with weight ``exp(-d / d_k)`` (``d_k``: the distance to the k-th neighbour, so
   the nearest count most and the weights do not depend on the layer's scale), smoothed towards the
   classes' frequencies by one pseudo-vote.
2. **Combined distribution** ``r`` (N, C) ∝ ``q ** neighbour_weight * p ** model_weight`` where the
   model's softmax ``p`` is known (a product of experts: a class must be plausible to both, each tempered),
   else ``q`` alone: :data:`DEFAULT_NEIGHBOUR_WEIGHT` 0.5 and :data:`DEFAULT_MODEL_WEIGHT` 0.7 for samples
   the model did not train on. For training samples the model's probabilities are in-sample: a network that
   memorised its labels is sure of wrong ones too, so they are tempered further (``model_weight`` =
   :data:`IN_SAMPLE_MODEL_WEIGHT` 0.3).
3. **Class-dependent noise** (confident learning, Northcutt et al., JAIR 2021): from ``r`` and the given
   labels, :func:`noise_matrix` estimates ``T[i, j]`` = P(given label j | true class i). The posterior of
   the true class given the sample *and its given label* is ``r'[i] ∝ r[i] * T[i, given]`` (Bayes, the
   noise independent of the image given its class). Its counts are smoothed towards random flips (every
   pair of classes gets the mean off-diagonal count), so under random flips ``T`` is near-diagonal and
   near-uniform off it and changes little; when a class pair was mixed up systematically, its count stands
   out and ``T`` raises the posterior of the other class of the pair for exactly those samples, where the
   neighbourhood, itself voted by the swapped labels, cannot tell.
4. **Score** ``1 - r'[given label]``: high when neighbours and model together find the label unlikely.
   The suggested label is ``argmax r``: what neighbours and model say the image is.

Over 300 lines because the score, the class-noise estimate and the categories in words are one method
(docs/label_issues.md) with one notation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_featviz.analysis.knn import Metric, knn_search
from lightning_featviz.capture.warn import Warn

#: Columns of the relabelling CSV, in order.
CSV_COLUMNS = (
    "rank",
    "index",
    "path",
    "given_label",
    "suggested_label",
    "score",
    "category",
    "neighbour_share",
    "model_probability",
)
#: Category ids and their words; ``{n}`` is the neighbours' class, ``{m}`` the model's.
CATEGORIES = (
    "likely label error: neighbours and model agree on {n}",
    "ambiguous: neighbours say {n}, model says {m}",
    "model disagrees: model says {m}, neighbours agree with the label",
    "in another class's cluster: neighbours say {n}, model agrees with the label",
    "label agrees with neighbours and model",
    "neighbours say {n} (no model probabilities)",
    "label agrees with neighbours (no model probabilities)",
    "possible label error: neighbours and model agree on {n}",
)
#: A score from which neighbours and model agreeing on another class is a *likely* label error (the given label is
#: then less likely than not, after the class-noise step); below it a *possible* one: the data's other labels make
#: this mix-up rarer than the two sources alone say (a clean dataset's confusions).
LIKELY_LABEL_ERROR = 0.5
#: The exponents of the product ``q ** neighbour_weight * p ** model_weight``, chosen by
#: ``benchmarks/label_noise_dynamics.py`` on seeds 0-2 (docs/label_issues.md, "How the score is made"; before
#: issue 25's third round 1, 1 and 0.1): the neighbourhood's weight,
DEFAULT_NEIGHBOUR_WEIGHT = 0.5
#: the model's for samples it did not train on (validation),
DEFAULT_MODEL_WEIGHT = 0.7
#: and for training samples scored with in-sample probabilities.
IN_SAMPLE_MODEL_WEIGHT = 0.3
#: The noise matrix's background: every pair of classes gets this many times the mean off-diagonal count
#: (:func:`noise_matrix`; 0 before issue 25's third round).
NOISE_BACKGROUND = 1.0


def _ignore(key: str, message: str) -> None:
    """The default ``warn``: say nothing."""


def label_issue_k(labels: Tensor, num_reference: int | None = None) -> int:
    """A k for label issues: half the median class size, in [5, 50], at most ``num_reference - 1``.

    Larger than a display k (10): a label vote needs enough neighbours to outvote the mislabelled ones,
    and at most half a class keeps it within the class (``labels``: (N,) of the searched set). Chosen by
    ``benchmarks/label_noise_dynamics.py`` (docs/label_issues.md): on seeds 0-2 a fifth met 6 of the 10
    single-epoch targets, half 8; more than 50 was not measured.
    """
    counts = torch.bincount(labels.long().clamp_min(0))
    counts = counts[counts > 0]
    median = int(counts.float().median()) if len(counts) else 0
    k = min(50, max(5, median // 2))
    available = (num_reference if num_reference is not None else len(labels)) - 1
    return max(1, min(k, available))


def neighbour_label_distribution(
    distances: Tensor, neighbour_labels: Tensor, num_classes: int, prior: Tensor | None = None
) -> Tensor:
    """Distance-weighted label distribution of each sample's neighbours.

    Args:
        distances: (N, k) distances to the neighbours, nearest first.
        neighbour_labels: (N, k) their labels.
        num_classes: C.
        prior: (C,) class frequencies the distribution is smoothed towards by one pseudo-vote
            (default uniform).

    Returns:
        (N, C) float32, rows sum to 1.
    """
    n, k = neighbour_labels.shape
    distances = distances.float()
    scale = distances[:, -1:].clamp_min(1e-12)
    weights = torch.exp(-distances / scale)  # (N, k) in [1/e, 1]
    votes = torch.zeros(n, num_classes, dtype=torch.float32)
    votes.scatter_add_(1, neighbour_labels.long().cpu(), weights.cpu())
    votes = votes / weights.sum(dim=1, keepdim=True).cpu() * k
    prior = torch.full((num_classes,), 1.0 / num_classes) if prior is None else prior.float() / prior.sum()
    return (votes + prior[None]) / (k + 1)


def combine(neighbours: Tensor, probabilities: Tensor | None, neighbour_weight: float, model_weight: float) -> Tensor:
    """(N, C) product of experts ``q ** neighbour_weight * p ** model_weight``, rows normalised; ``q``
    alone where ``probabilities`` (N, C) is None or a row is not finite."""
    if probabilities is None:
        return neighbours
    probabilities = probabilities.float()
    known = probabilities.isfinite().all(dim=1) & (probabilities.sum(dim=1) > 0)
    product = neighbours.pow(neighbour_weight) * probabilities.nan_to_num(0.0).clamp_min(1e-30).pow(model_weight)
    product = torch.where(known[:, None], product, neighbours)
    return product / product.sum(dim=1, keepdim=True)


def noise_matrix(
    distribution: Tensor,
    labels: Tensor,
    num_classes: int,
    smoothing: float | None = None,
    background: float = NOISE_BACKGROUND,
) -> Tensor:
    """Estimate ``T[i, j]`` = P(given label j | true class i) by confident learning.

    A sample counts as "truly class i" when ``distribution[:, i]`` reaches the class's threshold
    ``t_i`` (the mean of ``distribution[:, i]`` over the samples labelled i), the likeliest such class
    where several do (Northcutt et al., "Confident Learning", JAIR 2021; cleanlab's confident joint).
    The counts ``C[j, i]`` (given j, true i) are rescaled so each given label's row holds as many
    samples as carry that label, then smoothed: every cell gets ``smoothing`` pseudo-counts (default
    ``1 / num_classes``: one pseudo-sample per given label, spread evenly, as the neighbour vote's pseudo-vote;
    no pair of classes is impossible) plus ``background`` times the mean off-diagonal count of the rescaled
    ``C`` (a prior of random flips at the rate the counts estimate), so a pair of classes counts as mixed up
    only where its count stands out from that background. Without it (``background=0``) the handful of counts
    per pair that random flips and the model's own confusions leave reorder the samples (docs/label_issues.md).

    Args:
        distribution: (N, C) each sample's estimated distribution of its true class (rows sum to 1).
        labels: (N,) the given labels.
        num_classes: C.
        smoothing: pseudo-counts added to every cell of the (C, C) count matrix; None: ``1 / num_classes``.
        background: multiples of the mean off-diagonal count added to every cell as well.

    Returns:
        (C, C) float32, rows (true classes) sum to 1.
    """
    labels = labels.long().cpu()
    distribution = distribution.float().cpu()
    counts = torch.bincount(labels, minlength=num_classes).float()
    given = torch.zeros(len(labels), num_classes).scatter_(1, labels[:, None], 1.0)
    thresholds = (given * distribution).sum(dim=0) / counts.clamp_min(1.0)
    thresholds[counts == 0] = math.inf
    above = distribution >= thresholds[None]
    confident = above.any(dim=1)
    true_class = torch.where(above, distribution, -1.0).argmax(dim=1)
    joint = torch.zeros(num_classes, num_classes)
    joint.index_put_((labels[confident], true_class[confident]), torch.ones(int(confident.sum())), accumulate=True)
    joint = joint / joint.sum(dim=1, keepdim=True).clamp_min(1.0) * counts[:, None]
    off_diagonal = float(joint.sum() - joint.diagonal().sum()) / max(1, num_classes * (num_classes - 1))
    smoothing = 1.0 / num_classes if smoothing is None else smoothing
    joint = joint + smoothing + background * off_diagonal
    transition = joint.T
    return transition / transition.sum(dim=1, keepdim=True)


@dataclass
class LabelIssues:
    """Label-issue scores of N samples.

    Attributes:
        scores: (N,) in [0, 1]; high means the given label is unlikely (rank by it, descending).
        suggested: (N,) the most likely class given neighbours and model.
        neighbour_share: (N,) the distance-weighted share of neighbours holding the given label.
        model_probability: (N,) the model's probability of the given label, NaN where unknown.
        neighbour_class: (N,) the neighbours' most likely class.
        model_class: (N,) the model's prediction, -1 where unknown.
        category: (N,) index into :data:`CATEGORIES`.
        k: neighbours per sample.
    """

    scores: Tensor
    suggested: Tensor
    neighbour_share: Tensor
    model_probability: Tensor
    neighbour_class: Tensor
    model_class: Tensor
    category: Tensor
    k: int

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def order(self) -> Tensor:
        """(N,) rows by score, highest first (ties: lower neighbour share first, then row)."""
        rows = sorted(range(len(self)), key=lambda i: (-float(self.scores[i]), float(self.neighbour_share[i]), i))
        return torch.as_tensor(rows, dtype=torch.long)

    def words(self, row: int, class_names: Sequence[str]) -> str:
        """The category of ``row`` in words, e.g. ``"likely label error: neighbours and model agree on cat"``."""
        n, m = int(self.neighbour_class[row]), int(self.model_class[row])
        template = CATEGORIES[int(self.category[row])]
        return template.format(n=class_names[n], m=class_names[m] if m >= 0 else "?")


def categorise(labels: Tensor, neighbour_class: Tensor, model_class: Tensor, scores: Tensor | None = None) -> Tensor:
    """(N,) :data:`CATEGORIES` index from the given labels, the neighbours' and the model's class
    (all (N,); ``model_class`` -1 where unknown) and the (N,) scores (neighbours and model agreeing on another
    class: a likely label error from :data:`LIKELY_LABEL_ERROR` on, a possible one below; None: likely)."""
    known = model_class >= 0
    n_ok, m_ok = neighbour_class == labels, model_class == labels
    category = torch.full_like(labels, 4)
    category[~n_ok & ~m_ok & (neighbour_class == model_class)] = 0
    category[~n_ok & ~m_ok & (neighbour_class != model_class)] = 1
    category[n_ok & ~m_ok] = 2
    category[~n_ok & m_ok] = 3
    category[~known] = torch.where(n_ok[~known], 6, 5)
    if scores is not None:
        category[(category == 0) & (scores < LIKELY_LABEL_ERROR)] = 7
    return category


def score_label_issues(
    distances: Tensor,
    neighbour_labels: Tensor,
    labels: Tensor,
    num_classes: int,
    probabilities: Tensor | None = None,
    neighbour_weight: float = DEFAULT_NEIGHBOUR_WEIGHT,
    prior: Tensor | None = None,
    model_weight: float = DEFAULT_MODEL_WEIGHT,
    class_noise: bool = True,
    noise_background: float = NOISE_BACKGROUND,
) -> LabelIssues:
    """Score each sample's label from its neighbours and (where known) the model's probabilities.

    Args:
        distances: (N, k) distances to each sample's neighbours, nearest first (not itself).
        neighbour_labels: (N, k) the neighbours' given labels.
        labels: (N,) the samples' given labels.
        num_classes: C.
        probabilities: (N, C) the model's softmax; rows with NaN count as unknown; None: neighbours only.
        neighbour_weight: exponent of the neighbourhood distribution in the product (0: model only).
        prior: (C,) class frequencies of the searched set, for smoothing (default uniform).
        model_weight: exponent of the model's probabilities (:data:`IN_SAMPLE_MODEL_WEIGHT` for in-sample ones).
        class_noise: weigh each class by how often the given label stands for it (:func:`noise_matrix`),
            estimated from these samples; False: the product alone.
        noise_background: :func:`noise_matrix`'s ``background``.
    """
    labels = labels.long().cpu()
    neighbours = neighbour_label_distribution(distances.cpu(), neighbour_labels.cpu(), num_classes, prior)
    if probabilities is not None and probabilities.shape != (len(labels), num_classes):
        probabilities = None
    combined = combine(neighbours, probabilities, neighbour_weight, model_weight)
    rows = torch.arange(len(labels))
    # The suggestion is what neighbours and model say the image is; the noise step below only weighs how
    # likely the given label is to be wrong (with few samples per class its prior can outweigh a clear
    # neighbourhood and model, and a suggestion equal to a label the list puts on top helps nobody).
    suggested = combined.argmax(dim=1)
    if class_noise:
        transition = noise_matrix(combined, labels, num_classes, background=noise_background)
        combined = combined * transition[:, labels].T
        combined = combined / combined.sum(dim=1, keepdim=True)
    if probabilities is not None:
        probabilities = probabilities.float().cpu()
        known = probabilities.isfinite().all(dim=1) & (probabilities.sum(dim=1) > 0)
        model_probability = torch.where(known, probabilities[rows, labels], float("nan"))
        model_class = torch.where(known, probabilities.nan_to_num(-1.0).argmax(dim=1), -1)
    else:
        model_probability = torch.full((len(labels),), float("nan"))
        model_class = torch.full((len(labels),), -1, dtype=torch.long)
    neighbour_class = neighbours.argmax(dim=1)
    # The others' mass, not 1 - r[given]: float32 keeps small scores apart that 1 - r would round to 0.
    scores = combined.scatter(1, labels[:, None], 0.0).sum(dim=1)
    return LabelIssues(
        scores=scores,
        suggested=suggested,
        neighbour_share=neighbours[rows, labels],
        model_probability=model_probability,
        neighbour_class=neighbour_class,
        model_class=model_class,
        category=categorise(labels, neighbour_class, model_class, scores),
        k=int(neighbour_labels.shape[1]),
    )


@dataclass(frozen=True)
class LabelIssueOptions:
    """How :func:`find_label_issues` scores.

    Attributes:
        k: neighbours per sample; None: :func:`label_issue_k` of the searched labels.
        metric: the distance of the search.
        neighbour_weight: exponent of the neighbourhood distribution in the product (0: model only).
        model_weight: exponent of the model's probabilities; :data:`IN_SAMPLE_MODEL_WEIGHT` for samples the model
            trained on.
        class_noise: correct for class-dependent label noise estimated from the samples (:func:`noise_matrix`).
        noise_background: multiples of the mean off-diagonal count the noise matrix's cells get
            (:func:`noise_matrix`; 0: the rule before issue 25's third round).
    """

    k: int | None = None
    metric: Metric = "euclidean"
    neighbour_weight: float = DEFAULT_NEIGHBOUR_WEIGHT
    model_weight: float = DEFAULT_MODEL_WEIGHT
    class_noise: bool = True
    noise_background: float = NOISE_BACKGROUND


def find_label_issues(
    vectors: Tensor,
    labels: Tensor,
    num_classes: int,
    probabilities: Tensor | None = None,
    reference: Tensor | None = None,
    reference_labels: Tensor | None = None,
    options: LabelIssueOptions = LabelIssueOptions(),
    warn: Warn = _ignore,
    neighbours: tuple[Tensor, Tensor] | None = None,
) -> LabelIssues:
    """Label issues of samples with ``vectors`` (N, D) and ``labels`` (N,), from a kNN search in one layer.

    ``neighbours``: ``(distances, indices)`` (N, K) of the same search done already (the epoch's one
    search of the layer, same set and metric, K >= k): their first k are used instead of searching again.

    Without ``reference`` the search is leave-one-out within ``vectors``; with it (R, D) and its
    ``reference_labels`` (R,), each sample is searched there (e.g. validation samples among training
    samples). ``probabilities`` (N, C) are the model's softmax of the samples, None when unknown; for
    samples the model trained on, pass ``model_weight=IN_SAMPLE_MODEL_WEIGHT``. ``class_noise``: correct
    for class-dependent label noise estimated from these samples (:func:`noise_matrix`).
    Odd input warns through ``warn(key, message)`` and is scored as well as it can be:

    - no probabilities, or NaN rows (NaN logits): neighbourhood only for those samples;
    - a single class: every score is 0 (nothing to tell a label from);
    - ``k`` larger than a class: that class's samples cannot reach a full neighbour share.
    """
    if (reference is None) != (reference_labels is None):
        raise ValueError("Expected `reference` and `reference_labels` to be given together.")
    leave_one_out = reference is None or reference_labels is None
    ref = vectors if reference is None else reference
    ref_labels = (labels if reference_labels is None else reference_labels).long().cpu()
    k = label_issue_k(ref_labels) if options.k is None else options.k
    k = max(1, min(k, len(ref) - int(leave_one_out)))
    classes = ref_labels.unique()
    if len(classes) < 2:
        warn("label-issues-one-class", "Label issues: a single class in the bank; every label is scored 0 (no issue).")
    counts = torch.bincount(ref_labels, minlength=num_classes)
    small = [int(c) for c in classes if int(counts[c]) - int(leave_one_out) < k]
    if small:
        warn(
            "label-issues-small-classes",
            f"Label issues: classes {small[:10]} have fewer than k = {k} other samples; their samples cannot "
            "reach a full neighbour share and rank higher than they should. Hint: a smaller `k`, or more samples "
            "per class (`max_samples`).",
        )
    if probabilities is not None and probabilities.shape != (len(labels), num_classes):
        warn(
            "label-issues-shape",
            f"Label issues: expected the model's probabilities to be ({len(labels)}, {num_classes}) for "
            f"{num_classes} classes, but got {tuple(probabilities.shape)}; scores use the neighbourhood only.",
        )
        probabilities = None
    elif probabilities is None:
        warn(
            "label-issues-no-probabilities",
            "Label issues: the model's outputs are not logits (B, C); scores use the neighbourhood only.",
        )
    elif not bool(probabilities.float().isfinite().all()):
        warn(
            "label-issues-nan",
            "Label issues: the model's probabilities hold NaN (NaN logits?); those samples are scored by their "
            "neighbourhood only.",
        )
    if neighbours is not None and neighbours[1].shape[1] >= k:
        distances, indices = neighbours[0][:, :k], neighbours[1][:, :k]
    else:
        distances, indices = knn_search(vectors.float(), ref.float(), k, options.metric, exclude_self=leave_one_out)
    neighbour_labels = ref_labels[indices.cpu()]
    prior = counts.float().clamp_min(1e-3)
    issues = score_label_issues(
        distances,
        neighbour_labels,
        labels,
        num_classes,
        probabilities,
        options.neighbour_weight,
        prior,
        options.model_weight,
        options.class_noise,
        options.noise_background,
    )
    if len(classes) < 2:
        issues.scores.zero_()
    return issues


def label_issue_rows(
    issues: LabelIssues,
    indices: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    paths: Sequence[str] | None = None,
) -> Iterator[dict[str, object]]:
    """Every sample as a row with the :data:`CSV_COLUMNS` keys, highest score first, one at a time (a
    CSV of 20,000 rows is written without holding them all).

    ``indices`` (N,) are the samples' dataset indices, ``labels`` (N,) their given labels, ``paths``
    (N,) their files where the dataset has them.
    """
    for rank, row in enumerate(issues.order().tolist()):
        probability = float(issues.model_probability[row])
        yield {
            "rank": rank + 1,
            "index": int(indices[row]),
            "path": paths[row] if paths is not None else "",
            "given_label": class_names[int(labels[row])],
            "suggested_label": class_names[int(issues.suggested[row])],
            "score": round(float(issues.scores[row]), 4),
            "category": issues.words(row, class_names),
            "neighbour_share": round(float(issues.neighbour_share[row]), 4),
            "model_probability": "" if math.isnan(probability) else round(probability, 4),
        }


def label_issue_table(
    issues: LabelIssues,
    indices: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    paths: Sequence[str] | None = None,
) -> list[dict[str, object]]:
    """:func:`label_issue_rows` as a list."""
    return list(label_issue_rows(issues, indices, labels, class_names, paths))
