"""Rank 0's report of one analysed epoch: t-SNE maps, figures, exports and projector files.

No Lightning and no trainer state: everything about the epoch comes in an :class:`EpochJob`, and
:meth:`Reporter.render` turns it into a :class:`Report` (encoded images, texts, scalars), which a
:class:`Destination` writes to the sinks. The two halves can run in different processes: the
render in a background process, the writing in the training process.

Over 300 lines: one :class:`Reporter` renders every output kind of an epoch; splitting it per output kind
is still to do.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_featviz.analysis.embedding import MapTracker
from lightning_featviz.analysis.heap import release_free_heap
from lightning_featviz.analysis.knn import NeighbourStats
from lightning_featviz.analysis.label_issues import LabelIssues, label_issue_rows
from lightning_featviz.analysis.maps import LayerMaps, fit_layer_maps, merged
from lightning_featviz.analysis.measures import EpochResults
from lightning_featviz.analysis.neighbourhoods import map_rows
from lightning_featviz.analysis.wrong_cluster import WrongCluster, wrong_cluster_table
from lightning_featviz.capture.bank import BankData
from lightning_featviz.dashboard.export import write_dashboard_epoch
from lightning_featviz.outputs.projector import MAX_COLOURED_CLASSES, write_projector
from lightning_featviz.outputs.sinks import EncodedImage, Sink, encode_png, file_name
from lightning_featviz.report.budget import FIGURES, MAPS_2D, MAPS_3D, PROJECTOR
from lightning_featviz.report.figures import (
    class_purity_images,
    confusion_images,
    depth_image,
    gallery_image,
    label_issues_of,
    map_images,
    neighbour_grid_images,
    query_rows,
    wrong_clusters,
)
from lightning_featviz.report.projector_entries import LATEST, class_column, projector_entries
from lightning_featviz.report.tables import (
    MARKDOWN_ROWS,
    MAX_TABLE_ROWS,
    label_issue_markdown,
    markdown_table,
    write_label_issue_csv,
    write_wrong_cluster_csv,
)


@dataclass
class ReportOptions:
    """What a report holds: the callback's arguments of the same names (read from it by name)."""

    k: int
    query_indices: list[int] | None
    log_neighbour_grids: bool
    log_wrong_cluster: bool
    wrong_cluster_layer: str | None
    min_share: float
    max_gallery: int
    log_confusion: bool
    tsne_dims: list[int]
    log_projector: bool
    projector_every_n_epochs: int
    dashboard: bool = True
    map_samples: int = 2000
    seed: int = 0


#: The confusion figure is drawn up to this many classes (a C × C matrix beyond is unreadable and huge).
MAX_CONFUSION_CLASSES = 50

#: Tags of these kinds have no ``@k``: images, and a measure that does not depend on k.
UNRANKED_KINDS = (
    "neighbours",
    "tsne_2d",
    "tsne_3d",
    "tsne_displacement",
    "wrong_cluster",
    "wrong_cluster_table",
    "label_issues",
    "neighbour_confusion",
    "purity_by_depth",
    "purity_by_class",
)


def tag(kind: str, layer: str, *rest: str, k: int) -> str:
    """The logged tag, e.g. ``featviz/knn_purity@10/avgpool``; images have no ``@k``: ``featviz/tsne_2d/x``."""
    head = f"featviz/{kind}" if kind in UNRANKED_KINDS else f"featviz/{kind}@{k}"
    return "/".join([head, layer, *rest])


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
        flagged: layer -> dataset indices of the images in the wrong cluster.
        warnings: (key, message) pairs, for the caller to warn once per key.
        seconds: output (:data:`~lightning_featviz.report.budget.OUTPUTS`) -> seconds it took to make.
        error: what stopped the render part way, if anything; what was made before it is here.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    images: list[tuple[str, EncodedImage]] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)
    thumbnails: list[tuple[str, list[EncodedImage]]] = field(default_factory=list)
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
    """

    sinks: list[Sink]
    direct: dict[str, float]
    metrics: dict[str, float]

    def write(self, report: Report, step: int, epoch: int) -> None:
        for sink in self.sinks:
            scalars = self.direct if sink.receives_module_metrics else self.metrics
            sink.log_metrics({**scalars, **report.metrics}, step, epoch)
            for name, text in report.texts:
                sink.log_text(name, text, step)
            for name, thumbnails in report.thumbnails:
                sink.log_thumbnails(name, thumbnails, step)
            for name, image in report.images:
                sink.log_image(name, image, step)
            sink.finish_epoch()


def unfinished(job: EpochJob, destination: Destination, wanted: Sequence[str]) -> tuple[EpochJob, Destination] | None:
    """What ``job`` would make to have every ``wanted`` output, as a job of its own (the epoch's scalars are
    logged already, so its destination logs none of them); None when it lacks nothing."""
    if job.outputs is None or not (missing := frozenset(wanted) - job.outputs):
        return None
    if PROJECTOR in missing:  # it is written with the maps (made again from the tracker's cache where made)
        missing |= frozenset(wanted) & {MAPS_2D, MAPS_3D}
    return replace(job, outputs=missing), Destination(destination.sinks, {}, {})


def table_thumbnails(bank: BankData, found: WrongCluster, max_rows: int = MAX_TABLE_ROWS) -> list[EncodedImage]:
    """The thumbnails of the first ``max_rows`` flagged samples, in the order of their table's rows."""
    rows = found.rows[:max_rows]
    return [encode_png(image) for image in bank.thumbnails[rows].permute(0, 2, 3, 1).numpy()]


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

    def __init__(self, options: ReportOptions, maps: MapTracker, log_dir: str | None):
        self.options, self.maps, self.log_dir = options, maps, log_dir

    def tag(self, kind: str, layer: str, *rest: str) -> str:
        return tag(kind, layer, *rest, k=self.options.k)

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
        epoch, stats = results.epoch, results.stats
        dims = [d for d in options.tsne_dims if job.makes(MAPS_2D if d == 2 else MAPS_3D)]
        maps = self._fit_maps(results.bank, stats, dims, report) if stats and dims else {}
        started = time.perf_counter()
        flagged = wrong_clusters(results, options.min_share) if stats else {}
        report.metrics = {
            self.tag(measure, layer, f"{d}d"): values[d]
            for layer, layer_maps in maps.items()
            for measure, values in (
                ("tsne_trustworthiness", layer_maps.trust),
                ("tsne_purity", layer_maps.purity),
                ("tsne_displacement", layer_maps.displacement),
            )
            for d in values
        }
        report.metrics |= {  # a sampled estimate's standard error (above 4,000 mapped points)
            self.tag("tsne_trustworthiness_error", layer, f"{d}d"): error
            for layer, layer_maps in maps.items()
            for d, error in layer_maps.trust_error.items()
            if error > 0
        }
        report.metrics |= {
            self.tag("wrong_cluster_share", layer): len(f) / len(results.bank) for layer, f in flagged.items()
        }
        if not stats:
            return
        chosen = options.wrong_cluster_layer or list(stats)[-1]

        def add(images: Iterable[tuple[tuple[str, str], np.ndarray]]) -> None:
            """Encode each (H, W, 3) figure as soon as it is drawn: one figure's pixels alive at a time."""
            report.images.extend((self.tag(kind, name), encode_png(image)) for (kind, name), image in images)

        shows_images = results.bank.thumbnails.ndim == 4  # not for sequences, vectors or tokens
        figures = job.makes(FIGURES)
        if options.log_neighbour_grids and shows_images and figures:
            add(neighbour_grid_images(results, query_rows(results.bank, options.query_indices)))
        if options.log_wrong_cluster and chosen in flagged and figures:
            report.texts.append(self._export_wrong_cluster(results, chosen, flagged[chosen], job.paths))
            if shows_images:
                report.thumbnails.append((report.texts[-1][0], table_thumbnails(results.bank, flagged[chosen])))
            issues = self._export_label_issues(results, chosen, job.paths, report)
            if len(flagged[chosen]) and shows_images:
                found, gallery_rows = flagged[chosen], options.max_gallery
                gallery = gallery_image(results, chosen, found, options.min_share, gallery_rows, issues)
                add([(("wrong_cluster", chosen), gallery)])
        if options.log_confusion and figures:
            if len(results.class_names) <= MAX_CONFUSION_CLASSES:
                add(confusion_images(results).items())
            else:
                message = (
                    f"{len(results.class_names)} classes: no neighbourhood confusion figure (drawn up to "
                    f"{MAX_CONFUSION_CLASSES} classes); the purity_by_class figure shows the lowest and highest."
                )
                report.warnings.append(("confusion-classes", message))
            add(class_purity_images(results).items())
            add([(("purity_by_depth", "all_layers"), depth_image(results, job.history))])
        report.seconds[FIGURES] = time.perf_counter() - started  # figures drawn and encoded
        if maps:
            started = time.perf_counter()
            purity = {layer: layer_stats.mean_purity for layer, layer_stats in stats.items()}
            ringed = {chosen: flagged[chosen].mask(len(results.bank)).numpy()} if chosen in flagged else {}
            labels = results.bank.labels.numpy()
            add(map_images(maps, labels, results.class_names, purity, options.k, epoch, ringed).items())
            drawn = time.perf_counter() - started
            report.seconds[MAPS_2D if MAPS_2D in report.seconds else MAPS_3D] += drawn  # the figures of the maps
        report.flagged = {layer: results.bank.indices[found.rows].tolist() for layer, found in flagged.items()}
        if maps and options.log_projector and job.projector_dirs and job.makes(PROJECTOR):
            started = time.perf_counter()
            self._write_projector(job.projector_dirs, results, maps, flagged, report)
            report.seconds[PROJECTOR] = time.perf_counter() - started
        if options.dashboard:  # the FEATVIZ tab's files: every layer, also those drawn as a twin
            write_dashboard_epoch(self.log_dir or ".", job.results, maps, flagged, job.paths, job.step)

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

    def _fit_maps(
        self, bank: BankData, stats: dict[str, NeighbourStats], dims: list[int], report: Report
    ) -> dict[str, LayerMaps]:
        """Each layer's maps in ``dims`` (2-D first: a first 3-D map starts from it); the seconds of each
        dimension's maps go to ``report.seconds``."""
        maps: dict[str, LayerMaps] = {}
        failed: set[str] = set()
        rows = map_rows(bank.labels, bank.indices, self.options.map_samples, self.options.seed)
        for d in dims:
            started = time.perf_counter()
            for layer in stats:
                if layer in failed:
                    continue
                try:
                    found = fit_layer_maps(self.maps, layer, bank, [d], self.options.k, stats[layer], rows)
                except ValueError as error:
                    failed.add(layer)
                    maps.pop(layer, None)
                    report.warnings.append((f"tsne/{layer}", f"No t-SNE map of layer {layer!r} this epoch: {error}"))
                    continue
                maps[layer] = merged(maps[layer], found) if layer in maps else found
            report.seconds[MAPS_2D if d == 2 else MAPS_3D] = time.perf_counter() - started
        self.maps.next_round()
        return maps

    def _export_wrong_cluster(
        self, results: EpochResults, layer: str, found: WrongCluster, paths: list[str] | None
    ) -> tuple[str, str]:
        """Write the flagged list as CSV under the run's log dir; return it as a (tag, Markdown table)."""
        table = wrong_cluster_table(found, results.bank, results.class_names, paths)
        folder = Path(self.log_dir or ".") / "featviz_wrong_cluster"
        write_wrong_cluster_csv(folder / f"epoch_{results.epoch:03d}_{file_name(layer)}.csv", table)
        return self.tag("wrong_cluster_table", layer), markdown_table(table)

    def _export_label_issues(
        self, results: EpochResults, layer: str, paths: list[str] | None, report: Report
    ) -> LabelIssues:
        """Score every sample's label in ``layer``; write the relabelling CSVs (validation samples, and
        training samples with a training reference) and the validation list's top as Markdown."""
        validation, training = label_issues_of(results, layer, lambda key, text: report.warnings.append((key, text)))
        folder = Path(self.log_dir or ".") / "featviz_label_issues"
        name = f"epoch_{results.epoch:03d}_{file_name(layer)}"
        bank, names = results.bank, results.class_names
        write_label_issue_csv(
            folder / f"{name}.csv", label_issue_rows(validation, bank.indices, bank.labels, names, paths)
        )
        if training is not None:
            searched = results.searched
            train_rows = label_issue_rows(training, searched.indices, searched.labels, names)
            write_label_issue_csv(folder / f"{name}_train.csv", train_rows)
        top = list(islice(label_issue_rows(validation, bank.indices, bank.labels, names, paths), MARKDOWN_ROWS))
        report.texts.append((self.tag("label_issues", layer), label_issue_markdown(top, len(bank))))
        release_free_heap()  # the label-issue search's freed blocks
        return validation

    def _write_projector(
        self,
        folders: list[str],
        results: EpochResults,
        maps: dict[str, LayerMaps],
        flagged: dict[str, WrongCluster],
        report: Report,
    ) -> None:
        names = results.class_names
        if len(names) > MAX_COLOURED_CLASSES:
            message = (
                f"{len(names)} classes: the projector colours points by label only up to {MAX_COLOURED_CLASSES}; "
                "the embeddings are written, search or filter by label there instead."
            )
            report.warnings.append(("projector-classes", message))
        columns: dict[str, dict[str, Sequence[object]]] = {}
        shown = class_column(names)  # as the projector's class column writes them
        for layer, found in flagged.items():
            cluster = ["-"] * len(results.bank)
            for row, other in zip(found.rows.tolist(), found.cluster.tolist(), strict=True):
                cluster[row] = shown[other]
            columns[layer] = {"wrong_cluster": cluster}
        keep = results.epoch % self.options.projector_every_n_epochs == 0
        entries = projector_entries(
            results.bank, results.stats, maps, names, self.options.k, results.epoch, columns, keep=keep
        )
        for folder in folders:
            write_projector(folder, entries, replace_prefix=f"{LATEST}/")
