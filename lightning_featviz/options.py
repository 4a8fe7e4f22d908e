"""The option groups of :class:`~lightning_featviz.FeatureVisualizer`.

Each group is a frozen dataclass: its defaults are the callback's, and a bad value fails when the group is made
(so in ``__init__``, or where LightningCLI parses a config), naming it as the user writes it (``maps.perplexity``).
The callback hands each group, unchanged, to the part that reads it (the capture, the analysis, the plan of the
outputs, the report).

Over 300 lines: six groups whose docstrings are the reference of every option (docs/api.md shows them); the code
is about 150 lines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from lightning_featviz.analysis.knn import Metric
from lightning_featviz.arguments import is_int, is_number, require
from lightning_featviz.capture.hooks import Reduction
from lightning_featviz.capture.inputs import InputKind


def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    require(value in choices, name, " or ".join(repr(c) for c in choices), value)


def _check_at_least(name: str, value: Any, low: int) -> None:
    require(is_int(value) and value >= low, name, f"an integer >= {low}", value)


@dataclass(frozen=True)
class CaptureOptions:
    """What is captured from each validation batch, and how it becomes vectors (``capture=...``).

    Args:
        reduction: how conv maps (channels first or last) become vectors: ``"avg"`` (global average
            pool), ``"adaptive"`` (average pool to ``pool_size`` per side) or ``"flatten"``; or a mapping
            layer -> one of those, ``"mean"``, ``"cls"``, ``"last"``, or a callable ``output -> (B, D)``
            for that layer. Token sequences default to their class token where the model has one, else
            their mean; RNN/attention/transformer outputs to their mean over time (``batch_first`` is read
            off the module). A layer whose layout cannot be decided fails at the first batch, naming the
            entry to add.
        pool_size: output side of the ``"adaptive"`` reduction.
        input_size: the input layer is area-downsampled to ``input_size`` per side before flattening
            (images; sequences are resampled to ``input_size`` steps, token ids counted in ``input_size**2``
            buckets: see :mod:`lightning_featviz.capture.inputs`).
        input_kind: what the model's inputs are: ``"image"`` (B, C, H, W), ``"sequence"`` (B, T, F),
            ``"vector"`` (B, F) or ``"tokens"`` (integer (B, T)); default (None) told from the first batch
            (a float (B, H, W) batch is a grey image when the model has 2-D convolutions). Only images
            have thumbnails: for the others, neighbour grids, the gallery and the projector's sprite are
            left out.
        reference: ``"val"`` (leave-one-out within the kept validation samples) or ``"train"``
            (queries searched among up to ``max_reference`` training samples, captured by a
            no-grad eval-mode pass at validation end).
        max_reference: training samples kept with ``reference="train"``.
        metric: ``"euclidean"`` or ``"cosine"``.
        batch_extractor: ``batch -> (inputs, labels)`` or ``(inputs, labels, dataset_indices)``; default reads
            ``(x, y, ...)`` tuples and dicts with ``image``/``input_ids``/``label``/``index``-like keys. Return
            indices to analyse a loader whose sampler draws a new order each time.
        image_mean: the per-channel mean your transforms normalised images with, undone for thumbnails
            (otherwise images outside [0, 1] are min-max scaled per image); given with ``image_std``.
        image_std: the per-channel std of that normalisation.
        thumbnail_size: side of the stored thumbnails, in pixels.
        dataloader_idx: which validation dataloader to analyse.
        storage_dtype: how the bank stores vectors, ``"float32"`` or ``"float16"`` (half the
            memory; kNN and t-SNE still compute in float32).
    """

    reduction: Reduction | Mapping[str, str | Callable[[Any], Tensor]] = "avg"
    pool_size: int = 2
    input_size: int = 16
    input_kind: InputKind | None = None
    reference: Literal["val", "train"] = "val"
    max_reference: int = 2000
    metric: Metric = "euclidean"
    batch_extractor: Callable[[Any], tuple[Any, ...]] | None = None
    image_mean: Sequence[float] | None = None
    image_std: Sequence[float] | None = None
    thumbnail_size: int = 32
    dataloader_idx: int = 0
    storage_dtype: Literal["float32", "float16"] = "float32"

    def __post_init__(self) -> None:
        _check_choice("capture.metric", self.metric, ("euclidean", "cosine"))
        _check_choice("capture.reference", self.reference, ("val", "train"))
        _check_choice("capture.storage_dtype", self.storage_dtype, ("float32", "float16"))
        _check_choice("capture.input_kind", self.input_kind, (None, "image", "sequence", "vector", "tokens"))
        if isinstance(self.reduction, Mapping):
            ok = all(isinstance(key, str) for key in self.reduction)
            requirement = "'avg', 'adaptive', 'flatten' or a mapping layer -> reduction"
            require(ok, "capture.reduction", requirement, self.reduction)
            object.__setattr__(self, "reduction", dict(self.reduction))
        else:
            _check_choice("capture.reduction", self.reduction, ("avg", "adaptive", "flatten"))
        for name, low in [("pool_size", 1), ("input_size", 1), ("thumbnail_size", 4), ("dataloader_idx", 0)]:
            _check_at_least(f"capture.{name}", getattr(self, name), low)
        _check_at_least("capture.max_reference", self.max_reference, 2)
        mean, std = self.image_mean, self.image_std
        require((mean is None) == (std is None), "capture.image_mean", "given together with `capture.image_std`", mean)
        if mean is not None and std is not None:
            object.__setattr__(self, "image_mean", tuple(float(m) for m in mean))
            object.__setattr__(self, "image_std", tuple(float(s) for s in std))
        extractor = self.batch_extractor
        require(extractor is None or callable(extractor), "capture.batch_extractor", "callable", extractor)


@dataclass(frozen=True)
class MapOptions:
    """t-SNE maps of each layer (``maps=...``; ``maps=False`` turns them and the projector off).

    Args:
        every_n_epochs: maps (and the projector) on every n-th analysed epoch of ``fit``, counted from its first
            (1: each analysed epoch), and at its last; the time budget (``overhead``) may leave some out, and says
            so (``featviz/schedule``). None: no maps.
        dims: the map dimensions drawn, any of 2 and 3.
        perplexity: t-SNE perplexity; lowered with one warning when the bank is small (below (N - 1) / 3).
        samples: maps, their quality measures and the projector show at most this many samples: a
            stratified subsample of a larger bank, the same samples every epoch; purity and the other
            scalars use the whole bank.
    """

    every_n_epochs: int | None = 10
    dims: Sequence[int] = (2, 3)
    perplexity: float = 30.0
    samples: int = 2000

    def __post_init__(self) -> None:
        every = self.every_n_epochs
        require(
            every is None or (is_int(every) and every >= 1), "maps.every_n_epochs", "None or an integer >= 1", every
        )
        dims = self.dims
        ok = not isinstance(dims, str) and len(dims) > 0 and set(dims) <= {2, 3}
        require(ok, "maps.dims", "a non-empty selection of 2 and 3", dims)
        object.__setattr__(self, "dims", tuple(sorted(set(dims))))
        require(is_number(self.perplexity) and self.perplexity > 0, "maps.perplexity", "a number > 0", self.perplexity)
        object.__setattr__(self, "perplexity", float(self.perplexity))
        _check_at_least("maps.samples", self.samples, 10)


@dataclass(frozen=True)
class ProjectorOptions:
    """TensorBoard projector embeddings (vectors, each map, thumbnails and metadata), written when maps are made
    (``projector=...``; ``projector=False`` turns them off).

    Args:
        keep_every_n_epochs: besides the latest epoch's entries (``latest/…``, replaced each time), keep those of
            every n-th epoch (``previous/epoch_{e}/…``) in the projector: a bounded history.
    """

    keep_every_n_epochs: int = 5

    def __post_init__(self) -> None:
        _check_at_least("projector.keep_every_n_epochs", self.keep_every_n_epochs, 1)


@dataclass(frozen=True)
class WrongClusterOptions:
    """The images in the wrong semantic cluster of one layer: a gallery with captions, a CSV file per epoch and a
    text table; they are also ringed on its 2-D map. A share scalar and a projector column are logged for every
    layer; and the label-issue relabelling lists of ``layer`` (validation, and training with
    ``capture.reference="train"``), whose scores the gallery's captions name (``wrong_cluster=...``;
    ``wrong_cluster=False`` turns it off).

    Args:
        layer: the layer (display name) of the gallery and export; default the last; must be a captured layer
            (checked at ``setup``).
        min_share: a sample is in the wrong cluster when another class holds the majority of its
            k neighbours and at least this share of them (0.6: 6 of 10), in (0, 1].
        max_gallery: rows of the gallery figure (the CSV has them all).
        training_margins: also record each training batch's logit margins (given label minus the largest other)
            by dataset index and, at the end of ``fit``, write the training samples ranked by their area under the
            margin (AUM) as ``featviz_label_issues/train_aum.csv``; needs the training batches' dataset indices
            (docs/label_issues.md, "Training dynamics": where they cannot be known, one warning and nothing else).
    """

    layer: str | None = None
    min_share: float = 0.6
    max_gallery: int = 8
    training_margins: bool = False

    def __post_init__(self) -> None:
        require(
            self.layer is None or isinstance(self.layer, str), "wrong_cluster.layer", "None or a layer name", self.layer
        )
        share = self.min_share
        require(is_number(share) and 0 < share <= 1, "wrong_cluster.min_share", "a number in (0, 1]", share)
        object.__setattr__(self, "min_share", float(share))
        _check_at_least("wrong_cluster.max_gallery", self.max_gallery, 1)
        margins = self.training_margins
        require(isinstance(margins, bool), "wrong_cluster.training_margins", "a bool", margins)


@dataclass(frozen=True)
class OutputOptions:
    """The figures and scalars of each analysed epoch beside the kNN purity (``outputs=...``).

    Args:
        every_n_epochs: the figures (all of those below, the wrong-cluster gallery and the exports) on every n-th
            analysed epoch of ``fit``, counted from its first (1: each analysed epoch), and at its last; the time
            budget (``overhead``) may leave some out, and says so (``featviz/schedule``).
        neighbour_grids: log the neighbour-grid images: per layer, and the first and last layer side by side.
        confusion: per layer, the neighbourhood confusion matrix with per-class purity; purity by depth with a
            layer × epoch heatmap; also the ``purity_by_class`` figure of each layer (the confusion figure up to 50
            classes).
        monitor_class_purity: also log per-class purity as scalars
            (``featviz/purity_of_class@k/<layer>/<class>``), through ``LightningModule.log``, so that
            it is in ``trainer.callback_metrics`` for ModelCheckpoint/EarlyStopping. Off by default:
            it is C scalars per layer per epoch (6,000 tags on ImageNet with 6 layers); the
            ``purity_by_class`` figure of each layer (with ``confusion``) shows them instead.
        query_indices: positions in the validation dataset shown in the neighbour grids; default
            one per class (the first kept sample of each, at most 10 classes).
        report_dir: also write every figure as PNG, the scalars as CSV, and ``index.html``, a page
            that shows them without TensorBoard, into this folder (refreshed each epoch).
    """

    every_n_epochs: int = 5
    neighbour_grids: bool = True
    confusion: bool = True
    monitor_class_purity: bool = False
    query_indices: Sequence[int] | None = None
    report_dir: str | Path | None = None

    def __post_init__(self) -> None:
        _check_at_least("outputs.every_n_epochs", self.every_n_epochs, 1)
        queries = self.query_indices
        if queries is not None:
            ok = not isinstance(queries, str) and all(is_int(i) and i >= 0 for i in queries)
            require(ok, "outputs.query_indices", "non-negative dataset positions", queries)
            object.__setattr__(self, "query_indices", tuple(int(i) for i in queries))
        folder = self.report_dir
        require(
            folder is None or isinstance(folder, (str, Path)), "outputs.report_dir", "None or a folder path", folder
        )
        if folder is not None:
            object.__setattr__(self, "report_dir", Path(folder))


@dataclass(frozen=True)
class ResourceOptions:
    """Where the work runs and how much memory it may take (``resources=...``).

    Args:
        background: make the heavy part of each epoch's report (t-SNE, figures, projector, exports)
            in a child process at the lowest CPU priority while training goes on (on Windows: on a
            thread); kNN scalars are logged before the next training epoch either way. Reports are
            written in epoch order, at most two wait, and all are written by the end of
            ``fit``/``validate``. Default (None): on when the model trains on an accelerator, off
            on the CPU, where training uses every core and the report's time adds to ``fit``
            wherever it runs.
        memory_budget_mb: the most the bank may take. Its size is predicted from the first
            validation batch (the sanity check's, before training) and logged once; over the budget,
            that check fails with the knobs to turn.
        chunk_size: queries per matrix product in the kNN search (memory O(chunk_size × N)).
    """

    background: bool | None = None
    memory_budget_mb: float = 2048.0
    chunk_size: int = 1024

    def __post_init__(self) -> None:
        budget = self.memory_budget_mb
        require(is_number(budget) and budget > 0, "resources.memory_budget_mb", "a number > 0", budget)
        object.__setattr__(self, "memory_budget_mb", float(budget))
        _check_at_least("resources.chunk_size", self.chunk_size, 1)
        background = self.background
        require(
            background is None or isinstance(background, bool),
            "resources.background",
            "None, True or False",
            background,
        )


#: The groups: the argument of ``FeatureVisualizer`` -> its class. The ones that ``False`` turns off are
#: :data:`SWITCHED`.
GROUPS: dict[str, type] = {
    "capture": CaptureOptions,
    "maps": MapOptions,
    "projector": ProjectorOptions,
    "wrong_cluster": WrongClusterOptions,
    "outputs": OutputOptions,
    "resources": ResourceOptions,
}
SWITCHED = ("maps", "projector", "wrong_cluster")


def group_of(name: str, value: Any) -> Any:
    """The options of group ``name`` from what was passed: an instance, a mapping of its fields (a config file
    read without LightningCLI), or for :data:`SWITCHED` groups ``True`` (the defaults) or ``False`` (None: off;
    ``maps=False`` is ``MapOptions(every_n_epochs=None)``)."""
    kind = GROUPS[name]
    if isinstance(value, kind):
        return value
    if isinstance(value, Mapping):
        return kind(**value)
    if name in SWITCHED and isinstance(value, bool):
        if value:
            return kind()
        return MapOptions(every_n_epochs=None) if kind is MapOptions else None
    switch = " or True/False" if name in SWITCHED else ""
    raise ValueError(
        f"Expected `{name}` to be {kind.__name__}(...){switch}, but got {value!r}. "
        f"Hint: `{name}={kind.__name__}({fields(kind)[0].name}=...)`."
    )
