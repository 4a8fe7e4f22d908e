"""Rank 0's report of one analysed epoch: t-SNE maps, pictures, exports and projector files.

No Lightning and no trainer state: everything about the epoch comes in an :class:`EpochJob`, and
:meth:`Reporter.render` turns it into a :class:`Report` (encoded images, texts, scalars), which a
:class:`Destination` writes to the sinks. The two halves can run in different processes: the
render in a background process, the writing in the training process. The reporter decides what an epoch
makes and draws its pictures (with :mod:`~lightning_featviz.report.figures`); the files it writes are
:mod:`~lightning_featviz.report.exports`'s job, what it holds and the tags :mod:`~lightning_featviz.report.settings`'.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import torch

from lightning_featviz.analysis.embedding import MapTracker
from lightning_featviz.analysis.label_issues import Warn
from lightning_featviz.analysis.maps import LayerMaps, fit_maps
from lightning_featviz.analysis.measures import EpochResults
from lightning_featviz.analysis.wrong_cluster import WrongCluster
from lightning_featviz.capture.bank import BankData
from lightning_featviz.dashboard.export import write_dashboard_epoch
from lightning_featviz.outputs.sinks import EncodedImage, Sink, encode_png
from lightning_featviz.outputs.tracker import Table, log_tables_and_files
from lightning_featviz.report.budget import FIGURES, MAPS_2D, MAPS_3D, PROJECTOR
from lightning_featviz.report.exports import export_label_issues, export_projector, export_wrong_cluster
from lightning_featviz.report.figures import (
    class_purity_images,
    confusion_images,
    depth_image,
    gallery_image,
    map_images,
    neighbour_grid_images,
    query_rows,
    wrong_clusters,
)
from lightning_featviz.report.settings import ReportSettings, tag
from lightning_featviz.report.tables import MARKDOWN_ROWS, MAX_TABLE_ROWS, map_point_tables, table_thumbnails

#: The confusion figure is drawn up to this many classes (a C × C matrix beyond is unreadable and huge).
MAX_CONFUSION_CLASSES = 50

#: (kind, layer) -> an (H, W, 3) uint8 picture, as :mod:`~lightning_featviz.report.figures` yields them.
Pictures = Iterable[tuple[tuple[str, str], np.ndarray]]


@dataclass
class EpochJob:
    """What one epoch's report is made from. It holds no open file or writer, so it can be rendered
    in another process.

    Attributes:
        results: the bank and kNN results.
        step: the step to log at.
        with_maps: fit t-SNE maps (and write projector files) this epoch.
        history: the purity history so far (for the layer × epoch heatmap).
        paths: the bank's file paths, where the dataset has them.
        projector_dirs: where projector files go (one folder per sink that keeps them).
        outputs: which of the budgeted outputs (:data:`~lightning_featviz.report.budget.OUTPUTS`) to make;
            None: every one the options switch on (maps when ``with_maps``).
    """

    results: EpochResults
    step: int
    with_maps: bool
    history: list[dict[str, Any]]
    paths: list[str] | None
    projector_dirs: list[str]
    outputs: frozenset[str] | None = None

    def makes(self, output: str) -> bool:
        """Whether this report makes ``output`` (one of :data:`~lightning_featviz.report.budget.OUTPUTS`)."""
        if self.outputs is not None:
            return output in self.outputs
        return self.with_maps or output == FIGURES


@dataclass
class Report:
    """A rendered epoch, ready to write to the sinks (projector and CSV files are written already).

    Attributes:
        metrics: scalars found while rendering (map quality, wrong-cluster shares), by tag.
        images: (tag, PNG) pairs.
        texts: (tag, Markdown) pairs.
        thumbnails: (tag of a text, PNGs of the rows of its table in order) pairs.
        tables: (tag, table) pairs for trackers: each layer's 2-D map as points.
        files: the files the render wrote (CSV exports), for trackers.
        flagged: layer -> dataset indices of the images in the wrong cluster.
        warnings: (key, message) pairs, for the caller to warn once per key.
        seconds: output (:data:`~lightning_featviz.report.budget.OUTPUTS`) -> seconds it took to make.
        error: what stopped the render part way, if anything; what was made before it is here.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    images: list[tuple[str, EncodedImage]] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)
    thumbnails: list[tuple[str, list[EncodedImage]]] = field(default_factory=list)
    tables: list[tuple[str, Table]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    flagged: dict[str, list[int]] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    error: Exception | None = None


@dataclass
class Destination:
    """Where an epoch's report goes: the sinks, and the epoch's kNN scalars that go with it.

    Attributes:
        sinks: where to write.
        direct: scalars for sinks that also receive ``LightningModule.log``'s (the rest of them).
        metrics: every scalar of the epoch, for sinks that receive nothing else.
        texts: (tag, Markdown) pairs of the callback's own, e.g. the fit's schedule so far."""

    sinks: list[Sink]
    direct: dict[str, float]
    metrics: dict[str, float]
    texts: list[tuple[str, str]] = field(default_factory=list)

    def write(self, report: Report, step: int, epoch: int) -> None:
        for sink in self.sinks:
            scalars = self.direct if sink.receives_module_metrics else self.metrics
            sink.log_metrics({**scalars, **report.metrics}, step, epoch)
            for name, text in [*self.texts, *report.texts]:
                sink.log_text(name, text, step)
            for name, thumbnails in report.thumbnails:
                sink.log_thumbnails(name, thumbnails, step)
            for name, image in report.images:
                sink.log_image(name, image, step)
            log_tables_and_files(sink, report.tables, report.files, step)
            sink.finish_epoch()


def unfinished(job: EpochJob, destination: Destination, wanted: Sequence[str]) -> tuple[EpochJob, Destination] | None:
    """What ``job`` would make to have every ``wanted`` output, as a job of its own (the epoch's scalars are
    logged already, so its destination logs none of them); None when it lacks nothing."""
    if job.outputs is None or not (missing := frozenset(wanted) - job.outputs):
        return None
    if PROJECTOR in missing:  # it is written with the maps (made again from the tracker's cache where made)
        missing |= frozenset(wanted) & {MAPS_2D, MAPS_3D}
    return replace(job, outputs=missing), Destination(destination.sinks, {}, {})


def identical_layers(bank: BankData, layers: Sequence[str]) -> dict[str, str]:
    """Layers whose (N, D) vectors equal, element for element, those of a later layer: twin -> that layer."""
    twins: dict[str, str] = {}
    for i, layer in enumerate(layers):
        vectors = bank.vectors[layer]
        later = (other for other in layers[i + 1 :] if bank.vectors[other].shape == vectors.shape)
        if (same := next((other for other in later if torch.equal(bank.vectors[other], vectors)), None)) is not None:
            twins[layer] = same
    return twins


class Reporter:
    """Renders epoch reports; keeps only the t-SNE maps (for warm starts) from one to the next.

    Args:
        options: what to report.
        maps: the map tracker (its state is saved in checkpoints by the callback).
        log_dir: the run's log dir, for the CSV exports.
    """

    def __init__(self, options: ReportSettings, maps: MapTracker, log_dir: str | None):
        self.options, self.maps, self.log_dir = options, maps, log_dir
        self.tag = partial(tag, k=options.k)

    def render(self, job: EpochJob) -> Report:
        """Fit maps, find images in the wrong cluster, draw and encode the figures, and write the
        projector and CSV files. A failure is kept in the report, with what was made before it."""
        report = Report()
        try:
            self._render(job, report)
        except Exception as error:
            report.error = error
        return report

    def _render(self, job: EpochJob, report: Report) -> None:
        options, results = self.options, self._without_twins(job.results, report)
        stats, bank = results.stats, results.bank
        dims = [d for d in options.maps.dims if job.makes(MAPS_2D if d == 2 else MAPS_3D)]
        maps: dict[str, LayerMaps] = {}
        if stats and dims:
            samples, seed = options.maps.samples, options.seed
            maps, seconds = fit_maps(self.maps, bank, stats, dims, options.k, samples, seed, self._warn(report))
            report.seconds |= {MAPS_2D if d == 2 else MAPS_3D: spent for d, spent in seconds.items()}
        started = time.perf_counter()
        flagged = wrong_clusters(results, options.wrong_cluster.min_share) if stats else {}
        report.metrics = self._map_metrics(maps)
        report.metrics |= {self.tag("wrong_cluster_share", layer): len(f) / len(bank) for layer, f in flagged.items()}
        if not stats:
            return
        chosen = options.wrong_cluster.layer or list(stats)[-1]
        if job.makes(FIGURES):
            self._figures(job, results, flagged, chosen, report)
        report.seconds[FIGURES] = time.perf_counter() - started  # figures drawn and encoded
        if maps:
            started = time.perf_counter()
            purity = {layer: layer_stats.mean_purity for layer, layer_stats in stats.items()}
            ringed = {chosen: flagged[chosen].mask(len(bank)).numpy()} if chosen in flagged else {}
            labels = bank.labels.numpy()
            pictures = map_images(maps, labels, results.class_names, purity, options.k, results.epoch, ringed)
            self._add(report, pictures.items())
            report.tables += map_point_tables(maps, bank, results.class_names, flagged, self.tag)
            drawn = time.perf_counter() - started
            report.seconds[MAPS_2D if MAPS_2D in report.seconds else MAPS_3D] += drawn  # the figures of the maps
        report.flagged = {layer: bank.indices[found.rows].tolist() for layer, found in flagged.items()}
        if maps and options.projector is not None and job.projector_dirs and job.makes(PROJECTOR):
            started, warn = time.perf_counter(), self._warn(report)
            export_projector(
                job.projector_dirs, results, maps, flagged, options.k, options.projector.keep_every_n_epochs, warn
            )
            report.seconds[PROJECTOR] = time.perf_counter() - started
        if options.dashboard:  # the FEATVIZ tab's files: every layer, also those drawn as a twin
            write_dashboard_epoch(self.log_dir or ".", job.results, maps, flagged, job.paths, job.step)

    def _figures(
        self, job: EpochJob, results: EpochResults, flagged: dict[str, WrongCluster], chosen: str, report: Report
    ) -> None:
        """The epoch's pictures besides the maps: neighbour grids, the wrong-cluster table, gallery and exports,
        the confusion and purity charts."""
        options, bank, clusters = self.options, results.bank, self.options.wrong_cluster
        shows_images = bank.thumbnails.ndim == 4  # not for sequences, vectors or tokens
        if options.outputs.neighbour_grids and shows_images:
            self._add(report, neighbour_grid_images(results, query_rows(bank, options.outputs.query_indices)))
        if options.gallery and chosen in flagged:
            found = flagged[chosen]
            table = export_wrong_cluster(self.log_dir, results, chosen, found, job.paths, report.files)
            report.texts.append((self.tag("wrong_cluster_table", chosen), table))
            if shows_images:
                report.thumbnails.append((report.texts[-1][0], table_thumbnails(bank, found.rows[:MAX_TABLE_ROWS])))
            issues, top = export_label_issues(
                self.log_dir, results, chosen, job.paths, self._warn(report), report.files
            )
            report.texts.append((self.tag("label_issues", chosen), top))
            if shows_images:  # the static report shows each row's image
                report.thumbnails.append((report.texts[-1][0], table_thumbnails(bank, issues.order()[:MARKDOWN_ROWS])))
            if len(found) and shows_images:
                gallery = gallery_image(results, chosen, found, clusters.min_share, clusters.max_gallery, issues)
                self._add(report, [(("wrong_cluster", chosen), gallery)])
        if options.outputs.confusion:
            if len(results.class_names) <= MAX_CONFUSION_CLASSES:
                self._add(report, confusion_images(results).items())
            else:
                message = (
                    f"{len(results.class_names)} classes: no neighbourhood confusion figure (drawn up to "
                    f"{MAX_CONFUSION_CLASSES} classes); the purity_by_class figure shows the lowest and highest."
                )
                report.warnings.append(("confusion-classes", message))
            self._add(report, class_purity_images(results).items())
            self._add(report, [(("purity_by_depth", "all_layers"), depth_image(results, job.history))])

    def _add(self, report: Report, pictures: Pictures) -> None:
        """Encode each picture as soon as it is drawn: one picture's pixels alive at a time."""
        report.images.extend((self.tag(kind, name), encode_png(image)) for (kind, name), image in pictures)

    @staticmethod
    def _warn(report: Report) -> Warn:
        """A ``warn(key, message)`` that keeps the warning in ``report``, for the caller to warn once per key."""
        return lambda key, message: report.warnings.append((key, message))

    def _map_metrics(self, maps: dict[str, LayerMaps]) -> dict[str, float]:
        """Each layer's map quality by tag: trustworthiness (and a sampled estimate's standard error, above
        4,000 mapped points), the purity in the map and how far it moved since the last epoch."""
        metrics = {
            self.tag(measure, layer, f"{d}d"): values[d]
            for layer, layer_maps in maps.items()
            for measure, values in (
                ("tsne_trustworthiness", layer_maps.trust),
                ("tsne_purity", layer_maps.purity),
                ("tsne_displacement", layer_maps.displacement),
            )
            for d in values
        }
        return metrics | {
            self.tag("tsne_trustworthiness_error", layer, f"{d}d"): error
            for layer, layer_maps in maps.items()
            for d, error in layer_maps.trust_error.items()
            if error > 0
        }

    def _without_twins(self, results: EpochResults, report: Report) -> EpochResults:
        """``results`` without the layers whose vectors equal a later layer's (drawn once, as the later one)."""
        twins = identical_layers(results.bank, list(results.stats))
        for twin, kept in twins.items():
            message = (
                f"Layers {twin!r} and {kept!r} give identical vectors (a ResNet's layer4 and avgpool do on small "
                f"images); figures and projector entries show {kept!r} only, the scalars are logged for both."
            )
            report.warnings.append((f"identical/{twin}", message))
        stats = {layer: found for layer, found in results.stats.items() if layer not in twins}
        return replace(results, stats=stats) if twins else results
