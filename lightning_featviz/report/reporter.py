"""Rank 0's report of one analysed epoch: the analysis completed, then pictures, tables and the run's files.

No Lightning and no trainer state: everything about the epoch comes in an :class:`EpochJob`, and
:meth:`Reporter.render` has :func:`~lightning_featviz.analysis.epoch.analyse_epoch` complete its results (maps,
wrong cluster, label issues), then turns them into a :class:`Report` (encoded images, texts, scalars), which a
:class:`Destination` writes to the sinks. The two halves can run in different processes: the render in a background
process, the writing in the training process. The reporter decides what an epoch makes and draws its pictures (with
:mod:`~lightning_featviz.report.figures`); it opens no file: the CSV tables (:mod:`~lightning_featviz.report.exports`),
projector entries and the FEATVIZ tab's files go to the run's folder, an ``outputs`` sink written where the render
runs. What it holds and the tags are :mod:`~lightning_featviz.report.settings`'.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np

from lightning_featviz.analysis.embedding import MapTracker
from lightning_featviz.analysis.epoch import OutputAnalysis, analyse_epoch, chosen_layer
from lightning_featviz.analysis.results import EpochResults
from lightning_featviz.capture.warn import Warn
from lightning_featviz.dashboard.export import dashboard_epoch
from lightning_featviz.outputs.run_folder import RunFolder
from lightning_featviz.outputs.sinks import EncodedImage, FolderSink, Sink, encode_png
from lightning_featviz.outputs.tracker import Table, log_tables_and_files
from lightning_featviz.report.budget import FIGURES, MAPS_2D, MAPS_3D, PROJECTOR
from lightning_featviz.report.exports import export_label_issues, export_wrong_cluster
from lightning_featviz.report.figures import (
    class_purity_images,
    confusion_images,
    depth_image,
    dynamics_image,
    gallery_image,
    map_images,
    neighbour_grid_images,
    query_rows,
)
from lightning_featviz.report.projector_entries import LATEST, epoch_projector_entries
from lightning_featviz.report.settings import ReportSettings, tag
from lightning_featviz.report.tables import (
    MARKDOWN_ROWS,
    MAX_TABLE_ROWS,
    knn_lists,
    map_point_tables,
    map_scalars,
    table_thumbnails,
)

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


class Reporter:
    """Renders epoch reports; keeps only the t-SNE maps (for warm starts) from one to the next.

    Args:
        options: what to report.
        maps: the map tracker (its state is saved in checkpoints by the callback).
        log_dir: the run's log dir, where the run's folder (:class:`~lightning_featviz.outputs.run_folder.RunFolder`)
            keeps the CSV tables and the FEATVIZ tab's files; None: none are written.
    """

    def __init__(self, options: ReportSettings, maps: MapTracker, log_dir: str | None):
        self.options, self.maps, self.log_dir = options, maps, log_dir
        self.folder: FolderSink | None = RunFolder(log_dir) if log_dir is not None else None
        self.tag = partial(tag, k=options.k)

    def render(self, job: EpochJob) -> Report:
        """Complete the epoch's analysis (maps, wrong cluster, label issues), draw and encode the figures, and
        hand the run's folder its files (CSV tables, projector entries, the FEATVIZ tab's files). A failure is kept
        in the report, with what was made before it."""
        report = Report()
        try:
            self._render(job, report)
        except Exception as error:
            report.error = error
        return report

    def _render(self, job: EpochJob, report: Report) -> None:
        options = self.options
        dims = [d for d in options.maps.dims if job.makes(MAPS_2D if d == 2 else MAPS_3D)]
        labelled = options.gallery and job.makes(FIGURES)
        few = len(job.results.class_names) <= MAX_CONFUSION_CLASSES
        confusion = options.outputs.confusion and job.makes(FIGURES) and few
        clusters = options.wrong_cluster
        wanted = OutputAnalysis(
            dims, options.maps.samples, options.seed, clusters.min_share, labelled, clusters.layer, confusion
        )
        results = analyse_epoch(job.results, self.maps, wanted, self._warn(report))
        spent = results.seconds
        report.seconds |= {MAPS_2D if d == 2 else MAPS_3D: spent[f"maps_{d}d"] for d in dims if f"maps_{d}d" in spent}
        shown, maps, flagged = results.shown(), results.maps, results.wrong_cluster
        stats, bank = shown.stats, shown.bank
        report.metrics = map_scalars(maps, self.tag)
        report.metrics |= {self.tag("wrong_cluster_share", layer): len(f) / len(bank) for layer, f in flagged.items()}
        if not stats:
            return
        chosen = chosen_layer(results, options.wrong_cluster.layer) or list(stats)[-1]
        started = time.perf_counter()
        if job.makes(FIGURES):
            self._figures(job, shown, chosen, report)
        analysed = sum(spent.get(part, 0.0) for part in ("wrong_cluster", "label_issues", "confusion"))
        report.seconds[FIGURES] = analysed + time.perf_counter() - started  # found, drawn and encoded
        if maps:
            started = time.perf_counter()
            purity = {layer: layer_stats.mean_purity for layer, layer_stats in stats.items()}
            ringed = {chosen: flagged[chosen].mask(len(bank)).numpy()} if chosen in flagged else {}
            labels = bank.labels.numpy()
            pictures = map_images(maps, labels, shown.class_names, purity, options.k, shown.epoch, ringed)
            self._add(report, pictures.items())
            report.tables += map_point_tables(maps, bank, shown.class_names, flagged, self.tag)
            drawn = time.perf_counter() - started
            report.seconds[MAPS_2D if MAPS_2D in report.seconds else MAPS_3D] += drawn  # the figures of the maps
        report.flagged = {layer: bank.indices[found.rows].tolist() for layer, found in flagged.items()}
        if self.folder is None:
            report.warnings.append(("no-log-dir", "FeatureVisualizer has no log dir: no CSV, projector or tab files."))
            return
        if maps and options.projector is not None and job.projector_dirs and job.makes(PROJECTOR):
            started = time.perf_counter()
            entries = epoch_projector_entries(shown, options.projector.keep_every_n_epochs, self._warn(report))
            self.folder.log_projector(job.projector_dirs, entries, f"{LATEST}/")
            report.seconds[PROJECTOR] = time.perf_counter() - started
        if options.dashboard:  # the FEATVIZ tab's files: every layer, also those drawn as a twin
            self.folder.log_folder_files(dashboard_epoch(results, job.paths, job.step), job.step)

    def _figures(self, job: EpochJob, results: EpochResults, chosen: str, report: Report) -> None:
        """The epoch's pictures besides the maps: neighbour grids, the wrong-cluster table, gallery and exports,
        the confusion and purity charts."""
        options, bank, flagged = self.options, results.bank, results.wrong_cluster
        shows_images = bank.thumbnails.ndim == 4  # not for sequences, vectors or tokens
        if options.outputs.neighbour_grids and shows_images:  # the grids, and their lists as tables for the trackers
            report.tables += knn_lists(results, queries := query_rows(bank, options.outputs.query_indices), self.tag)
            self._add(report, neighbour_grid_images(results, queries))
        if options.gallery and chosen in flagged:
            found, issues = flagged[chosen], results.label_issues
            table, written = export_wrong_cluster(self.folder, results, chosen, found, job.paths, job.step)
            report.files += written
            report.texts.append((self.tag("wrong_cluster_table", chosen), table))
            if shows_images:
                report.thumbnails.append((report.texts[-1][0], table_thumbnails(bank, found.rows[:MAX_TABLE_ROWS])))
            if issues is not None:
                top, paths = export_label_issues(self.folder, results, issues, job.paths, job.step)
                report.files += paths
                report.texts.append((self.tag("label_issues", chosen), top))
                if shows_images:  # the static report shows each row's image
                    rows = issues.validation.order()[:MARKDOWN_ROWS]
                    report.thumbnails.append((report.texts[-1][0], table_thumbnails(bank, rows)))
            if len(found) and shows_images:
                validation = issues.validation if issues is not None else None
                clusters = options.wrong_cluster
                gallery = gallery_image(results, chosen, found, clusters.min_share, clusters.max_gallery, validation)
                self._add(report, [(("wrong_cluster", chosen), gallery)])
        if results.dynamics is not None and (cartography := dynamics_image(results)) is not None:
            self._add(report, [(("wrong_cluster_cartography", results.dynamics.layer), cartography)])
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
