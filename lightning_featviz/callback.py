"""The Lightning callback: decides *when* to capture and analyse, and *where* results go.

Everything it computes is done by the plain functions of the other modules.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from lightning_featviz.analysis import degenerate, epoch_metrics, layer_stats, purity_ceiling
from lightning_featviz.arguments import check_arguments
from lightning_featviz.bank import (
    BankData,
    Choice,
    FeatureBank,
    bank_bytes,
    bank_from_columns,
    to_thumbnails,
)
from lightning_featviz.batches import (
    predictions_from,
    probabilities_of,
    read_batch,
    scores_of,
    unknown_predictions,
)
from lightning_featviz.budget import (
    FIGURES,
    KNN,
    MAPS_2D,
    MAPS_3D,
    PROJECTOR,
    TimeBudget,
    last_analysed_epoch,
    wanted_outputs,
)
from lightning_featviz.capture import (
    INPUT_LAYER,
    ActivationCapture,
    Reduction,
    resolve_layers,
    resolve_reductions,
    short_display_names,
)
from lightning_featviz.datasets import sample_paths
from lightning_featviz.default_layers import default_layers
from lightning_featviz.distributed import all_objects, broadcast_object, gather_columns
from lightning_featviz.embedding import Backend, MapTracker
from lightning_featviz.inputs import InputKind, as_images, check_input_kind, input_kind, input_width, reduce_input
from lightning_featviz.knn import Metric, NeighbourStats, ResultCache
from lightning_featviz.label_issues import label_issue_k
from lightning_featviz.neighbourhoods import neighbours_needed
from lightning_featviz.render_process import RenderProcess, can_render_in_a_process
from lightning_featviz.report import EpochResults
from lightning_featviz.reporter import Destination, EpochJob, Report, Reporter, ReportOptions, unfinished
from lightning_featviz.reporter import tag as make_tag
from lightning_featviz.sinks import FileSink, Sink, TensorBoardSink, tensorboard_writers
from lightning_featviz.trainer_data import (
    allows_empty_ranks,
    capture_training_bank,
    known_class_names,
    logged_step,
    matching_rows,
    preserved_global_rng,
    sampler_batches,
    training_loader,
    validation_loader,
)
from lightning_featviz.worker import BackgroundWorker


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
        layers: ``"auto"`` (or None): the input, the outputs of the main stages and the pooled feature
            before the classifier head, found on the module tree with one no-grad forward shaped like the
            first validation batch (see ``docs/layers.md``); or module paths (or unique path endings,
            ``"layer3"`` for ``"model.layer3"``), or a mapping path -> display name. ``"input"`` is the
            batch itself (pixel space).
        k: neighbours per sample.
        max_samples: validation samples kept (the same ones every epoch).
        query_indices: positions in the validation dataset shown in the neighbour grids; default
            one per class (the first kept sample of each, at most 10 classes).
        metric: ``"euclidean"`` or ``"cosine"``.
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
            buckets: see :mod:`lightning_featviz.inputs`).
        input_kind: what the model's inputs are: ``"image"`` (B, C, H, W), ``"sequence"`` (B, T, F),
            ``"vector"`` (B, F) or ``"tokens"`` (integer (B, T)); default (None) told from the first batch
            (a float (B, H, W) batch is a grey image when the model has 2-D convolutions). Only images
            have thumbnails: for the others, neighbour grids, the gallery and the projector's sprite are
            left out.
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
        monitor_class_purity: also log per-class purity as scalars
            (``featviz/purity_of_class@k/<layer>/<class>``), through ``LightningModule.log``, so that
            it is in ``trainer.callback_metrics`` for ModelCheckpoint/EarlyStopping. Off by default:
            it is C scalars per layer per epoch (6,000 tags on ImageNet with 6 layers); the
            ``purity_by_class`` figure of each layer (with ``log_confusion``) shows them instead.
        tsne_every_n_epochs: ``"budget"``: t-SNE maps and the projector on the epochs the time budget
            allows (``overhead``); n: fit them on every n-th epoch of ``fit`` (1 = each analysed epoch);
            None turns maps and projector off.
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
            in a child process at the lowest CPU priority while training goes on (on Windows: on a
            thread); kNN scalars are logged before the next training epoch either way. Reports are
            written in epoch order, at most two wait, and all are written by the end of
            ``fit``/``validate``. Default (None): on when the model trains on an accelerator, off
            on the CPU, where training uses every core and the report's time adds to ``fit``
            wherever it runs.
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
        overhead: the time budget in ``fit``: the callback's work may add at most this share to the time
            ``fit`` takes without it (0.1: 1.1 times), over the run. kNN scalars come every analysed epoch;
            figures, maps, the projector and 3-D maps are made on the epochs the budget allows (costs are
            measured as they run), and all of them at the last analysed epoch (known from ``max_epochs``;
            when ``max_steps``, early stopping or an interrupt ends ``fit`` first, what the last analysed
            epoch lacked is made when ``fit`` ends). Each analysed epoch logs one line saying what it made
            and when the next map comes (also in :attr:`schedule`). A cadence given explicitly
            (``tsne_every_n_epochs`` an integer) wins over the budget. None: no budget, every output every
            analysed epoch. ``validate`` makes everything.
        map_samples: maps, their quality measures and the projector show at most this many samples: a
            stratified subsample of a larger bank, the same samples every epoch; purity and the other
            scalars use the whole bank.
    """

    def __init__(
        self,
        layers: Sequence[str] | Mapping[str, str] | Literal["auto"] | None = "auto",
        k: int = 10,
        max_samples: int = 2000,
        query_indices: Sequence[int] | None = None,
        metric: Metric = "euclidean",
        reduction: Reduction | Mapping[str, str | Callable[[Any], Tensor]] = "avg",
        pool_size: int = 2,
        input_size: int = 16,
        input_kind: InputKind | None = None,
        reference: Literal["val", "train"] = "val",
        max_reference: int = 2000,
        class_names: Sequence[str] | None = None,
        batch_extractor: Callable[[Any], tuple[Any, ...]] | None = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        thumbnail_size: int = 32,
        log_neighbour_grids: bool = True,
        monitor_class_purity: bool = False,
        tsne_every_n_epochs: int | Literal["budget"] | None = "budget",
        tsne_dims: Sequence[int] = (2, 3),
        perplexity: float = 30.0,
        tsne_backend: Backend = "opentsne",
        log_projector: bool = True,
        projector_every_n_epochs: int = 5,
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
        overhead: float | None = 0.1,
        map_samples: int = 2000,
    ) -> None:
        check_arguments({name: value for name, value in locals().items() if name != "self"})

        self.layers: list[str] | dict[str, str] | Literal["auto"] = (
            "auto"
            if layers is None or layers == "auto"
            else dict(layers)
            if isinstance(layers, Mapping)
            else list(layers)
        )
        self.k = k
        self.max_samples = max_samples
        self.query_indices = None if query_indices is None else [int(i) for i in query_indices]
        self.metric: Metric = metric
        self.reduction = reduction if isinstance(reduction, str) else dict(reduction)
        self.pool_size = pool_size
        self.input_size = input_size
        self.input_kind: InputKind | None = input_kind
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
        self.projector_every_n_epochs = projector_every_n_epochs
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
        self.overhead = overhead
        self.map_samples = map_samples
        #: One line per analysed epoch of ``fit`` under the time budget: what it made, when the next map comes.
        self.schedule: list[str] = []

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
        self._input_kind: InputKind | None = input_kind  # told from the first batch when not given
        self._choice: Choice | None = None  # which captured samples the epoch's bank keeps
        self._dropped: set[str] = set()  # layers left out of this epoch (did not run, changed shape)
        self._active = False
        self._sized = False  # the bank's size was predicted and checked against the budget
        self._disabled = False
        self._off_this_run = False  # this fit/validate cannot be gathered (a rank without batches)
        self._preds: tuple[Tensor, Tensor] | None = None  # (B,) predicted class, (B,) its probability
        self._probs: Tensor | None = None  # (B, C) the model's softmax
        self._warned: set[str] = set()
        self._knn_cache: ResultCache[NeighbourStats] = ResultCache()
        self._maps = MapTracker(self.perplexity, seed, tsne_backend)
        self._worker = BackgroundWorker()
        self._reporter: Reporter | None = None  # made at setup, when the log dir is known
        self._renderer: RenderProcess | None = None  # started with the first background report
        self._process_works = True  # until one fails before its first report
        self._finishing = False  # training is done: the reports still queued may use every core
        self._background = bool(background)
        self._budget = TimeBudget(overhead) if overhead is not None else None
        self._outputs: frozenset[str] | None = None  # this epoch's budgeted outputs (None: every one)
        self._unfinished: tuple[EpochJob, Destination] | None = None  # the last epoch, if it lacks outputs
        self._final_epochs: set[int] = set()  # epochs whose report made everything as the last one
        self._on_cpu = True

    # ----------------------------------------------------------------------------- lifecycle

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=self.layers if self.layers == "auto" else list(self.layers), k=self.k)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._paths, self._capture = {}, None
        if self.layers != "auto":  # "auto": chosen at the first validation epoch, on one of its batches
            self._use_layers(pl_module, resolve_layers(pl_module, self.layers))
        # trainer.log_dir broadcasts from rank 0: ask once here, where every rank runs, never in a
        # branch that one rank could skip (that would hang the others).
        self._log_dir = trainer.log_dir
        options = ReportOptions(**{option.name: getattr(self, option.name) for option in fields(ReportOptions)})
        self._reporter = Reporter(options, self._maps, self._log_dir)
        on_accelerator = trainer.strategy.root_device.type != "cpu"
        self._background = self.background if self.background is not None else on_accelerator
        self._on_cpu = not on_accelerator
        self._off_this_run = False
        self._finishing = False
        if stage == TrainerFn.VALIDATING and trainer.world_size > 1 and allows_empty_ranks(trainer, pl_module):
            # A rank without a batch runs no validation hook, so it could not join the gather, and
            # `validate` has no hook before its loop where the ranks could compare batch counts.
            self._switch_off(
                "`allow_zero_length_dataloader_with_multiple_devices` is set, so a rank may see no validation "
                "batch and could not take part in gathering the bank"
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._budget is not None:
            self._budget.start(trainer.current_epoch)
        self._unfinished, self.schedule = None, []
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

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_only("test")

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_only("predict")

    def _validation_only(self, loop: str) -> None:
        self._warn_once(
            "validation-only",
            f"FeatureVisualizer analyses validation loops only (`fit`, `validate`); `trainer.{loop}` runs without "
            "it. Hint: to analyse another set, pass it to `trainer.validate(model, dataloaders=...)` or run "
            "`featviz analyse`.",
        )

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._detach()
        self._drain()
        self._worker.close()
        self._stop_renderer(wait=True)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._detach()
        self._worker.close(wait=False)  # training failed: drop reports not started, stop the thread
        self._stop_renderer(wait=False)

    def _stop_renderer(self, wait: bool) -> None:
        if self._renderer is not None:
            self._renderer.close(wait)
            self._renderer = None

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "maps": self._maps.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self._maps.load_state_dict(state_dict.get("maps", {}))

    # ----------------------------------------------------------------------------- capture

    def _use_layers(self, pl_module: pl.LightningModule, paths: dict[str, str]) -> None:
        """Capture ``paths`` (module path -> display name) from now on; check the arguments that name layers."""
        displays = list(paths.values())
        if self.wrong_cluster_layer is not None and self.wrong_cluster_layer not in displays:
            raise ValueError(
                f"Expected `wrong_cluster_layer` to be one of the captured layers {displays}, "
                f"but got {self.wrong_cluster_layer!r}."
            )
        reductions = resolve_reductions(pl_module, paths, self.reduction)
        self._paths = paths
        self._capture = ActivationCapture(pl_module, list(paths), reductions, self.pool_size)

    def _choose_layers(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """``layers="auto"``: the input, the main stages and the pooled feature, found with one no-grad forward
        of an input shaped like the first validation batch (seeded noise where it is a float tensor). Each
        rank chooses for itself, with no collective (a rank without validation batches runs no validation
        hook and would leave the others waiting): the same weights and input give the same choice."""
        try:
            found = self._probe_default_layers(trainer, pl_module)
        except Exception as error:
            raise ValueError(
                "Expected `layers='auto'` to find the default layers with one forward of the first validation "
                f"batch, but it failed ({type(error).__name__}: {error}). Hint: pass `layers=[...]` "
                "(`featviz layers --arch NAME` lists the candidates of a torchvision model)."
            ) from error
        self._use_layers(pl_module, found)
        rank_zero_info(f"FeatureVisualizer layers: {list(self._paths.values())} (`layers='auto'`).")

    def _probe_default_layers(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, str]:
        loader = validation_loader(trainer, self.dataloader_idx)
        batch = next(iter(loader), None) if loader is not None else None
        if batch is None:
            raise ValueError("no validation batch")
        images = read_batch(batch, self.batch_extractor).inputs
        if images.is_floating_point():  # the same input on every rank: identical layers are found alike
            generator = torch.Generator().manual_seed(self.seed)
            images = torch.randn(images.shape, generator=generator, dtype=images.dtype)
        plugin = trainer.precision_plugin
        example = images.to(next(pl_module.parameters()).device)
        example = plugin.convert_input(example) if hasattr(plugin, "convert_input") else example
        map_reduction = self.reduction if isinstance(self.reduction, str) else "avg"
        with preserved_global_rng(), getattr(plugin, "forward_context", nullcontext)():
            paths = default_layers(pl_module, example, map_reduction, self.pool_size).layers
        return short_display_names(pl_module, paths)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.layers == "auto" and self._capture is None and not self._disabled:
            self._choose_layers(trainer, pl_module)
        fitting = trainer.state.fn == TrainerFn.FITTING
        self._active = not trainer.sanity_checking and (not fitting or trainer.current_epoch % self.every_n_epochs == 0)
        smoke_test = getattr(trainer, "fast_dev_run", False)  # nothing to analyse
        self._active &= not (self._disabled or self._off_this_run or smoke_test)
        if not self._active or self._capture is None:
            self._active = False
            return
        loader = validation_loader(trainer, self.dataloader_idx)
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
        choice = Choice(self.max_samples, self.k + 1, self.seed, tuple(queries))
        self._bank, self._choice, self._dropped = FeatureBank(size, choice, dtype), choice, set()
        self._unfinished = None  # a later epoch is analysed: the last one is this
        self._val_dataset = loader.dataset
        self._index_batches = sampler_batches(loader)
        self._capture.register()
        self._output_hook = pl_module.register_forward_hook(self._remember_predictions)

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._capture is not None:
            self._capture.clear()
            self._capture.batch_size = batch_size_of(batch, self.batch_extractor)
            if trainer.sanity_checking and batch_idx == 0 and not self._sized and not self._capture.attached:
                self._capture.register()  # one probing batch: how wide is each layer?
        self._preds = self._probs = None

    def _remember_predictions(self, module: Any, args: Any, output: Any) -> None:
        if self._preds is None:
            self._preds, self._probs = scores_of(output), probabilities_of(output)

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
            self._probe(pl_module, batch)  # a batch we cannot read fails here, before training
        if not self._active or dataloader_idx != self.dataloader_idx or self._capture is None or self._bank is None:
            return
        if not self._guarded(self._add_batch, pl_module, outputs, batch, batch_idx):
            self._bank = None  # not analysed this epoch (every rank still gathers, DDP)
            self._detach()

    def _probe(self, pl_module: pl.LightningModule, batch: Any) -> None:
        """The sanity check's first batch: read it, tell the input's kind, name layers that did not run,
        and size the bank against the memory budget."""
        inputs, _, _ = read_batch(batch, self.batch_extractor)
        self._kind_of(inputs, pl_module)
        if self._sized or self._capture is None:
            return
        captured = self._capture.pop()
        self._capture.remove()
        missing = [path for path in self._paths if path != INPUT_LAYER and path not in captured]
        if missing:
            raise ValueError(
                f"Expected every layer in `layers` to run in the validation forward, but {missing} did not. "
                "Hint: name modules that `forward` calls (a module defined but unused, or only used in "
                "training, has no output to capture)."
            )
        self._check_memory(captured, inputs, sanity=True)

    def _add_batch(self, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> bool:
        """Read one validation batch and add its kept rows to the bank; True when it went through (even
        with nothing to keep), False when the epoch cannot be analysed."""
        assert self._capture is not None and self._bank is not None
        captured = self._capture.pop()
        inputs, labels, indices = read_batch(batch, self.batch_extractor)
        if len(labels) == 0:  # an empty batch (a filtering collate): nothing ran, nothing to keep
            return True
        if indices is None:
            if (
                self._index_batches is None
                or batch_idx >= len(self._index_batches)
                or len(self._index_batches[batch_idx]) != len(labels)
            ):
                self._warn_once(
                    "indices",
                    "FeatureVisualizer cannot tell which dataset samples a validation batch holds: only a sampler "
                    "whose order is known (sequential, a list of indices, a non-shuffling DistributedSampler) "
                    "tells; a random, weighted or subset-random sampler draws a new order each time; nothing is "
                    "analysed. Hint: use shuffle=False and no sampler for validation, or return dataset indices "
                    "from `batch_extractor`.",
                )
                return False
            indices = self._index_batches[batch_idx]
        self._kind_of(inputs, pl_module)
        if not self._sized:
            self._check_memory(captured, inputs, sanity=False)
            if self._disabled:
                return False
        vectors = self._vectors(inputs, captured)
        preds_and_confidences = predictions_from(outputs) or self._preds
        if preds_and_confidences is None or len(preds_and_confidences[0]) != len(labels):
            preds_and_confidences = unknown_predictions(len(labels))
        preds, confidences = (values.cpu() for values in preds_and_confidences)
        step_logits = outputs.get("logits") if isinstance(outputs, Mapping) else None
        probs = probabilities_of(step_logits) if step_logits is not None else self._probs
        probs = probs if probs is not None and len(probs) == len(labels) else None
        self._bank.add(indices, labels.cpu(), preds, confidences, vectors, self._thumbnails(inputs), probs)
        return True

    def _vectors(self, inputs: Tensor, captured: dict[str, Tensor]) -> dict[str, Tensor]:
        """One (B, D) vector per sample for each layer still captured this epoch; a layer that did not run or
        whose vectors changed shape is left out for the rest of the epoch, with one warning."""
        vectors = {}
        for path, display in self._paths.items():
            if display in self._dropped:
                continue
            if path == INPUT_LAYER:
                vectors[display] = reduce_input(inputs, self._kind_of(inputs), self.input_size).cpu()
            elif path in captured:
                vectors[display] = captured[path]
            else:
                self._drop_layer(display, "it did not run in a validation forward")
                continue
            width, stored = tuple(vectors[display].shape[1:]), self._bank.width(display) if self._bank else None
            if stored is not None and width != stored:
                del vectors[display]
                self._drop_layer(display, f"its vectors changed shape from {stored} to {width} within the epoch")
        return vectors

    def _drop_layer(self, layer: str, reason: str) -> None:
        message = f"Layer {layer!r} is left out of this epoch's analysis: {reason}. The other layers go on."
        if self.strict:
            raise ValueError(message)
        self._dropped.add(layer)
        if self._bank is not None:
            self._bank.drop(layer)
        self._warn_once(f"dropped/{layer}", message)

    def _kind_of(self, inputs: Tensor, pl_module: pl.LightningModule | None = None) -> InputKind:
        """The input's kind (``input_kind``, else told from the first batch and the model), the same all run.

        Raises:
            TypeError: the batch does not have the shape and dtype of that kind.
        """
        if self._input_kind is None:
            self._input_kind = self.input_kind or input_kind(inputs, pl_module)
            if self._input_kind != "image":
                self._warn_once(
                    "not-images",
                    f"FeatureVisualizer sees {self._input_kind} inputs {tuple(inputs.shape)}, not images: neighbour "
                    "grids, the wrong-cluster gallery and projector thumbnails are left out; every other output "
                    "is made. Hint: pass `input_kind` if that is not what the inputs are.",
                )
        check_input_kind(inputs, self._input_kind)
        return self._input_kind

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active:
            return
        started = time.perf_counter()
        try:
            self._end_epoch(trainer, pl_module)
        finally:  # what fit waited for: gather, kNN, a report in the loop (or waiting to queue one)
            if self._budget is not None and trainer.state.fn == TrainerFn.FITTING:
                self._budget.spend(time.perf_counter() - started)

    def _end_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._active = False
        self._detach()
        # Every rank gathers (a collective); rank 0 analyses and tells the others what to log.
        columns = gather_columns(self._bank.columns() if self._bank is not None else {})
        self._bank = None
        results, metrics, failure = None, {}, None
        if trainer.is_global_zero:
            bank = bank_from_columns(columns or {}, self._choice)
            if bank is None and "indices" not in self._warned:
                self._warn_once(
                    "empty", "FeatureVisualizer captured no validation sample this epoch; nothing is analysed."
                )
            if bank is not None:
                self._plan(trainer, bank)
                try:
                    results, metrics = self._guarded(self._analyse, trainer, pl_module, bank) or (None, {})
                except Exception as error:  # strict: raised below, after telling the other ranks
                    failure = error
        failed, metrics = broadcast_object((failure is not None, metrics))
        if failure is not None:
            raise failure
        if failed:  # every rank raises, none is left waiting in a collective
            raise RuntimeError("FeatureVisualizer's analysis failed on rank 0 (strict=True); see its error.")
        through_module = {t: v for t, v in metrics.items() if self.monitor_class_purity or "/purity_of_class@" not in t}
        for tag, value in through_module.items():
            pl_module.log(tag, value, on_step=False, on_epoch=True, sync_dist=False, add_dataloader_idx=False)
        epoch, step = trainer.current_epoch, logged_step(trainer)
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
            sinks = self._sinks(trainer)
            folders = [sink.projector_dir for sink in sinks if sink.projector_dir is not None]
            job = EpochJob(results, step, self._maps_due(trainer), list(self.history), paths, folders, self._outputs)
            destination = Destination(sinks, direct, metrics)
            self._unfinished = unfinished(job, destination, self._wanted())
            if self._background:
                self._guarded(self._worker.submit, self._report, job, destination)
            else:
                self._guarded(self._report, job, destination)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # validate: every report is written when it returns
            self._drain()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._unfinished is not None:  # fit ended before the planned last epoch: what that one lacked
            job, destination = self._unfinished
            self._unfinished = None
            made = ", ".join(sorted(job.outputs or []))
            rank_zero_info(f"FeatureVisualizer schedule: fit ended; epoch {job.results.epoch} also makes {made}.")
            if self._background:
                self._guarded(self._worker.submit, self._report, job, destination)
            else:
                self._guarded(self._report, job, destination)
        self._drain()

    def _wanted(self) -> list[str]:
        """The outputs the time budget schedules (:func:`~lightning_featviz.budget.wanted_outputs`)."""
        figures = self.log_neighbour_grids or self.log_wrong_cluster or self.log_confusion
        budgeted = self.tsne_every_n_epochs == "budget"
        return wanted_outputs(figures, self.tsne_dims, self.log_projector, budgeted)

    def _plan(self, trainer: pl.Trainer, bank: BankData) -> None:
        """Rank 0, fitting under a budget: this epoch's outputs (``self._outputs``), logged in one line."""
        self._outputs = None
        if self._budget is None or not self._budget.running or trainer.state.fn != TrainerFn.FITTING:
            return
        last = last_analysed_epoch(trainer.max_epochs, self.every_n_epochs, trainer.max_steps)
        clock = self._budget.clock(trainer.current_epoch, last, self.every_n_epochs)
        widths = [int(vectors.shape[1]) for vectors in bank.vectors.values()]
        chosen, line = self._budget.plan(clock, len(bank), min(len(bank), self.map_samples), widths, self._wanted())
        if self.tsne_every_n_epochs not in (None, "budget") and self._maps_due(trainer):  # an explicit cadence
            chosen |= {MAPS_2D, MAPS_3D, PROJECTOR}
        self._outputs = chosen
        if last is not None and trainer.current_epoch >= last:
            self._final_epochs.add(trainer.current_epoch)
        self.schedule.append(line)
        rank_zero_info(f"FeatureVisualizer schedule: {line}")

    def _drain(self) -> None:
        """Wait for every queued report; nothing trains meanwhile, so those not yet started use every core."""
        self._finishing = True
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
        problem = degenerate(bank, reference, self.k)
        if problem is not None:
            self._warn_once(*problem)
            return None, {}
        # The search runs where the model is when that is a GPU; on the CPU, FAISS when installed.
        device = trainer.strategy.root_device if trainer.strategy.root_device.type == "cuda" else torch.device("cpu")
        layers = [layer for layer in self._paths.values() if layer in bank.vectors]
        if reference is not None:
            layers = [layer for layer in layers if layer in reference.vectors]
        self._warn_ceiling(bank, reference)
        exclude = self._same_samples(trainer, bank, reference)
        started = time.perf_counter()
        stats, undefined = layer_stats(
            bank,
            reference,
            layers,
            self.k,
            len(names),
            self.metric,
            device,
            self.chunk_size,
            self._knn_cache,
            self._warn_once,
            exclude,
            self._search_widths(trainer, bank, layers, reference is None),
        )
        if self._budget is not None:
            self._budget.record({KNN: time.perf_counter() - started}, optional=False)
        metrics = epoch_metrics(stats, bank.labels, names, self.tag, undefined, self.monitor_class_purity)
        searched = reference if reference is not None else bank
        return EpochResults(bank, searched, stats, names, self.k, trainer.current_epoch), metrics

    def _search_widths(
        self, trainer: pl.Trainer, bank: BankData, layers: list[str], within_bank: bool
    ) -> dict[str, int]:
        """Each layer's K for its one search this epoch: what purity, label issues and (a map of the whole
        bank) the map need (:func:`~lightning_featviz.neighbourhoods.neighbours_needed`)."""
        maps = within_bank and self._maps_due(trainer) and len(bank) <= self.map_samples
        labelled = (self.wrong_cluster_layer or (layers[-1] if layers else None)) if self.log_wrong_cluster else None
        figures = self._outputs is None or FIGURES in self._outputs
        label_k = label_issue_k(bank.labels) if within_bank and figures else 0
        return {
            layer: neighbours_needed(len(bank), self.k, self.perplexity, maps, label_k if layer == labelled else 0)
            for layer in layers
        }

    def _warn_ceiling(self, bank: BankData, reference: BankData | None) -> None:
        """Warn once when too few samples of some classes were kept for purity@k to reach 1."""
        searched = reference if reference is not None else bank
        ceiling = purity_ceiling(bank.labels, searched.labels, self.k, reference is None)
        if ceiling > 0.999:
            return
        counts = torch.bincount(searched.labels)
        small = int(((counts > 0) & (counts < self.k + int(reference is None))).sum())
        knob = "max_reference" if reference is not None else "max_samples"
        value = getattr(self, knob)
        lifted = int((counts > 0).sum()) * (self.k + 1)
        self._warn_once(
            "ceiling",
            f"kNN purity@{self.k} cannot exceed {ceiling:.3f} here, however good the features: {small} of "
            f"{int((counts > 0).sum())} classes have fewer than {self.k + int(reference is None)} samples among "
            f"the {len(searched)} kept (`{knob}`={value}). Hint: `{knob}` >= {lifted} keeps {self.k + 1} of each "
            "class where the data has them; or lower `k`.",
        )

    def _same_samples(self, trainer: pl.Trainer, bank: BankData, reference: BankData | None) -> Tensor | None:
        """(N,) the reference row holding the same sample as each validation row (-1: none), where the
        training and validation sets come from one dataset; None otherwise."""
        loader = training_loader(trainer)
        if reference is None or loader is None or self._val_dataset is None:
            return None
        return matching_rows(self._val_dataset, bank.indices, loader.dataset, reference.indices)

    def _report(self, job: EpochJob, destination: Destination) -> None:
        started = time.perf_counter()
        report = self._render(job)
        if self._budget is not None:
            # A background report on the CPU takes the cores training would use: its time adds to fit.
            if self._background and self._on_cpu:
                self._budget.spend(time.perf_counter() - started)
            self._budget.record(report.seconds, optional=job.results.epoch not in self._final_epochs)
        destination.write(report, job.step, job.results.epoch)
        for key, message in report.warnings:
            self._warn_once(key, message)
        self.wrong_cluster_indices = report.flagged
        if report.error is not None:
            raise report.error

    def _render(self, job: EpochJob) -> Report:
        """Render in the report process (background, POSIX), else in this one."""
        assert self._reporter is not None  # setup ran: the epoch was analysed
        if not (self._background and self._process_works and can_render_in_a_process()):
            return self._reporter.render(job)
        started = self._renderer is None
        try:
            if self._renderer is None:
                self._renderer = RenderProcess(self._reporter.options, self._maps, self._log_dir)
            threads = (os.cpu_count() or 1) if self._finishing else 1
            report, maps = self._renderer.render(job, threads)
        except (OSError, RuntimeError) as error:
            self._stop_renderer(wait=False)
            if not started:  # it worked, then died: this report is lost; the next starts a new process
                return Report(error=error)
            self._process_works = False
            self._warn_once(
                "report-process",
                f"FeatureVisualizer could not start its report process ({error}); reports render on a thread "
                "of the training process instead.",
            )
            return self._reporter.render(job)
        self._maps.load_state_dict(maps)  # for checkpoints
        return report

    def _maps_due(self, trainer: pl.Trainer) -> bool:
        if self.tsne_every_n_epochs is None:
            return False
        if trainer.state.fn != TrainerFn.FITTING:
            return True
        if self.tsne_every_n_epochs == "budget":  # as planned (every epoch without a budget)
            return self._outputs is None or bool({MAPS_2D, MAPS_3D} & self._outputs)
        return trainer.current_epoch % self.tsne_every_n_epochs == 0

    def tag(self, kind: str, layer: str, *rest: str) -> str:
        """The logged tag, e.g. ``featviz/knn_purity@10/avgpool``; images have no ``@k``: ``featviz/tsne_2d/x``."""
        return make_tag(kind, layer, *rest, k=self.k)

    # ----------------------------------------------------------------------------- helpers

    def _check_memory(self, captured: dict[str, Tensor], inputs: Tensor, sanity: bool) -> None:
        """Predict the bank's size from one batch's vectors, log it once, and hold it to the budget."""
        if any(path != INPUT_LAYER and path not in captured for path in self._paths):
            return  # a layer did not run on this batch: try again on the next one
        self._sized = True
        width = input_width(tuple(inputs.shape), self._kind_of(inputs), self.input_size)
        dims = {
            display: width if path == INPUT_LAYER else int(captured[path][0].numel())
            for path, display in self._paths.items()
        }
        rows = self.max_samples + (self.max_reference if self.reference == "train" else 0)
        dtype = torch.float16 if self.storage_dtype == "float16" else torch.float32
        shown = self._shows_images and self._input_kind == "image"
        classes = self._probs.shape[1] if self._probs is not None else 0
        size = bank_bytes(rows, dims, dtype, self.thumbnail_size if shown else None, classes) / 2**20
        widths = " + ".join(f"{d} ({layer})" for layer, d in dims.items())
        rank_zero_info(
            f"FeatureVisualizer bank: up to {rows} samples x {widths} dims"
            f"{f' + {classes} class probabilities' if classes else ''} in {self.storage_dtype}"
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
        """Up to ``max_reference`` training samples, captured by a no-grad, eval-mode forward."""
        assert self._capture is not None
        bank = capture_training_bank(
            trainer,
            pl_module,
            self._capture,
            self.max_reference,
            self.seed + 1,
            self.batch_extractor,
            self._vectors,
            self._thumbnails,
        )
        if bank is None:
            self._warn_once(
                "train",
                "`reference='train'` needs a training DataLoader over a sized dataset; "
                "searching the validation samples instead.",
            )
        return bank

    def _thumbnails(self, inputs: Tensor) -> Tensor:
        """(B, 3, T, T) uint8 thumbnails of image inputs, or (B, 0) when no output shows images."""
        if not self._shows_images or self._input_kind != "image":
            return torch.empty(inputs.shape[0], 0, dtype=torch.uint8)
        images = as_images(inputs)
        channels = images.shape[1]
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

    def _class_names(self, trainer: pl.Trainer, num_seen: int) -> list[str]:
        known = self.class_names or known_class_names(trainer, validation_loader(trainer, self.dataloader_idx))
        if num_seen > len(known) and known:
            self._warn_once(
                "labels",
                f"Labels go up to {num_seen - 1} but only {len(known)} class names are known; "
                "the rest are named by id.",
            )
        return list(known) + [str(i) for i in range(len(known), num_seen)]

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


def batch_size_of(batch: Any, extractor: Callable[[Any], tuple[Any, ...]] | None) -> int | None:
    """The number of samples in ``batch`` (its labels), or None when it cannot be read."""
    try:
        return len(read_batch(batch, extractor).labels)
    except (TypeError, ValueError, KeyError, IndexError):
        return None
