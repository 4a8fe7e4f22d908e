"""The Lightning callback: decides *when* (which hook, which epoch) and hands the rest to objects named for
their job: a :class:`~lightning_featviz.capture.epoch.ValidationCapture` per rank, rank 0's
:class:`~lightning_featviz.epoch_analysis.EpochAnalysis`, the :class:`~lightning_featviz.report.plan.OutputPlan`
of each epoch, and the :class:`~lightning_featviz.runtime.scheduler.ReportScheduler` that writes the reports.

Over 300 lines: one Lightning hook each for every moment it acts on, its imports and the signature of its
options; nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info
from torch import nn

from lightning_featviz import __version__
from lightning_featviz.analysis.embedding import MapTracker
from lightning_featviz.analysis.history import DynamicsTracker
from lightning_featviz.analysis.results import EpochResults
from lightning_featviz.arguments import check_arguments, normalised_layers
from lightning_featviz.capture.bank import BankData, bank_from_columns
from lightning_featviz.capture.epoch import CaptureSettings, ValidationCapture
from lightning_featviz.capture.hooks import resolve_layers, resolve_reductions
from lightning_featviz.capture.layouts import has_class_token
from lightning_featviz.capture.pooling import known_models
from lightning_featviz.capture.trainer_data import (
    allows_empty_ranks,
    logged_step,
    probe_default_layers,
    sample_paths,
    sampler_batches,
    validation_loader,
)
from lightning_featviz.dashboard.data import FOLDER
from lightning_featviz.epoch_analysis import EpochAnalysis, queries_within
from lightning_featviz.options import (
    CaptureOptions,
    MapOptions,
    OutputOptions,
    ProjectorOptions,
    ResourceOptions,
    WrongClusterOptions,
    group_of,
)
from lightning_featviz.outputs.sinks import Sink, sinks_for
from lightning_featviz.outputs.tracker import TrackerSink
from lightning_featviz.outputs.tracker_writer import TrackerWriter
from lightning_featviz.report.plan import SCHEDULE_TAG, OutputPlan
from lightning_featviz.report.reporter import Destination, EpochJob, Report, Reporter, unfinished
from lightning_featviz.report.settings import ReportSettings, tag
from lightning_featviz.runtime.distributed import gather_columns, on_rank_zero, ranks_without_batches
from lightning_featviz.runtime.guard import Guard
from lightning_featviz.runtime.scheduler import ReportScheduler
from lightning_featviz.training_audit import TrainingAudit


def _has_tokens(model: nn.Module) -> bool:
    """Whether ``model`` looks like a token model: an attention module, or a ``cls_token`` / ``class_token``."""
    return any(
        isinstance(module, (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer))
        or has_class_token([module])
        for module in model.modules()
    )


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

    Every analysed validation epoch (not the sanity check), for each layer: kNN purity@k and kNN accuracy as
    scalars (through ``LightningModule.log``: they can be monitored); neighbour grids, confusion and wrong-cluster
    figures, t-SNE maps and projector embeddings on their schedule, where the time budget leaves them in; the
    FEATVIZ tab's files.
    docs/api.md describes every argument and option.

    Args:
        layers: ``"auto"`` (or None): the input, the main stages and the pooled feature before the head, found
            with one forward shaped like the first validation batch; or module paths (or unique path endings),
            or a mapping path -> display name. ``"input"`` is the batch itself.
        k: neighbours per sample.
        max_samples: validation samples kept (the same ones every epoch).
        every_n_epochs: analyse every n-th epoch of ``fit`` (its kNN scalars); figures and maps follow their own
            schedule on the analysed epochs (``outputs.every_n_epochs``, ``maps.every_n_epochs``).
        overhead: the time budget: the share of ``fit``'s time the callback aims to add at most (0.1: 1.1 times);
            it may leave out outputs the schedule holds, and says which and why (:attr:`schedule`, the text
            ``featviz/schedule``). None: the schedule as it is, the same on every machine.
        class_names: names of the class ids; default from the datamodule or dataset ``.classes``.
        dashboard: write the files of TensorBoard's FEATVIZ tab each analysed epoch.
        strict: raise failures of the analysis and of the reports instead of warning once.
        seed: seed of the sample choice; the global RNGs are never touched.
        capture: what is captured and how (:class:`~lightning_featviz.CaptureOptions`).
        maps: t-SNE maps (:class:`~lightning_featviz.MapOptions`); False: none.
        projector: projector embeddings (:class:`~lightning_featviz.ProjectorOptions`); False: none.
        wrong_cluster: the wrong-cluster gallery (:class:`~lightning_featviz.WrongClusterOptions`); False: none.
        outputs: grids, confusion, per-class scalars, a report folder (:class:`~lightning_featviz.OutputOptions`).
        resources: background reports, memory budget, kNN chunk (:class:`~lightning_featviz.ResourceOptions`).

    The arguments are read when a ``fit`` or ``validate`` starts (``setup``): an attribute changed after
    construction (``visualizer.k = 20``) applies to every part from the next run on. The option groups are frozen.
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
    ) -> None:
        given = {"capture": capture, "maps": maps, "projector": projector, "wrong_cluster": wrong_cluster}
        groups = {
            name: group_of(name, value) for name, value in {**given, "outputs": outputs, "resources": resources}.items()
        }
        check_arguments(layers, k, max_samples, every_n_epochs, overhead, dashboard, groups)
        self.layers = normalised_layers(layers)
        self.k, self.max_samples, self.every_n_epochs, self.overhead = k, max_samples, every_n_epochs, overhead
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.dashboard, self.strict, self.seed = dashboard, bool(strict), seed
        self.capture: CaptureOptions = groups["capture"]
        self.maps: MapOptions = groups["maps"]
        self.projector: ProjectorOptions | None = groups["projector"]
        self.wrong_cluster: WrongClusterOptions | None = groups["wrong_cluster"]
        self.outputs: OutputOptions = groups["outputs"]
        self.resources: ResourceOptions = groups["resources"]
        #: One row per layer per analysed epoch: ``{"epoch", "step", "layer", "knn_purity", "knn_accuracy"}``.
        self.history: list[dict[str, float | int | str]] = []
        #: Dataset indices of the images in the wrong cluster at the last analysed epoch, per layer
        #: (strongest first); filled on rank 0.
        self.wrong_cluster_indices: dict[str, list[int]] = {}
        self._log_dir: str | None = None
        self._val_dataset: Any = None
        self._phase = Phase.WAITING
        self._guard = Guard(self.strict)
        self._run = ValidationCapture(self._capture_settings(), self._guard.warn_once, rank_zero_info)
        self._analysis, self._plan = self._epoch_analysis(), self._output_plan()
        self._map_tracker = MapTracker(self.maps.perplexity, seed)
        self._dynamics = DynamicsTracker()  # rank 0: the label-issue layer's history across the fit's epochs
        self._audit = TrainingAudit(self.capture.batch_extractor, self._guard.warn_once)  # training margins (AUM)
        self._reports = ReportScheduler(self._map_tracker, self._guard.warn_once, self._reported)
        # the trackers' client calls (W&B, MLflow, Comet), on a thread of their own; their time counts in the budget
        self._trackers = TrackerWriter(self._guard.warn_once, self._plan.record_trackers)
        self._sinks: list[Sink] = []  # rank 0: where the last epoch's report went, and its step
        self._sinks_step = 0
        self._unfinished: tuple[EpochJob, Destination] | None = None  # the last epoch, if it lacks outputs
        self._reported_epochs: set[int] = set()  # epochs whose report is written (the checkpoints say which)
        self._on_cpu = True
        self._last_block: int | None = None  # epoch // every_n_epochs of the last epoch analysed in fit
        self._pooling_probed = False  # named layers: how an unknown token model pools was looked for
        self._state_key: tuple[object, str] = (None, "")

    @property
    def schedule(self) -> list[str]:
        """One line per analysed epoch of ``fit`` under the time budget: what it made, when the next map comes."""
        return self._plan.schedule

    @property
    def state_key(self) -> str:
        # Lightning reads it hundreds of times an epoch: made again only when `layers` or `k` changed
        made_from = (self.layers if self.layers == "auto" else tuple(self.layers), self.k)
        if self._state_key[0] != made_from:
            layers = made_from[0] if made_from[0] == "auto" else list(made_from[0])
            self._state_key = (made_from, self._generate_state_key(layers=layers, k=self.k))
        return self._state_key[1]

    def tag(self, kind: str, layer: str, *rest: str) -> str:
        """The logged tag, e.g. ``featviz/knn_purity@10/avgpool``; images have no ``@k``: ``featviz/tsne_2d/x``."""
        return tag(kind, layer, *rest, k=self.k)

    # ----------------------------------------------------------------------------- the parts, from the options

    def _capture_settings(self) -> CaptureSettings:
        """What each rank's capture reads: the ``capture`` group as given, and whether any output shows images."""
        shows_images = (  # grids, the gallery, the projector's sprite
            self.outputs.neighbour_grids
            or self.wrong_cluster is not None
            or bool(self.projector is not None and self.maps.every_n_epochs)
        )
        return CaptureSettings(
            self.capture,
            self.k,
            self.max_samples,
            self.seed,
            self.resources.memory_budget_mb,
            self.strict,
            shows_images,
        )

    def _epoch_analysis(self) -> EpochAnalysis:
        """Rank 0's analysis of each epoch: it reads the groups it needs."""
        return EpochAnalysis(
            self.k, self.max_samples, self.seed, self.class_names, self.capture, self.maps, self.wrong_cluster,
            self.resources, self.outputs.monitor_class_purity, self._guard.warn_once,
        )  # fmt: skip

    def _output_plan(self) -> OutputPlan:
        """Which outputs each epoch makes: the cadence of each, tuned by the time budget where one is set."""
        figures = self.outputs.neighbour_grids or self.wrong_cluster is not None or self.outputs.confusion
        figures_every = self.outputs.every_n_epochs if figures else None
        return OutputPlan(
            self.overhead, self.every_n_epochs, figures_every, self.maps.every_n_epochs, self.maps.dims,
            self.projector is not None,
        )  # fmt: skip

    def _report_settings(self) -> ReportSettings:
        """What each epoch's report reads."""
        wrong_cluster, gallery = self.wrong_cluster or WrongClusterOptions(), self.wrong_cluster is not None
        return ReportSettings(
            self.k, self.seed, self.dashboard, self.outputs, self.maps, wrong_cluster, gallery, self.projector
        )

    # ----------------------------------------------------------------------------- lifecycle

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        groups = {"capture": self.capture, "outputs": self.outputs}
        check_arguments(
            self.layers, self.k, self.max_samples, self.every_n_epochs, self.overhead, self.dashboard, groups
        )
        # Every part is made from the options here, at the same moment (an attribute changed since applies to all).
        self._run.options = self._capture_settings()
        self._analysis, self._plan = self._epoch_analysis(), self._output_plan()
        self._trackers.on_written = self._plan.record_trackers
        self._run.forget_layers()
        self._audit.start_fit(self.capture.batch_extractor)
        if self.layers != "auto":  # "auto": chosen at the first validation epoch, on one of its batches
            self._use_layers(pl_module, resolve_layers(pl_module, self.layers))
            self._pooling_probed = False
        # trainer.log_dir broadcasts from rank 0: ask once here, where every rank runs, never in a
        # branch that one rank could skip (that would hang the others). It is None where the first logger keeps
        # nothing on disk (MLflow on a database or server): the files then go under the Trainer's root dir.
        self._log_dir = trainer.log_dir or trainer.default_root_dir
        on_accelerator = trainer.strategy.root_device.type != "cpu"
        background = self.resources.background if self.resources.background is not None else on_accelerator
        self._on_cpu = not on_accelerator
        reporter = Reporter(self._report_settings(), self._map_tracker, self._log_dir)
        self._reports.start(reporter, self._log_dir, background)
        self._phase = Phase.OFF if self._phase is Phase.OFF else Phase.WAITING
        if stage == TrainerFn.VALIDATING and trainer.world_size > 1 and allows_empty_ranks(trainer, pl_module):
            # A rank without a batch runs no validation hook, so it could not join the gather, and
            # `validate` has no hook before its loop where the ranks could compare batch counts.
            self._switch_off(
                "`allow_zero_length_dataloader_with_multiple_devices` is set, so a rank may see no validation "
                "batch and could not take part in gathering the bank"
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._plan.start(trainer.current_epoch)
        self._unfinished, self._last_block = None, None
        every, epochs = getattr(trainer, "check_val_every_n_epoch", 1), trainer.max_epochs
        if isinstance(every, int) and isinstance(epochs, int) and 0 <= epochs - trainer.current_epoch < every:
            self._guard.warn_once(
                "never",
                f"FeatureVisualizer analyses validation epochs, but this fit runs {epochs} epochs and validates every "
                f"{every} (`check_val_every_n_epoch`): no validation runs, nothing will be analysed. Hint: lower "
                "`check_val_every_n_epoch` or run `trainer.validate` after fit.",
            )
        # Every rank runs this after the validation loaders are set up: the place to find out whether
        # some rank will see no validation batch (it then runs no validation hook, and could not gather).
        counts, idx = trainer.num_val_batches, self.capture.dataloader_idx
        empty = ranks_without_batches(counts[idx] if idx < len(counts) else 0)
        if empty:
            self._switch_off(f"ranks {empty} see no batch of validation dataloader {idx}")

    def _audits_training(self) -> bool:
        return self.wrong_cluster is not None and self.wrong_cluster.training_margins and self._phase is not Phase.OFF

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._audits_training():
            self._guard.call(self._audit.start_epoch, trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._audits_training():
            self._guard.call(self._audit.margins.add_batch, batch, batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._audits_training():  # every rank (a gather)
            self._guard.call(self._audit.end_epoch, trainer)

    def _switch_off(self, reason: str) -> None:
        self._phase = Phase.OFF if self._phase is Phase.OFF else Phase.OFF_THIS_RUN
        self._guard.warn_once(
            "empty-rank",
            f"FeatureVisualizer is off for this run: {reason}. Hint: give every rank at least one validation "
            "batch (Lightning's DistributedSampler does), or run the analysis on one process "
            "(`featviz analyse`).",
        )

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._guard.warn_once("validation-only", _VALIDATION_ONLY.format(loop="test"))

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._guard.warn_once("validation-only", _VALIDATION_ONLY.format(loop="predict"))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._run.detach()
        self._audit.detach()
        self._guard.call(self._reports.drain)
        self._reports.close(wait=True)
        self._trackers.drain()  # before Lightning finalizes the loggers

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._run.detach()
        self._audit.detach()
        self._reports.close(wait=False)  # training failed: drop reports not started, stop the thread
        self._trackers.stop()

    def state_dict(self) -> dict[str, Any]:
        # "reported": the epochs whose reports were written (or failed with a warning) when the checkpoint was
        # saved; a background report may still be queued then, and lost if the process is killed.
        reported = sorted(self._reported_epochs)
        maps, dynamics, training = self._map_tracker.state_dict(), self._dynamics.state_dict(), self._audit.state_dict()
        return {
            "history": list(self.history), "maps": maps, "reported": reported, "dynamics": dynamics,
            "training_margins": training,
        }  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self._map_tracker.load_state_dict(state_dict.get("maps", {}))
        self._dynamics.load_state_dict(state_dict.get("dynamics", {}))
        self._audit.load_state_dict(state_dict.get("training_margins", {}))
        if "reported" in state_dict:  # (older checkpoints do not say)
            self._reported_epochs = {int(epoch) for epoch in state_dict["reported"]}
            missing = sorted({int(row["epoch"]) for row in self.history} - self._reported_epochs)
            if missing:
                self._guard.warn_once("unreported", _UNREPORTED.format(epochs=missing))

    # ----------------------------------------------------------------------------- capture

    def _use_layers(
        self,
        pl_module: pl.LightningModule,
        paths: dict[str, str],
        identified: Sequence[Any] = (),
        activations: Mapping[str, str] | None = None,
    ) -> None:
        """Capture ``paths`` (module path -> display name) from now on, with the probe's ``identified`` token
        poolings and head ``activations`` (``{path: name}``); check the options that name layers."""
        displays, chosen = list(paths.values()), self.wrong_cluster.layer if self.wrong_cluster else None
        if chosen is not None and chosen not in displays:
            raise ValueError(
                f"Expected `wrong_cluster.layer` to be one of the captured layers {displays}, but got {chosen!r}."
            )
        reduction = resolve_reductions(pl_module, paths, self.capture.reduction)
        self._run.use(pl_module, paths, reduction, identified, activations or {})

    def _identify_pooling(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Named layers of a token model that no library describes: the probe of ``layers="auto"`` finds, once, the
        pooling of its last token layer that reproduces what its head reads, and the named layers use it."""
        self._pooling_probed = True
        if not _has_tokens(pl_module) or any(model.pooling is not None for model in known_models(pl_module)):
            return  # no attention or class token; or timm / HF transformers: their own settings say how they pool
        capture = self.capture
        reduction = capture.reduction if isinstance(capture.reduction, str) else "avg"
        try:
            _, identified, _ = probe_default_layers(
                trainer, pl_module, capture.dataloader_idx, capture.batch_extractor, self.seed, reduction,
                capture.pool_size,
            )  # fmt: skip
        except ValueError as error:
            self._guard.warn_once(
                "pooling-probe",
                "FeatureVisualizer could not find how the model pools its tokens for its head "
                f"({error.__cause__ or error}); token layers are reduced to their class token where the model has "
                "one, else to their mean. Hint: pass `capture=CaptureOptions(reduction={layer: ...})` to be sure.",
            )
            return
        if identified:
            self._use_layers(pl_module, self._run.paths, identified)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        capture = self.capture
        if self.layers == "auto" and self._run.hooks is None and self._phase is not Phase.OFF:
            # Each rank chooses for itself, with no collective: the same weights and input give the same choice.
            reduction = capture.reduction if isinstance(capture.reduction, str) else "avg"
            found, identified, activations = probe_default_layers(
                trainer, pl_module, capture.dataloader_idx, capture.batch_extractor, self.seed, reduction,
                capture.pool_size,
            )  # fmt: skip
            self._use_layers(pl_module, found, identified, activations)
            rank_zero_info(f"FeatureVisualizer layers: {list(self._run.paths.values())} (`layers='auto'`).")
        elif self.layers != "auto" and self._run.hooks is not None and not self._pooling_probed:
            self._identify_pooling(trainer, pl_module)
        if self._phase is Phase.CAPTURING:
            self._phase = Phase.WAITING  # the last epoch was not ended (an exception)
        fitting, epoch = trainer.state.fn == TrainerFn.FITTING, trainer.current_epoch
        # every n epochs of the validation runs there are (with `check_val_every_n_epoch`, validation may skip the
        # multiples of n: then the first validation of each block of n epochs is analysed)
        cadence = epoch % self.every_n_epochs == 0 or epoch // self.every_n_epochs != self._last_block
        due = not trainer.sanity_checking and (not fitting or cadence)
        smoke_test = getattr(trainer, "fast_dev_run", False)  # nothing to analyse
        if not due or smoke_test or self._phase is not Phase.WAITING or self._run.hooks is None:
            return
        loader = validation_loader(trainer, capture.dataloader_idx)
        size = len(loader.dataset) if loader is not None and hasattr(loader.dataset, "__len__") else None
        if loader is None or size is None:
            self._guard.warn_once("loader", "FeatureVisualizer found no sized validation dataset; nothing is analysed.")
            return
        queries = queries_within(self.outputs.query_indices, size, self._guard.warn_once)
        self._val_dataset, self._last_block = loader.dataset, epoch // self.every_n_epochs if fitting else None
        self._run.start_epoch(pl_module, loader.dataset, size, queries, sampler_batches(loader))
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
        started, hooked = time.perf_counter(), self._run.hooks.take_seconds()  # this batch's forward hooks
        kept = self._guard.call(self._run.add_batch, pl_module, outputs, batch, batch_idx)
        # the capture counts too: the forward hooks' time and this hook's
        self._plan.spend(hooked + time.perf_counter() - started, trainer.state.fn == TrainerFn.FITTING)
        if not kept:
            self._run.bank = None  # not analysed this epoch (every rank still gathers, DDP)
            self._run.detach()

    # ----------------------------------------------------------------------------- epoch end

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._phase is not Phase.CAPTURING:
            return
        started = time.perf_counter()
        try:
            self._end_epoch(trainer, pl_module)
        finally:  # what fit waited for: gather, kNN, a report in the loop (or waiting to queue one)
            self._plan.spend(time.perf_counter() - started, trainer.state.fn == TrainerFn.FITTING)

    def _end_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._phase = Phase.OFF if self._run.over_budget else Phase.WAITING
        self._run.detach()
        # Every rank gathers (a collective); rank 0 analyses and tells the others what to log.
        columns = gather_columns(self._run.take_columns())
        results, metrics = on_rank_zero(trainer.is_global_zero, lambda: self._rank_zero(trainer, pl_module, columns))
        direct, step = self._analysis.log(pl_module, metrics), logged_step(trainer)
        self.history += self._analysis.history_rows(
            metrics, list(self._run.paths.values()), trainer.current_epoch, step
        )
        if results is not None:
            self._submit(trainer, results, step, direct, metrics)

    def _rank_zero(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, columns: Any
    ) -> tuple[EpochResults | None, dict[str, float]]:
        """Rank 0: the gathered bank, this epoch's outputs under the budget (logged in one line), the analysis."""
        bank = bank_from_columns(columns or {}, self._run.choice)
        if bank is None:
            if not {"indices", "targets"} & self._guard.warned:
                message = "FeatureVisualizer captured no validation sample this epoch; nothing is analysed."
                self._guard.warn_once("empty", message)
            return None, {}
        widths = [int(vectors.shape[1]) for vectors in bank.vectors.values()]
        fitting, mapped = trainer.state.fn == TrainerFn.FITTING, min(len(bank), self.maps.samples)
        line = self._plan.plan(
            fitting, trainer.current_epoch, trainer.max_epochs, trainer.max_steps, len(bank), mapped, widths
        )
        if line is not None:
            rank_zero_info(f"FeatureVisualizer schedule: {line}")
        return self._guard.call(self._analyse, trainer, pl_module, bank) or (None, {})

    def _analyse(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, bank: BankData
    ) -> tuple[EpochResults | None, dict[str, float]]:
        """Rank 0: kNN per layer; the results, and the scalars every rank logs."""
        maps_due = self._plan.maps_due(trainer.state.fn == TrainerFn.FITTING, trainer.current_epoch)
        layers, clusters = list(self._run.paths.values()), self.wrong_cluster
        # the history of the label-issue layer wants its label-issue neighbours every analysed epoch
        done = self._analysis.run(
            trainer, pl_module, bank, self._run, layers, self._val_dataset, maps_due,
            self._plan.figures_due or clusters is not None,
        )  # fmt: skip
        results = done[0]
        if results is not None:
            self._plan.record_knn(self._analysis.knn_seconds)
            if clusters is not None and results.stats:  # the label-issue layer: the last (never a twin) unless named
                layer = clusters.layer or list(results.stats)[-1]
                # (a failure here costs the history's epoch, never the epoch's kNN scalars)
                results.dynamics = self._guard.call(self._dynamics.update, results, layer, self._guard.warn_once)
        return done

    def _submit(
        self, trainer: pl.Trainer, results: EpochResults, step: int, direct: dict[str, float], metrics: dict[str, float]
    ) -> None:
        """Rank 0: hand the epoch's report to the scheduler (the heavy part runs there)."""
        wanted = (self.wrong_cluster is not None or self.dashboard) and self._val_dataset is not None
        paths = sample_paths(self._val_dataset, results.bank.indices.tolist()) if wanted else None
        root = Path(self._log_dir or trainer.default_root_dir) / "featviz"  # without TensorBoard
        about = run_identity(trainer, self._val_dataset, results)
        sinks = sinks_for(trainer.loggers, root, self.outputs.report_dir, self._guard.warn_once, about, self._trackers)
        self._sinks, self._sinks_step = sinks, step
        folders = [sink.projector_dir for sink in sinks if sink.projector_dir is not None]
        fitting = trainer.state.fn == TrainerFn.FITTING
        maps_due = self._plan.maps_due(fitting, trainer.current_epoch)
        job = EpochJob(results, step, maps_due, list(self.history), paths, folders, self._plan.outputs)
        schedule = [(SCHEDULE_TAG, self._plan.table())] if fitting else []  # which outputs ran at which epoch, why
        destination = Destination(sinks, direct, metrics, schedule)
        self._unfinished = unfinished(job, destination, self._plan.lacking(results.epoch))
        self._guard.call(self._reports.submit, job, destination)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # validate: every report is written when it returns
            self._guard.call(self._reports.drain)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._unfinished is not None:  # fit ended before the planned last epoch: what that one lacked
            job, destination = self._unfinished
            self._unfinished = None
            made = ", ".join(sorted(job.outputs or []))
            rank_zero_info(f"FeatureVisualizer schedule: fit ended; epoch {job.results.epoch} also makes {made}.")
            self._guard.call(self._reports.submit, job, destination)
        self._guard.call(self._reports.drain)  # nothing trains meanwhile: reports not yet started use every core
        self._guard.call(self._log_tab_page)
        if self._audits_training():
            self._guard.call(self._audit.write, trainer, self._log_dir, self.class_names)

    def _log_tab_page(self) -> None:
        """Rank 0, once a fit's reports are written: the FEATVIZ tab as one page, for the trackers that show HTML, at
        the step of the last report."""
        trackers = [sink for sink in self._sinks if isinstance(sink, TrackerSink)]
        log_dir = self._log_dir
        if not (trackers and self.dashboard and log_dir and (Path(log_dir) / FOLDER / "index.json").is_file()):
            return
        from lightning_featviz.dashboard.standalone import standalone_page  # werkzeug and TensorBoard's plugin base

        page = standalone_page(log_dir)
        for sink in trackers:
            sink.log_tab_page(page, self._sinks_step)

    def _reported(self, job: EpochJob, report: Report, seconds: float) -> None:
        """A written report (``seconds``: its time to render); its render times go to the budget."""
        self.wrong_cluster_indices = report.flagged
        self._reported_epochs.add(job.results.epoch)
        # A background report on the CPU takes the cores training would use: its time adds to fit.
        took_training_cores = self._reports.background and self._on_cpu
        self._plan.record_report(job.results.epoch, report.seconds, seconds, took_training_cores)


def run_identity(trainer: pl.Trainer, dataset: Any, results: EpochResults) -> dict[str, object]:
    """What the static report names the run by: model and data classes, samples and classes analysed, date, version."""
    data = getattr(trainer, "datamodule", None) or dataset
    return {
        "model": type(trainer.lightning_module).__name__,
        "data": type(data).__name__,
        "samples": len(results.bank),
        "classes": len(results.class_names),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
    }


_VALIDATION_ONLY = (
    "FeatureVisualizer analyses validation loops only (`fit`, `validate`); `trainer.{loop}` runs without it. Hint: "
    "to analyse another set, pass it to `trainer.validate(model, dataloaders=...)` or run `featviz analyse`."
)

_UNREPORTED = (
    "FeatureVisualizer: the checkpoint was saved before the reports of epoch(s) {epochs} were written, and the run "
    "that saved it stopped before they were (killed?): their scalars are in `history`, their figures, maps and files "
    "are missing. Hint: `featviz analyse` on that checkpoint remakes its epoch's outputs."
)
