"""The Lightning callback: decides *when* to capture and analyse, and *where* results go.

Everything it computes is done by the plain functions of the other modules.

Over 300 lines: the 41 constructor arguments and their documentation take about 200; grouping them into
option objects (issue 15) is still to do.
"""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from lightning_featviz.analysis.embedding import MapTracker
from lightning_featviz.analysis.knn import NeighbourStats, ResultCache
from lightning_featviz.analysis.label_issues import label_issue_k
from lightning_featviz.analysis.measures import EpochResults, degenerate, epoch_metrics, layer_stats, purity_ceiling
from lightning_featviz.analysis.neighbourhoods import neighbours_needed
from lightning_featviz.arguments import check_arguments
from lightning_featviz.capture.bank import (
    BankData,
    bank_from_columns,
)
from lightning_featviz.capture.batches import (
    read_batch,
)
from lightning_featviz.capture.default_layers import default_layers
from lightning_featviz.capture.epoch import CaptureSettings, ValidationCapture
from lightning_featviz.capture.hooks import (
    resolve_layers,
    resolve_reductions,
    short_display_names,
)
from lightning_featviz.capture.trainer_data import (
    allows_empty_ranks,
    capture_training_bank,
    known_class_names,
    logged_step,
    matching_rows,
    preserved_global_rng,
    sample_paths,
    sampler_batches,
    training_loader,
    validation_loader,
)
from lightning_featviz.options import (
    GROUPS,
    CaptureOptions,
    MapOptions,
    OutputOptions,
    ProjectorOptions,
    ResourceOptions,
    WrongClusterOptions,
    group_of,
    move_deprecated,
)
from lightning_featviz.outputs.sinks import FileSink, Sink, TensorBoardSink, tensorboard_writers
from lightning_featviz.report.budget import (
    FIGURES,
    KNN,
    MAPS_2D,
    MAPS_3D,
    PROJECTOR,
    TimeBudget,
    last_analysed_epoch,
    wanted_outputs,
)
from lightning_featviz.report.reporter import Destination, EpochJob, Report, Reporter, ReportOptions, unfinished
from lightning_featviz.report.reporter import tag as make_tag
from lightning_featviz.runtime.distributed import all_objects, broadcast_object, gather_columns
from lightning_featviz.runtime.scheduler import ReportScheduler


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


class Phase(Enum):
    """Where a run of the callback stands."""

    WAITING = "waiting"  #: for the next validation epoch to capture
    CAPTURING = "capturing"  #: a validation epoch is being captured
    OFF_THIS_RUN = "off this run"  #: this fit/validate cannot be gathered (a rank without validation batches)
    OFF = "off"  #: the bank would exceed `memory_budget_mb`: off for the rest of the callback's life


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
        every_n_epochs: run on every n-th epoch of ``fit``.
        overhead: the time budget in ``fit``: the callback's work may add at most this share to the time
            ``fit`` takes without it (0.1: 1.1 times), over the run. kNN scalars come every analysed epoch;
            figures, maps, the projector and 3-D maps are made on the epochs the budget allows (costs are
            measured as they run), and all of them at the last analysed epoch (known from ``max_epochs``;
            when ``max_steps``, early stopping or an interrupt ends ``fit`` first, what the last analysed
            epoch lacked is made when ``fit`` ends). Each analysed epoch logs one line saying what it made
            and when the next map comes (also in :attr:`schedule`). A cadence given explicitly
            (``maps.every_n_epochs`` an integer) wins over the budget. None: no budget, every output every
            analysed epoch. ``validate`` makes everything.
        class_names: names of the class ids; default from the datamodule or dataset ``.classes``.
        dashboard: write the files of TensorBoard's FEATVIZ tab (neighbours, maps, predictions and
            wrong-cluster flags of every layer, thumbnails once) under ``<log dir>/featviz_dashboard``
            each analysed epoch (see ``docs/dashboard.md``).
        strict: raise failures of the analysis and of the reports (a plotting error, a full disk)
            instead of warning once and letting training go on.
        seed: seed of the sample choice; the global RNGs are never touched.
        capture: what is captured and how it becomes vectors (:class:`~lightning_featviz.CaptureOptions`).
        maps: t-SNE maps (:class:`~lightning_featviz.MapOptions`); False: none (and no projector).
        projector: projector embeddings (:class:`~lightning_featviz.ProjectorOptions`); False: none.
        wrong_cluster: the wrong-cluster gallery and export (:class:`~lightning_featviz.WrongClusterOptions`);
            False: none.
        outputs: neighbour grids, confusion figures, per-class scalars, a static report folder
            (:class:`~lightning_featviz.OutputOptions`).
        resources: background reports, the memory budget, the kNN chunk (:class:`~lightning_featviz.ResourceOptions`).
        **deprecated_arguments: the flat arguments of version 0.1 (``perplexity=20`` for
            ``maps=MapOptions(perplexity=20)``, see :data:`lightning_featviz.options.DEPRECATED`): they still
            work for this release, with a :class:`~lightning_featviz.options.FeatvizDeprecationWarning`.
    """

    def __init__(
        self,
        layers: Sequence[str] | Mapping[str, str] | Literal["auto"] | None = "auto",
        k: int = 10,
        max_samples: int = 2000,
        every_n_epochs: int = 1,
        overhead: float | None = 0.1,
        class_names: Sequence[str] | None = None,
        dashboard: bool = True,
        strict: bool = False,
        seed: int = 0,
        capture: CaptureOptions = CaptureOptions(),
        maps: MapOptions | bool = MapOptions(),
        projector: ProjectorOptions | bool = ProjectorOptions(),
        wrong_cluster: WrongClusterOptions | bool = WrongClusterOptions(),
        outputs: OutputOptions = OutputOptions(),
        resources: ResourceOptions = ResourceOptions(),
        **deprecated_arguments: Any,
    ) -> None:
        given: dict[str, Any] = {"capture": capture, "maps": maps, "projector": projector}
        given |= {"wrong_cluster": wrong_cluster, "outputs": outputs, "resources": resources}
        explicit = {name: value for name, value in given.items() if value is not _GROUP_DEFAULTS[name]}
        given |= move_deprecated(explicit, deprecated_arguments)
        groups = {name: group_of(name, value) for name, value in given.items()}
        check_arguments(layers, k, max_samples, every_n_epochs, overhead, dashboard, groups)
        self.layers: list[str] | dict[str, str] | Literal["auto"] = (
            "auto"
            if layers is None or layers == "auto"
            else dict(layers)
            if isinstance(layers, Mapping)
            else list(layers)
        )
        self.k = k
        self.max_samples = max_samples
        self.every_n_epochs = every_n_epochs
        self.overhead = overhead
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.dashboard = dashboard
        self.strict = bool(strict)
        self.seed = seed
        self.capture: CaptureOptions = groups["capture"]
        self.maps: MapOptions = groups["maps"]
        self.projector: ProjectorOptions | None = groups["projector"]
        self.wrong_cluster: WrongClusterOptions | None = groups["wrong_cluster"]
        self.outputs: OutputOptions = groups["outputs"]
        self.resources: ResourceOptions = groups["resources"]
        #: One line per analysed epoch of ``fit`` under the time budget: what it made, when the next map comes.
        self.schedule: list[str] = []

        self.history: list[dict[str, float | int | str]] = []
        #: Dataset indices of the images in the wrong cluster at the last analysed epoch, per layer
        #: (strongest first); filled on rank 0.
        self.wrong_cluster_indices: dict[str, list[int]] = {}
        self._log_dir: str | None = None
        self._val_dataset: Any = None
        self._phase = Phase.WAITING
        self._warned: set[str] = set()
        self._run = ValidationCapture(self._capture_options(), self._warn_once, rank_zero_info)
        self._knn_cache: ResultCache[NeighbourStats] = ResultCache()
        self._map_tracker = MapTracker(self.maps.perplexity, seed, self.maps.backend)
        self._reports = ReportScheduler(self._map_tracker, self._warn_once, self._reported)
        self._budget = TimeBudget(overhead) if overhead is not None else None
        self._outputs: frozenset[str] | None = None  # this epoch's budgeted outputs (None: every one)
        self._unfinished: tuple[EpochJob, Destination] | None = None  # the last epoch, if it lacks outputs
        self._final_epochs: set[int] = set()  # epochs whose report made everything as the last one
        self._on_cpu = True

    # ----------------------------------------------------------------------------- lifecycle

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=self.layers if self.layers == "auto" else list(self.layers), k=self.k)

    @property
    def _paths(self) -> dict[str, str]:
        """The captured layers: module path -> display name."""
        return self._run.paths

    def _capture_options(self) -> CaptureSettings:
        capture, resources = self.capture, self.resources
        shows_images = (  # whether any output shows thumbnails (grids, the gallery, the projector's sprite)
            self.outputs.neighbour_grids
            or self.wrong_cluster is not None
            or bool(self.projector is not None and self.maps.every_n_epochs)
        )
        return CaptureSettings(
            k=self.k,
            max_samples=self.max_samples,
            max_reference=capture.max_reference,
            reference=capture.reference,
            seed=self.seed,
            pool_size=capture.pool_size,
            input_size=capture.input_size,
            input_kind=capture.input_kind,
            thumbnail_size=capture.thumbnail_size,
            image_mean=capture.image_mean,
            image_std=capture.image_std,
            storage_dtype=capture.storage_dtype,
            memory_budget_mb=resources.memory_budget_mb,
            strict=self.strict,
            batch_extractor=capture.batch_extractor,
            shows_images=shows_images,
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._run.options = self._capture_options()
        self._run.forget_layers()
        if self.layers != "auto":  # "auto": chosen at the first validation epoch, on one of its batches
            self._use_layers(pl_module, resolve_layers(pl_module, self.layers))
        # trainer.log_dir broadcasts from rank 0: ask once here, where every rank runs, never in a
        # branch that one rank could skip (that would hang the others).
        self._log_dir = trainer.log_dir
        wrong_cluster = self.wrong_cluster or WrongClusterOptions()
        options = ReportOptions(
            k=self.k,
            query_indices=None if self.outputs.query_indices is None else list(self.outputs.query_indices),
            log_neighbour_grids=self.outputs.neighbour_grids,
            log_wrong_cluster=self.wrong_cluster is not None,
            wrong_cluster_layer=wrong_cluster.layer,
            min_share=wrong_cluster.min_share,
            max_gallery=wrong_cluster.max_gallery,
            log_confusion=self.outputs.confusion,
            tsne_dims=list(self.maps.dims),
            log_projector=self.projector is not None,
            projector_every_n_epochs=(self.projector or ProjectorOptions()).every_n_epochs,
            dashboard=self.dashboard,
            map_samples=self.maps.samples,
            seed=self.seed,
        )
        on_accelerator = trainer.strategy.root_device.type != "cpu"
        background = self.resources.background if self.resources.background is not None else on_accelerator
        self._on_cpu = not on_accelerator
        self._reports.start(Reporter(options, self._map_tracker, self._log_dir), self._log_dir, background)
        self._phase = Phase.OFF if self._phase is Phase.OFF else Phase.WAITING
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
        local = counts[self.capture.dataloader_idx] if self.capture.dataloader_idx < len(counts) else 0
        everyone = all_objects(float(local))
        if min(everyone) == 0 < max(everyone):
            empty = [rank for rank, count in enumerate(everyone) if count == 0]
            self._switch_off(f"ranks {empty} see no batch of validation dataloader {self.capture.dataloader_idx}")

    def _switch_off(self, reason: str) -> None:
        self._phase = Phase.OFF if self._phase is Phase.OFF else Phase.OFF_THIS_RUN
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
        self._run.detach()
        self._drain()
        self._reports.close(wait=True)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._run.detach()
        self._reports.close(wait=False)  # training failed: drop reports not started, stop the thread

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "maps": self._map_tracker.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self._map_tracker.load_state_dict(state_dict.get("maps", {}))

    # ----------------------------------------------------------------------------- capture

    def _use_layers(self, pl_module: pl.LightningModule, paths: dict[str, str]) -> None:
        """Capture ``paths`` (module path -> display name) from now on; check the arguments that name layers."""
        displays = list(paths.values())
        chosen = self.wrong_cluster.layer if self.wrong_cluster is not None else None
        if chosen is not None and chosen not in displays:
            raise ValueError(
                f"Expected `wrong_cluster.layer` to be one of the captured layers {displays}, but got {chosen!r}."
            )
        self._run.use(pl_module, paths, resolve_reductions(pl_module, paths, self.capture.reduction))

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
        loader = validation_loader(trainer, self.capture.dataloader_idx)
        batch = next(iter(loader), None) if loader is not None else None
        if batch is None:
            raise ValueError("no validation batch")
        images = read_batch(batch, self.capture.batch_extractor).inputs
        if images.is_floating_point():  # the same input on every rank: identical layers are found alike
            generator = torch.Generator().manual_seed(self.seed)
            images = torch.randn(images.shape, generator=generator, dtype=images.dtype)
        plugin = trainer.precision_plugin
        example = images.to(next(pl_module.parameters()).device)
        example = plugin.convert_input(example) if hasattr(plugin, "convert_input") else example
        map_reduction = self.capture.reduction if isinstance(self.capture.reduction, str) else "avg"
        with preserved_global_rng(), getattr(plugin, "forward_context", nullcontext)():
            paths = default_layers(pl_module, example, map_reduction, self.capture.pool_size).layers
        return short_display_names(pl_module, paths)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.layers == "auto" and self._run.hooks is None and self._phase is not Phase.OFF:
            self._choose_layers(trainer, pl_module)
        if self._phase is Phase.CAPTURING:
            self._phase = Phase.WAITING  # the last epoch was not ended (an exception)
        fitting = trainer.state.fn == TrainerFn.FITTING
        due = not trainer.sanity_checking and (not fitting or trainer.current_epoch % self.every_n_epochs == 0)
        smoke_test = getattr(trainer, "fast_dev_run", False)  # nothing to analyse
        if not due or smoke_test or self._phase is not Phase.WAITING or self._run.hooks is None:
            return
        loader = validation_loader(trainer, self.capture.dataloader_idx)
        size = len(loader.dataset) if loader is not None and hasattr(loader.dataset, "__len__") else None
        if loader is None or size is None:
            self._warn_once("loader", "FeatureVisualizer found no sized validation dataset; nothing is analysed.")
            return
        queries = [i for i in self.outputs.query_indices or [] if i < size]
        if len(queries) < len(self.outputs.query_indices or []):
            beyond = sorted(set(self.outputs.query_indices or []) - set(queries))
            self._warn_once(
                "queries",
                f"`outputs.query_indices` {beyond} are beyond the validation dataset ({size} samples); they are left "
                "out.",
            )
        self._val_dataset = loader.dataset
        self._run.start_epoch(pl_module, size, queries, sampler_batches(loader))
        self._unfinished = None  # a later epoch is analysed: the last one is this
        self._phase = Phase.CAPTURING

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._run.start_batch(batch, probing=trainer.sanity_checking and batch_idx == 0)

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
            self._run.probe(pl_module, batch)  # a batch we cannot read fails here, before training
        capturing = self._phase is Phase.CAPTURING and dataloader_idx == self.capture.dataloader_idx
        if not capturing or self._run.hooks is None or self._run.bank is None:
            return
        if not self._guarded(self._run.add_batch, pl_module, outputs, batch, batch_idx):
            self._run.bank = None  # not analysed this epoch (every rank still gathers, DDP)
            self._run.detach()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._phase is not Phase.CAPTURING:
            return
        started = time.perf_counter()
        try:
            self._end_epoch(trainer, pl_module)
        finally:  # what fit waited for: gather, kNN, a report in the loop (or waiting to queue one)
            if self._budget is not None and trainer.state.fn == TrainerFn.FITTING:
                self._budget.spend(time.perf_counter() - started)

    def _end_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._phase = Phase.OFF if self._run.over_budget else Phase.WAITING
        self._run.detach()
        # Every rank gathers (a collective); rank 0 analyses and tells the others what to log.
        columns = gather_columns(self._run.take_columns())
        results, metrics, failure = None, {}, None
        if trainer.is_global_zero:
            bank = bank_from_columns(columns or {}, self._run.choice)
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
        through_module = {
            t: v for t, v in metrics.items() if self.outputs.monitor_class_purity or "/purity_of_class@" not in t
        }
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
            wanted = (self.wrong_cluster is not None or self.dashboard) and self._val_dataset is not None
            paths = sample_paths(self._val_dataset, results.bank.indices.tolist()) if wanted else None
            sinks = self._sinks(trainer)
            folders = [sink.projector_dir for sink in sinks if sink.projector_dir is not None]
            job = EpochJob(results, step, self._maps_due(trainer), list(self.history), paths, folders, self._outputs)
            destination = Destination(sinks, direct, metrics)
            self._unfinished = unfinished(job, destination, self._wanted())
            self._guarded(self._reports.submit, job, destination)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # validate: every report is written when it returns
            self._drain()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._unfinished is not None:  # fit ended before the planned last epoch: what that one lacked
            job, destination = self._unfinished
            self._unfinished = None
            made = ", ".join(sorted(job.outputs or []))
            rank_zero_info(f"FeatureVisualizer schedule: fit ended; epoch {job.results.epoch} also makes {made}.")
            self._guarded(self._reports.submit, job, destination)
        self._drain()

    def _wanted(self) -> list[str]:
        """The outputs the time budget schedules (:func:`~lightning_featviz.report.budget.wanted_outputs`)."""
        figures = self.outputs.neighbour_grids or self.wrong_cluster is not None or self.outputs.confusion
        budgeted = self.maps.every_n_epochs == "budget"
        return wanted_outputs(figures, list(self.maps.dims), self.projector is not None, budgeted)

    def _plan(self, trainer: pl.Trainer, bank: BankData) -> None:
        """Rank 0, fitting under a budget: this epoch's outputs (``self._outputs``), logged in one line."""
        self._outputs = None
        if self._budget is None or not self._budget.running or trainer.state.fn != TrainerFn.FITTING:
            return
        last = last_analysed_epoch(trainer.max_epochs, self.every_n_epochs, trainer.max_steps)
        clock = self._budget.clock(trainer.current_epoch, last, self.every_n_epochs)
        widths = [int(vectors.shape[1]) for vectors in bank.vectors.values()]
        chosen, line = self._budget.plan(clock, len(bank), min(len(bank), self.maps.samples), widths, self._wanted())
        if self.maps.every_n_epochs not in (None, "budget") and self._maps_due(trainer):  # an explicit cadence
            chosen |= {MAPS_2D, MAPS_3D, PROJECTOR}
        self._outputs = chosen
        if last is not None and trainer.current_epoch >= last:
            self._final_epochs.add(trainer.current_epoch)
        self.schedule.append(line)
        rank_zero_info(f"FeatureVisualizer schedule: {line}")

    def _drain(self) -> None:
        """Wait for every queued report; nothing trains meanwhile, so those not yet started use every core."""
        self._guarded(self._reports.drain)

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
        reference = self._capture_reference(trainer, pl_module) if self.capture.reference == "train" else None
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
            self.capture.metric,
            device,
            self.resources.chunk_size,
            self._knn_cache,
            self._warn_once,
            exclude,
            self._search_widths(trainer, bank, layers, reference is None),
        )
        if self._budget is not None:
            self._budget.record({KNN: time.perf_counter() - started}, optional=False)
        metrics = epoch_metrics(stats, bank.labels, names, self.tag, undefined, self.outputs.monitor_class_purity)
        searched = reference if reference is not None else bank
        return EpochResults(bank, searched, stats, names, self.k, trainer.current_epoch), metrics

    def _search_widths(
        self, trainer: pl.Trainer, bank: BankData, layers: list[str], within_bank: bool
    ) -> dict[str, int]:
        """Each layer's K for its one search this epoch: what purity, label issues and (a map of the whole
        bank) the map need (:func:`~lightning_featviz.analysis.neighbourhoods.neighbours_needed`)."""
        maps = within_bank and self._maps_due(trainer) and len(bank) <= self.maps.samples
        labelled = (self.wrong_cluster.layer or (layers[-1] if layers else None)) if self.wrong_cluster else None
        figures = self._outputs is None or FIGURES in self._outputs
        label_k = label_issue_k(bank.labels) if within_bank and figures else 0
        return {
            layer: neighbours_needed(len(bank), self.k, self.maps.perplexity, maps, label_k if layer == labelled else 0)
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
        knob = "capture.max_reference" if reference is not None else "max_samples"
        value = self.capture.max_reference if reference is not None else self.max_samples
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

    def _reported(self, job: EpochJob, report: Report, seconds: float) -> None:
        """A written report (``seconds``: its time to render); its render times go to the budget."""
        self.wrong_cluster_indices = report.flagged
        if self._budget is not None:
            # A background report on the CPU takes the cores training would use: its time adds to fit.
            if self._reports.background and self._on_cpu:
                self._budget.spend(seconds)
            self._budget.record(report.seconds, optional=job.results.epoch not in self._final_epochs)

    def _maps_due(self, trainer: pl.Trainer) -> bool:
        if self.maps.every_n_epochs is None:
            return False
        if trainer.state.fn != TrainerFn.FITTING:
            return True
        if self.maps.every_n_epochs == "budget":  # as planned (every epoch without a budget)
            return self._outputs is None or bool({MAPS_2D, MAPS_3D} & self._outputs)
        return trainer.current_epoch % self.maps.every_n_epochs == 0

    def tag(self, kind: str, layer: str, *rest: str) -> str:
        """The logged tag, e.g. ``featviz/knn_purity@10/avgpool``; images have no ``@k``: ``featviz/tsne_2d/x``."""
        return make_tag(kind, layer, *rest, k=self.k)

    # ----------------------------------------------------------------------------- helpers

    def _capture_reference(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> BankData | None:
        """Up to ``max_reference`` training samples, captured by a no-grad, eval-mode forward."""
        assert self._run.hooks is not None
        bank = capture_training_bank(
            trainer,
            pl_module,
            self._run.hooks,
            self.capture.max_reference,
            self.seed + 1,
            self.capture.batch_extractor,
            self._run.vectors,
            self._run.thumbnails,
        )
        if bank is None:
            self._warn_once(
                "train",
                "`capture.reference='train'` needs a training DataLoader over a sized dataset; "
                "searching the validation samples instead.",
            )
        return bank

    def _class_names(self, trainer: pl.Trainer, num_seen: int) -> list[str]:
        known = self.class_names or known_class_names(trainer, validation_loader(trainer, self.capture.dataloader_idx))
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
        report = [FileSink(self.outputs.report_dir, embeddings=False)] if self.outputs.report_dir is not None else []
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

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=2)


#: The default of each option group, as in the signature: a group that is not its default was passed.
_GROUP_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(FeatureVisualizer.__init__).parameters.items()
    if name in GROUPS
}
