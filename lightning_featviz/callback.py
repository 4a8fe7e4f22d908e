"""The Lightning callback: decides *when* to capture and analyse, and *where* results go.

Everything it computes is done by the plain functions of the other modules.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import fields
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, RandomSampler, Subset

from lightning_featviz.bank import (
    BankData,
    FeatureBank,
    bank_bytes,
    bank_from_columns,
    select_subset,
    to_thumbnails,
)
from lightning_featviz.batches import read_batch
from lightning_featviz.capture import INPUT_LAYER, ActivationCapture, Reduction, reduce_input, resolve_layers
from lightning_featviz.datasets import sample_paths
from lightning_featviz.distributed import all_objects, broadcast_object, gather_columns
from lightning_featviz.embedding import Backend, MapTracker
from lightning_featviz.knn import Metric, NeighbourStats, ResultCache, neighbour_stats
from lightning_featviz.report import EpochResults
from lightning_featviz.reporter import EpochJob, Reporter, ReportOptions
from lightning_featviz.sinks import FileSink, Sink, TensorBoardSink, tensorboard_writers
from lightning_featviz.worker import BackgroundWorker

#: Tags of these kinds have no ``@k``: images, and a measure that does not depend on k.
UNRANKED_KINDS = (
    "neighbours",
    "tsne_2d",
    "tsne_3d",
    "tsne_displacement",
    "wrong_cluster",
    "wrong_cluster_table",
    "confusion",
    "purity_by_depth",
)


@contextmanager
def preserved_global_rng():
    """Restore torch's, numpy's and Python's global RNG states afterwards (training must not notice us)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def _require(condition: bool, name: str, requirement: str, value: Any) -> None:
    if not condition:
        raise ValueError(f"Expected `{name}` to be {requirement}, but got {value!r}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _sampler_batches(loader: DataLoader) -> list[Tensor] | None:
    """The dataset indices of each batch this epoch, read off a non-random batch sampler; else None."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    if batch_sampler is None or isinstance(getattr(batch_sampler, "sampler", None), RandomSampler):
        return None
    with preserved_global_rng():
        return [torch.as_tensor(list(batch), dtype=torch.int64) for batch in batch_sampler]


def _callback_bases() -> tuple[type, ...]:
    """``pytorch_lightning.Callback``, and ``lightning.pytorch.Callback`` where the unified ``lightning``
    package is installed: one callback class then works with the Trainers (and LightningCLIs) of both."""
    try:
        import lightning.pytorch as lightning_pytorch
    except ImportError:
        return (pl.Callback,)
    return (pl.Callback, lightning_pytorch.Callback)


if TYPE_CHECKING:
    _Callback = pl.Callback
else:
    _Callback = type("_Callback", _callback_bases(), {})


class FeatureVisualizer(_Callback):
    """Capture layer activations during validation and log what the network has learned.

    Every validation epoch (not the sanity check), for each named layer: kNN class purity@k and
    kNN majority-vote accuracy as scalars (through ``LightningModule.log``, so they are in
    ``trainer.callback_metrics`` to be monitored), per-class purity as scalars, and a neighbour
    grid image; plus one figure with the first and last layer's grids side by side. Every
    ``tsne_every_n_epochs`` of those epochs: 2-D and 3-D t-SNE maps per layer, the first and last
    layer side by side, every layer in order, map-quality scalars and projector embeddings.

    Args:
        layers: module paths (or unique path endings, ``"layer3"`` for ``"model.layer3"``), or a
            mapping path -> display name. ``"input"`` is the batch itself (pixel space).
        k: neighbours per sample.
        max_samples: validation samples kept (the same ones every epoch).
        query_indices: positions in the validation dataset shown in the neighbour grids; default
            one per class (the first kept sample of each, at most 10 classes).
        metric: ``"euclidean"`` or ``"cosine"``.
        reduction: how conv maps become vectors: ``"avg"`` (global average pool), ``"adaptive"``
            (average pool to ``pool_size`` per side) or ``"flatten"``.
        pool_size: output side of the ``"adaptive"`` reduction.
        input_size: the input layer is area-downsampled to ``input_size`` per side before flattening.
        reference: ``"val"`` (leave-one-out within the kept validation samples) or ``"train"``
            (queries searched among up to ``max_reference`` training samples, captured by a
            no-grad eval-mode pass at validation end).
        max_reference: training samples kept with ``reference="train"``.
        class_names: names of the class ids; default from the datamodule or dataset ``.classes``.
        batch_extractor: ``batch -> (images, labels)`` or ``(images, labels, dataset_indices)``;
            default reads ``(x, y)`` tuples and dicts with common keys.
        image_mean: per-channel mean used to normalise images, to undo it for thumbnails.
        image_std: per-channel std used to normalise images.
        thumbnail_size: side of the stored thumbnails, in pixels.
        log_neighbour_grids: log the neighbour-grid images.
        monitor_class_purity: also log per-class purity through ``LightningModule.log``, so that
            it is in ``trainer.callback_metrics`` for ModelCheckpoint/EarlyStopping. Off by default:
            it is C values per layer per epoch, and each ``log`` call costs Lightning ~0.3 ms; the
            values are written to TensorBoard (or the metrics files) either way.
        tsne_every_n_epochs: fit t-SNE maps on every n-th analysed epoch (counted in epochs of
            ``fit``, so 1 = each analysed epoch); None turns maps and projector off.
        tsne_dims: the map dimensions drawn, any of 2 and 3.
        perplexity: t-SNE perplexity (lowered, with a warning, for small banks).
        tsne_backend: ``"opentsne"`` (fast) or ``"sklearn"``.
        log_projector: write TensorBoard projector embeddings (vectors, each map, thumbnails and
            metadata) when maps are made.
        log_wrong_cluster: find the images in the wrong semantic cluster of ``wrong_cluster_layer``:
            a gallery with captions, a CSV file per epoch and a text table; they are also ringed
            on its 2-D map. A share scalar and a projector column are logged for every layer.
        wrong_cluster_layer: the layer (display name) for the gallery and export; default the last.
        min_share: a sample is in the wrong cluster when another class holds the majority of its
            k neighbours and at least this share of them (0.6: 6 of 10).
        max_gallery: rows of the gallery figure.
        log_confusion: per layer, the neighbourhood confusion matrix with per-class purity; and
            purity by depth with a layer × epoch heatmap.
        background: make the heavy part of each epoch's report (t-SNE, figures, projector, exports)
            on a background thread while training goes on; kNN scalars are logged before the
            next training epoch either way. Reports are written in epoch order, at most two wait,
            and all are written by the end of ``fit``/``validate``. Default (None): on when the
            model trains on an accelerator, off on the CPU, where the thread would compete with
            training for the same cores (measured slower on 2 cores).
        storage_dtype: how the bank stores vectors, ``"float32"`` or ``"float16"`` (half the
            memory; kNN and t-SNE still compute in float32).
        memory_budget_mb: the most the bank may take. Its size is predicted from the first
            validation batch (the sanity check's, before training) and logged once; over the budget,
            that check fails with the knobs to turn.
        every_n_epochs: run on every n-th epoch of ``fit``.
        dataloader_idx: which validation dataloader to analyse.
        seed: seed of the sample choice; the global RNGs are never touched.
        chunk_size: queries per matrix product in the kNN search.
        strict: raise failures of the analysis and of the reports (a plotting error, a full disk)
            instead of warning once and letting training go on.
        report_dir: also write every figure as PNG, the scalars as CSV, and ``index.html``, a page
            that shows them without TensorBoard, into this folder (refreshed each epoch).
    """

    def __init__(
        self,
        layers: Sequence[str] | Mapping[str, str] = ("input", "avgpool"),
        k: int = 10,
        max_samples: int = 2000,
        query_indices: Sequence[int] | None = None,
        metric: Metric = "euclidean",
        reduction: Reduction = "avg",
        pool_size: int = 2,
        input_size: int = 16,
        reference: Literal["val", "train"] = "val",
        max_reference: int = 2000,
        class_names: Sequence[str] | None = None,
        batch_extractor: Callable[[Any], tuple[Any, ...]] | None = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        thumbnail_size: int = 32,
        log_neighbour_grids: bool = True,
        monitor_class_purity: bool = False,
        tsne_every_n_epochs: int | None = 1,
        tsne_dims: Sequence[int] = (2, 3),
        perplexity: float = 30.0,
        tsne_backend: Backend = "opentsne",
        log_projector: bool = True,
        log_wrong_cluster: bool = True,
        wrong_cluster_layer: str | None = None,
        min_share: float = 0.6,
        max_gallery: int = 8,
        log_confusion: bool = True,
        background: bool | None = None,
        storage_dtype: Literal["float32", "float16"] = "float32",
        memory_budget_mb: float = 2048.0,
        every_n_epochs: int = 1,
        dataloader_idx: int = 0,
        seed: int = 0,
        chunk_size: int = 1024,
        strict: bool = False,
        report_dir: str | Path | None = None,
    ) -> None:
        names = list(layers.keys() if isinstance(layers, Mapping) else layers) if not isinstance(layers, str) else []
        _require(
            bool(names) and all(isinstance(n, str) for n in names), "layers", "a non-empty list of layer names", layers
        )
        _require(_is_int(k) and k >= 1, "k", "an integer >= 1", k)
        _require(_is_int(max_samples) and max_samples > k, "max_samples", f"an integer > k = {k}", max_samples)
        _require(_is_int(max_reference) and max_reference > k, "max_reference", f"an integer > k = {k}", max_reference)
        if query_indices is not None:
            ok = all(_is_int(i) and i >= 0 for i in query_indices) and len(query_indices) <= max_samples
            _require(ok, "query_indices", f"at most {max_samples} non-negative dataset positions", query_indices)
        _require(metric in ("euclidean", "cosine"), "metric", "'euclidean' or 'cosine'", metric)
        _require(reduction in ("avg", "adaptive", "flatten"), "reduction", "'avg', 'adaptive' or 'flatten'", reduction)
        _require(reference in ("val", "train"), "reference", "'val' or 'train'", reference)
        _require(
            tsne_every_n_epochs is None or (_is_int(tsne_every_n_epochs) and tsne_every_n_epochs >= 1),
            "tsne_every_n_epochs",
            "None or an integer >= 1",
            tsne_every_n_epochs,
        )
        dims_ok = not isinstance(tsne_dims, str) and len(tsne_dims) > 0 and set(tsne_dims) <= {2, 3}
        _require(dims_ok, "tsne_dims", "a non-empty selection of 2 and 3", tsne_dims)
        _require(isinstance(perplexity, (int, float)) and perplexity > 0, "perplexity", "a number > 0", perplexity)
        _require(tsne_backend in ("opentsne", "sklearn"), "tsne_backend", "'opentsne' or 'sklearn'", tsne_backend)
        _require(
            isinstance(min_share, (int, float)) and 0 < min_share <= 1, "min_share", "a number in (0, 1]", min_share
        )
        _require(_is_int(max_gallery) and max_gallery >= 1, "max_gallery", "an integer >= 1", max_gallery)
        _require(storage_dtype in ("float32", "float16"), "storage_dtype", "'float32' or 'float16'", storage_dtype)
        _require(
            isinstance(memory_budget_mb, (int, float)) and memory_budget_mb > 0,
            "memory_budget_mb",
            "a number > 0",
            memory_budget_mb,
        )
        _require(
            wrong_cluster_layer is None or isinstance(wrong_cluster_layer, str),
            "wrong_cluster_layer",
            "None or a layer name",
            wrong_cluster_layer,
        )
        for name, value, low in [
            ("pool_size", pool_size, 1),
            ("input_size", input_size, 1),
            ("thumbnail_size", thumbnail_size, 4),
            ("every_n_epochs", every_n_epochs, 1),
            ("dataloader_idx", dataloader_idx, 0),
            ("chunk_size", chunk_size, 1),
        ]:
            _require(_is_int(value) and value >= low, name, f"an integer >= {low}", value)
        _require(
            (image_mean is None) == (image_std is None), "image_mean", "given together with `image_std`", image_mean
        )
        _require(batch_extractor is None or callable(batch_extractor), "batch_extractor", "callable", batch_extractor)
        _require(
            report_dir is None or isinstance(report_dir, (str, Path)), "report_dir", "None or a folder path", report_dir
        )

        self.layers = dict(layers) if isinstance(layers, Mapping) else list(layers)
        self.k = k
        self.max_samples = max_samples
        self.query_indices = None if query_indices is None else [int(i) for i in query_indices]
        self.metric: Metric = metric
        self.reduction: Reduction = reduction
        self.pool_size = pool_size
        self.input_size = input_size
        self.reference = reference
        self.max_reference = max_reference
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.batch_extractor = batch_extractor
        self.image_mean = None if image_mean is None else list(image_mean)
        self.image_std = None if image_std is None else list(image_std)
        self.thumbnail_size = thumbnail_size
        self.log_neighbour_grids = log_neighbour_grids
        self.monitor_class_purity = monitor_class_purity
        self.tsne_every_n_epochs = tsne_every_n_epochs
        self.tsne_dims = sorted(set(tsne_dims))
        self.perplexity = float(perplexity)
        self.tsne_backend: Backend = tsne_backend
        self.log_projector = log_projector
        self.log_wrong_cluster = log_wrong_cluster
        self.wrong_cluster_layer = wrong_cluster_layer
        self.min_share = float(min_share)
        self.max_gallery = max_gallery
        self.log_confusion = log_confusion
        self.background = background
        self.storage_dtype = storage_dtype
        self.memory_budget_mb = float(memory_budget_mb)
        self.every_n_epochs = every_n_epochs
        self.dataloader_idx = dataloader_idx
        self.seed = seed
        self.chunk_size = chunk_size
        self.strict = bool(strict)
        self.report_dir = None if report_dir is None else Path(report_dir)

        self.history: list[dict[str, float | int | str]] = []
        #: Dataset indices of the images in the wrong cluster at the last analysed epoch, per layer
        #: (strongest first); filled on rank 0.
        self.wrong_cluster_indices: dict[str, list[int]] = {}
        self._paths: dict[str, str] = {}
        self._log_dir: str | None = None
        self._val_dataset: Any = None
        self._capture: ActivationCapture | None = None
        self._output_hook: Any = None
        self._bank: FeatureBank | None = None
        self._index_batches: list[Tensor] | None = None
        self._active = False
        self._sized = False  # the bank's size was predicted and checked against the budget
        self._disabled = False
        self._off_this_run = False  # this fit/validate cannot be gathered (a rank without batches)
        self._preds: tuple[Tensor, Tensor] | None = None  # (B,) predicted class, (B,) its probability
        self._warned: set[str] = set()
        self._knn_cache: ResultCache[NeighbourStats] = ResultCache()
        self._maps = MapTracker(self.perplexity, seed, tsne_backend)
        self._worker = BackgroundWorker()
        self._reporter: Reporter | None = None  # made at setup, when the log dir is known
        self._background = bool(background)

    # ----------------------------------------------------------------------------- lifecycle

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=list(self.layers), k=self.k)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._paths = resolve_layers(pl_module, self.layers)
        displays = list(self._paths.values())
        if self.wrong_cluster_layer is not None and self.wrong_cluster_layer not in displays:
            raise ValueError(
                f"Expected `wrong_cluster_layer` to be one of the captured layers {displays}, "
                f"but got {self.wrong_cluster_layer!r}."
            )
        # trainer.log_dir broadcasts from rank 0: ask once here, where every rank runs, never in a
        # branch that one rank could skip (that would hang the others).
        self._log_dir = trainer.log_dir
        self._capture = ActivationCapture(pl_module, list(self._paths), self.reduction, self.pool_size)
        options = ReportOptions(**{option.name: getattr(self, option.name) for option in fields(ReportOptions)})
        self._reporter = Reporter(options, self._maps, self.tag, self._warn_once, self._log_dir)
        on_accelerator = trainer.strategy.root_device.type != "cpu"
        self._background = self.background if self.background is not None else on_accelerator
        self._off_this_run = False
        if stage == TrainerFn.VALIDATING and trainer.world_size > 1 and _allows_empty_ranks(trainer, pl_module):
            # A rank without a batch runs no validation hook, so it could not join the gather, and
            # `validate` has no hook before its loop where the ranks could compare batch counts.
            self._switch_off(
                "`allow_zero_length_dataloader_with_multiple_devices` is set, so a rank may see no validation "
                "batch and could not take part in gathering the bank"
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Every rank runs this after the validation loaders are set up: the place to find out whether
        # some rank will see no validation batch (it then runs no validation hook, and could not gather).
        counts = trainer.num_val_batches
        local = counts[self.dataloader_idx] if self.dataloader_idx < len(counts) else 0
        everyone = all_objects(float(local))
        if min(everyone) == 0 < max(everyone):
            empty = [rank for rank, count in enumerate(everyone) if count == 0]
            self._switch_off(f"ranks {empty} see no batch of validation dataloader {self.dataloader_idx}")

    def _switch_off(self, reason: str) -> None:
        self._off_this_run = True
        self._warn_once(
            "empty-rank",
            f"FeatureVisualizer is off for this run: {reason}. Hint: give every rank at least one validation "
            "batch (Lightning's DistributedSampler does), or run the analysis on one process "
            "(`featviz analyse`).",
        )

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._detach()
        self._guarded(self._worker.drain)
        self._worker.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._detach()
        self._worker.close(wait=False)  # training failed: drop reports not started, stop the thread

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "maps": self._maps.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self._maps.load_state_dict(state_dict.get("maps", {}))

    # ----------------------------------------------------------------------------- capture

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING
        self._active = not trainer.sanity_checking and (not fitting or trainer.current_epoch % self.every_n_epochs == 0)
        smoke_test = getattr(trainer, "fast_dev_run", False)  # nothing to analyse
        self._active &= not (self._disabled or self._off_this_run or smoke_test)
        if not self._active or self._capture is None:
            self._active = False
            return
        loader = self._val_loader(trainer)
        size = len(loader.dataset) if loader is not None and hasattr(loader.dataset, "__len__") else None
        if loader is None or size is None:
            self._warn_once("loader", "FeatureVisualizer found no sized validation dataset; nothing is analysed.")
            self._active = False
            return
        queries = [i for i in self.query_indices or [] if i < size]
        if len(queries) < len(self.query_indices or []):
            beyond = sorted(set(self.query_indices or []) - set(queries))
            self._warn_once(
                "queries",
                f"`query_indices` {beyond} are beyond the validation dataset ({size} samples); they are left out.",
            )
        dtype = torch.float16 if self.storage_dtype == "float16" else torch.float32
        self._bank = FeatureBank(select_subset(size, self.max_samples, self.seed, queries), dtype)
        self._val_dataset = loader.dataset
        self._index_batches = _sampler_batches(loader)
        self._capture.register()
        self._output_hook = pl_module.register_forward_hook(self._remember_predictions)

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._capture is not None:
            self._capture.pop()
            if trainer.sanity_checking and batch_idx == 0 and not self._sized and not self._capture.attached:
                self._capture.register()  # one probing batch: how wide is each layer?
        self._preds = None

    def _remember_predictions(self, module: Any, args: Any, output: Any) -> None:
        logits = (
            output
            if isinstance(output, Tensor)
            else (output[0] if isinstance(output, (tuple, list)) and output else None)
        )
        if self._preds is None and isinstance(logits, Tensor) and logits.ndim == 2 and logits.shape[1] > 1:
            self._preds = _scores(logits)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking and batch_idx == 0:
            images, _, _ = read_batch(batch, self.batch_extractor)  # a batch we cannot read fails before training
            if not self._sized and self._capture is not None:
                captured = self._capture.pop()
                self._capture.remove()
                self._check_memory(captured, images, sanity=True)
        if not self._active or dataloader_idx != self.dataloader_idx or self._capture is None or self._bank is None:
            return
        captured = self._capture.pop()
        images, labels, indices = read_batch(batch, self.batch_extractor)
        if indices is None:
            if (
                self._index_batches is None
                or batch_idx >= len(self._index_batches)
                or len(self._index_batches[batch_idx]) != len(labels)
            ):
                self._warn_once(
                    "indices",
                    "FeatureVisualizer cannot tell which dataset samples a validation batch holds (the loader "
                    "shuffles or its sampler is unknown); nothing is analysed. Hint: use shuffle=False for "
                    "validation, or return dataset indices from `batch_extractor`.",
                )
                self._bank = None  # the epoch still ends in a gather on every rank (DDP)
                self._detach()
                return
            indices = self._index_batches[batch_idx]
        if not self._sized:
            self._check_memory(captured, images, sanity=False)
            if self._disabled:
                self._bank = None
                self._detach()
                return
        rows = self._bank.rows_to_keep(indices)
        if rows is None:
            return
        missing = [path for path in self._paths if path != INPUT_LAYER and path not in captured]
        if missing:
            self._warn_once("missing", f"Layers {missing} did not run in a validation forward; the batch is skipped.")
            return
        kept_images = images[rows]
        vectors = {
            display: reduce_input(kept_images, self.input_size).cpu() if path == INPUT_LAYER else captured[path][rows]
            for path, display in self._paths.items()
        }
        predicted = _predictions_from(outputs) or self._preds
        if predicted is None or len(predicted[0]) != len(labels):
            predicted = _unknown_predictions(len(labels))
        preds, confidences = (values.cpu()[rows] for values in predicted)
        thumbnails = self._thumbnails(kept_images)
        self._bank.add(indices[rows], labels.cpu()[rows], preds, confidences, vectors, thumbnails)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active:
            return
        self._active = False
        self._detach()
        # Every rank gathers (a collective); rank 0 analyses and tells the others what to log.
        columns = gather_columns(self._bank.columns() if self._bank is not None else {})
        self._bank = None
        results, metrics, failure = None, {}, None
        if trainer.is_global_zero:
            bank = bank_from_columns(columns or {})
            if bank is None and "indices" not in self._warned:
                self._warn_once(
                    "empty", "FeatureVisualizer captured no validation sample this epoch; nothing is analysed."
                )
            if bank is not None:
                try:
                    results, metrics = self._guarded(self._analyse, trainer, pl_module, bank) or (None, {})
                except Exception as error:  # strict: raised below, after telling the other ranks
                    failure = error
        failed, metrics = broadcast_object((failure is not None, metrics))
        if failure is not None:
            raise failure
        if failed:  # every rank raises, none is left waiting in a collective
            raise RuntimeError("FeatureVisualizer's analysis failed on rank 0 (strict=True); see its error.")
        through_module = {t: v for t, v in metrics.items() if self.monitor_class_purity or "/class_purity@" not in t}
        for tag, value in through_module.items():
            pl_module.log(tag, value, on_step=False, on_epoch=True, sync_dist=False, add_dataloader_idx=False)
        epoch, step = trainer.current_epoch, _logged_step(trainer)
        self.history += [
            {
                "epoch": epoch,
                "step": step,
                "layer": layer,
                "knn_purity": metrics[self.tag("knn_purity", layer)],
                "knn_accuracy": metrics[self.tag("knn_accuracy", layer)],
            }
            for layer in self._paths.values()
            if self.tag("knn_purity", layer) in metrics
        ]
        if results is not None:
            direct = {t: v for t, v in metrics.items() if t not in through_module}
            wanted = self.log_wrong_cluster and self._val_dataset is not None
            paths = sample_paths(self._val_dataset, results.bank.indices.tolist()) if wanted else None
            sinks, with_maps = self._sinks(trainer), self._maps_due(trainer)
            job = EpochJob(sinks, results, direct, metrics, step, with_maps, list(self.history), paths)
            if self._background:
                self._guarded(self._worker.submit, self._report, job)
            else:
                self._guarded(self._report, job)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # validate: every report is written when it returns
            self._guarded(self._worker.drain)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._guarded(self._worker.drain)

    def _guarded(self, action: Callable[..., Any], *args: Any) -> Any:
        """Call ``action``; a failure of the analysis or a report warns once and training goes on
        (None is returned), unless ``strict`` asks for it to be raised."""
        try:
            return action(*args)
        except Exception as error:
            if self.strict:
                raise
            self._warn_once(
                f"report/{type(error).__name__}",
                f"FeatureVisualizer could not analyse or report an epoch ({type(error).__name__}: {error}); "
                "training goes on. Pass `strict=True` to raise instead.",
            )
            return None

    # ----------------------------------------------------------------------------- analysis

    def _analyse(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, bank: BankData
    ) -> tuple[EpochResults | None, dict[str, float]]:
        """Rank 0: kNN per layer; the results, and the scalars every rank logs."""
        reference = self._capture_reference(trainer, pl_module) if self.reference == "train" else None
        names = self._class_names(
            trainer, max(int(bank.labels.max()), int(reference.labels.max()) if reference else 0) + 1
        )
        searched = reference if reference is not None else bank
        needed = self.k + (1 if reference is None else 0)
        if len(searched) < needed or len(bank) < 2:
            self._warn_once(
                "few",
                f"FeatureVisualizer kept {len(searched)} samples this epoch, fewer than k + 1 = {self.k + 1}; "
                "metrics are skipped.",
            )
            return None, {}
        if int(bank.labels.min()) < 0 or (reference is not None and int(reference.labels.min()) < 0):
            self._warn_once(
                "negative", "FeatureVisualizer saw negative labels, which are not class ids; metrics are skipped."
            )
            return None, {}
        if int(bank.labels.unique().numel()) < 2:
            self._warn_once(
                "one-class",
                "FeatureVisualizer saw a single class this epoch; class purity means nothing, metrics are skipped.",
            )
            return None, {}

        metrics: dict[str, float] = {}
        stats: dict[str, NeighbourStats] = {}
        # The search runs where the model is when that is a GPU; on the CPU, FAISS when installed.
        device = trainer.strategy.root_device if trainer.strategy.root_device.type == "cuda" else torch.device("cpu")
        for display in self._paths.values():
            vectors = bank.vectors[display].float()  # float16 storage is computed on in float32
            reference_vectors = reference.vectors[display].float() if reference is not None else None
            if not _all_finite(vectors) or (reference_vectors is not None and not _all_finite(reference_vectors)):
                self._warn_once(
                    f"nan/{display}", f"Layer {display!r} produced NaN or Inf activations; it is skipped this epoch."
                )
                continue
            reference_labels = reference.labels if reference is not None else None
            search = partial(
                neighbour_stats,
                vectors.to(device),
                bank.labels,
                self.k,
                len(names),
                self.metric,
                reference=reference_vectors.to(device) if reference_vectors is not None else None,
                reference_labels=reference_labels,
                chunk_size=self.chunk_size,
            )
            layer = self._knn_cache.get(
                (vectors, bank.labels, reference_vectors, reference_labels, torch.tensor(len(names))), search
            )
            stats[display] = layer
            metrics[self.tag("knn_purity", display)] = layer.mean_purity
            metrics[self.tag("knn_accuracy", display)] = layer.accuracy(bank.labels)
            for class_id, value in enumerate(layer.class_purity.tolist()):
                if value == value:  # NaN: no sample of that class
                    metrics[self.tag("class_purity", display, _tag_part(names[class_id]))] = value

        self._knn_cache.next_round()
        searched = reference if reference is not None else bank
        return EpochResults(bank, searched, stats, names, self.k, trainer.current_epoch), metrics

    def _report(self, job: EpochJob) -> None:
        assert self._reporter is not None  # setup ran: the epoch was analysed
        self.wrong_cluster_indices = self._reporter.write(job)

    def _maps_due(self, trainer: pl.Trainer) -> bool:
        if self.tsne_every_n_epochs is None:
            return False
        return trainer.state.fn != TrainerFn.FITTING or trainer.current_epoch % self.tsne_every_n_epochs == 0

    def tag(self, kind: str, layer: str, *rest: str) -> str:
        """The logged tag, e.g. ``featviz/knn_purity@10/avgpool``; images have no ``@k``: ``featviz/tsne_2d/x``."""
        head = f"featviz/{kind}" if kind in UNRANKED_KINDS else f"featviz/{kind}@{self.k}"
        return "/".join([head, layer, *rest])

    # ----------------------------------------------------------------------------- helpers

    def _check_memory(self, captured: dict[str, Tensor], images: Tensor, sanity: bool) -> None:
        """Predict the bank's size from one batch's vectors, log it once, and hold it to the budget."""
        if any(path != INPUT_LAYER and path not in captured for path in self._paths):
            return  # a layer did not run on this batch: try again on the next one
        self._sized = True
        channels = images.shape[1] if images.ndim == 4 else 1
        dims = {
            display: channels * self.input_size**2 if path == INPUT_LAYER else int(captured[path].shape[1])
            for path, display in self._paths.items()
        }
        rows = self.max_samples + (self.max_reference if self.reference == "train" else 0)
        dtype = torch.float16 if self.storage_dtype == "float16" else torch.float32
        shown = self._shows_images
        size = bank_bytes(rows, dims, dtype, self.thumbnail_size if shown else None) / 2**20
        widths = " + ".join(f"{d} ({layer})" for layer, d in dims.items())
        rank_zero_info(
            f"FeatureVisualizer bank: up to {rows} samples x {widths} dims in {self.storage_dtype}"
            f"{' + thumbnails' if shown else ''} = {size:.1f} MiB (budget {self.memory_budget_mb:.0f} MiB)."
        )
        if size <= self.memory_budget_mb:
            return
        message = (
            f"Expected the FeatureVisualizer bank to fit `memory_budget_mb` = {self.memory_budget_mb:g}, but it "
            f"would take {size:.0f} MiB ({widths} dims per sample). Hint: lower `max_samples`"
            f"{' or `max_reference`' if self.reference == 'train' else ''}, downsample the input layer more "
            "(`input_size`), pool conv layers (`reduction='avg'` or a smaller `pool_size`), store "
            "`storage_dtype='float16'`, or raise `memory_budget_mb`."
        )
        if sanity:
            raise ValueError(message)
        self._disabled = True  # found mid-run: keep the user's training going
        self._warn_once("memory", message + " FeatureVisualizer is off for this run.")

    def _capture_reference(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> BankData | None:
        """Capture up to ``max_reference`` training samples with a no-grad, eval-mode forward."""
        loader = trainer.train_dataloader
        if loader is None and _datamodule(trainer) is not None:
            loader = _datamodule(trainer).train_dataloader()
        if not isinstance(loader, DataLoader) or not hasattr(loader.dataset, "__len__"):
            self._warn_once(
                "train",
                "`reference='train'` needs a training DataLoader over a sized dataset; "
                "searching the validation samples instead.",
            )
            return None
        keep = select_subset(len(loader.dataset), self.max_reference, self.seed + 1)
        batch_size = loader.batch_size or 64
        subset = DataLoader(
            Subset(loader.dataset, keep.tolist()),
            batch_size=batch_size,
            collate_fn=loader.collate_fn,
            generator=torch.Generator().manual_seed(self.seed),
        )
        bank = FeatureBank(keep)
        assert self._capture is not None
        was_training = pl_module.training
        precision = getattr(trainer.precision_plugin, "forward_context", nullcontext)
        try:
            pl_module.eval()
            with preserved_global_rng(), torch.no_grad(), self._capture.attach(), precision():
                for position, raw in enumerate(subset):
                    images, labels, _ = read_batch(raw, self.batch_extractor)
                    output = pl_module(images.to(pl_module.device))
                    captured = self._capture.pop()
                    self._preds = None
                    self._remember_predictions(pl_module, (), output)
                    preds, confidences = self._preds or _unknown_predictions(len(labels))
                    indices = keep[position * batch_size : position * batch_size + len(labels)]
                    vectors = {
                        display: reduce_input(images, self.input_size).cpu() if path == INPUT_LAYER else captured[path]
                        for path, display in self._paths.items()
                    }
                    bank.add(indices, labels.cpu(), preds, confidences, vectors, self._thumbnails(images))
        finally:
            pl_module.train(was_training)
        return bank.finalize()

    def _thumbnails(self, images: Tensor) -> Tensor:
        """(B, 3, T, T) uint8 thumbnails, or (B, 0) when no output shows images."""
        if not self._shows_images:
            return torch.empty(images.shape[0], 0, dtype=torch.uint8)
        channels = images.shape[1] if images.ndim == 4 else 1
        if channels not in (1, 3):
            shown = "the first three as RGB" if channels > 3 else "the first in grey"
            self._warn_once(
                "channels",
                f"Validation images have {channels} channels; thumbnails (grids, gallery, projector sprite) show "
                f"{shown}. Pixel-space vectors use all {channels}.",
            )
        return to_thumbnails(images, self.thumbnail_size, self.image_mean, self.image_std, self._warn_rescaled)

    @property
    def _shows_images(self) -> bool:
        """Whether any output shows thumbnails (grids, the gallery, the projector's sprite)."""
        return (
            self.log_neighbour_grids or self.log_wrong_cluster or bool(self.log_projector and self.tsne_every_n_epochs)
        )

    def _warn_rescaled(self, low: float, high: float) -> None:
        hint = (
            "check `image_mean`/`image_std`"
            if self.image_mean is not None
            else "pass the normalisation as `image_mean`/`image_std` so it can be undone"
        )
        self._warn_once(
            "image-range",
            f"Validation images span [{low:.3g}, {high:.3g}], not [0, 1]; thumbnails (grids, projector sprite) are "
            f"min-max scaled per image, so their colours are not the true ones. Hint: {hint}.",
        )

    def _val_loader(self, trainer: pl.Trainer) -> DataLoader | None:
        combined = trainer.validate_loop._combined_loader if trainer.state.fn == TrainerFn.VALIDATING else None
        loaders: Any = combined.iterables if combined is not None else trainer.val_dataloaders
        if isinstance(loaders, Mapping):
            loaders = list(loaders.values())
        if isinstance(loaders, (list, tuple)):
            loaders = loaders[self.dataloader_idx] if self.dataloader_idx < len(loaders) else None
        return loaders if isinstance(loaders, DataLoader) else None

    def _class_names(self, trainer: pl.Trainer, num_seen: int) -> list[str]:
        names = self.class_names
        if names is None:
            candidates = [_datamodule(trainer)] if _datamodule(trainer) is not None else []
            loader = self._val_loader(trainer)
            dataset = loader.dataset if loader is not None else None
            while dataset is not None:
                candidates.append(dataset)
                dataset = getattr(dataset, "dataset", None)
            found = next(
                (
                    getattr(c, a)
                    for c in candidates
                    for a in ("classes", "class_names")
                    if isinstance(getattr(c, a, None), (list, tuple))
                ),
                None,
            )
            names = [str(n) for n in found] if found else []
        if num_seen > len(names) and names:
            self._warn_once(
                "labels",
                f"Labels go up to {num_seen - 1} but only {len(names)} class names are known; "
                "the rest are named by id.",
            )
        return list(names) + [str(i) for i in range(len(names), num_seen)]

    def _sinks(self, trainer: pl.Trainer) -> list[Sink]:
        """Where rank 0 writes: every TensorBoard writer, else files under the run's log dir; and the
        static report's folder when ``report_dir`` is set."""
        report = [FileSink(self.report_dir, embeddings=False)] if self.report_dir is not None else []
        writers = tensorboard_writers(trainer.loggers)
        if writers:
            return [*(TensorBoardSink(w) for w in writers), *report]
        root = Path(self._log_dir or trainer.default_root_dir) / "featviz"
        self._warn_once(
            "no-tb",
            "No TensorBoard logger among trainer.loggers; FeatureVisualizer writes PNG figures, "
            f"metrics.csv and index.html under {root}.",
        )
        return [FileSink(root), *report]

    def _detach(self) -> None:
        if self._capture is not None:
            self._capture.remove()
        if self._output_hook is not None:
            self._output_hook.remove()
            self._output_hook = None

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=2)


def _logged_step(trainer: pl.Trainer) -> int:
    """The step Lightning gives epoch-end metrics, so our images and scalars line up with them."""
    return int(getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step))


def _datamodule(trainer: pl.Trainer) -> Any:
    return getattr(trainer, "datamodule", None)


def _allows_empty_ranks(trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
    """Whether Lightning lets a rank have an empty dataloader (otherwise it raises before any loop runs)."""
    holders = [pl_module, _datamodule(trainer)]
    return any(getattr(h, "allow_zero_length_dataloader_with_multiple_devices", False) for h in holders)


def _all_finite(vectors: Tensor) -> bool:
    # One reduction instead of an (N, D) mask: any NaN or Inf makes the sum non-finite.
    return bool(vectors.sum(dtype=torch.float64).isfinite())


def _tag_part(name: str) -> str:
    return "_".join(name.split())


def _scores(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(B,) predicted class ids and (B,) their softmax probability, from (B, C) logits."""
    confidence, preds = logits.detach().float().softmax(dim=1).max(dim=1)
    return preds.cpu(), confidence.cpu()


def _unknown_predictions(size: int) -> tuple[Tensor, Tensor]:
    return torch.full((size,), -1, dtype=torch.int64), torch.full((size,), float("nan"))


def _predictions_from(outputs: Any) -> tuple[Tensor, Tensor] | None:
    """Predicted class ids and confidences from a validation_step's return value (logits or preds)."""
    if isinstance(outputs, Mapping):
        if isinstance(outputs.get("logits"), Tensor) and outputs["logits"].ndim == 2:
            return _scores(outputs["logits"])
        if isinstance(outputs.get("preds"), Tensor) and outputs["preds"].ndim == 1:
            preds = outputs["preds"].detach().long().cpu()
            return preds, torch.full(preds.shape, float("nan"))
    return None
