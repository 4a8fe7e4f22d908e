"""Rank 0's report of one analysed epoch: t-SNE maps, figures, exports and projector files,
written to the sinks.

No Lightning and no trainer state: everything about the epoch comes in an :class:`EpochJob`, so
a report can run on the background worker while training goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from lightning_featviz.bank import BankData
from lightning_featviz.embedding import MapTracker
from lightning_featviz.knn import NeighbourStats
from lightning_featviz.maps import LayerMaps, fit_layer_maps, map_figures, projector_entries
from lightning_featviz.outliers import WrongCluster, markdown_table, write_wrong_cluster_csv, wrong_cluster_table
from lightning_featviz.plots import figure_to_array
from lightning_featviz.projector import MAX_COLOURED_CLASSES
from lightning_featviz.report import (
    EpochResults,
    confusion_figures,
    depth_figure,
    gallery_figure,
    neighbour_grid_figures,
    query_rows,
    wrong_clusters,
)
from lightning_featviz.sinks import Sink, file_name


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


@dataclass
class EpochJob:
    """One epoch's report, as queued: where to write, what was found, and when.

    Attributes:
        sinks: where to write.
        results: the bank and kNN results.
        direct: scalars for sinks that also receive ``LightningModule.log``'s (the rest of them).
        metrics: every scalar of the epoch, for sinks that receive nothing else.
        step: the step to log at.
        with_maps: fit t-SNE maps (and write projector files) this epoch.
        history: the purity history so far (for the layer × epoch heatmap).
        paths: the bank's file paths, where the dataset has them.
    """

    sinks: list[Sink]
    results: EpochResults
    direct: dict[str, float]
    metrics: dict[str, float]
    step: int
    with_maps: bool
    history: list[dict[str, Any]]
    paths: list[str] | None


class Reporter:
    """Writes epoch reports; keeps only the t-SNE maps (for warm starts) from one to the next.

    Args:
        options: what to report.
        maps: the map tracker (its state is saved in checkpoints by the callback).
        tag: ``(kind, layer, *rest) -> tag`` as the callback names them.
        warn: ``(key, message)``, warning once per key.
        log_dir: the run's log dir, for the CSV exports.
    """

    def __init__(
        self,
        options: ReportOptions,
        maps: MapTracker,
        tag: Callable[..., str],
        warn: Callable[[str, str], None],
        log_dir: str | None,
    ):
        self.options, self.maps, self.tag, self.warn, self.log_dir = options, maps, tag, warn, log_dir

    def write(self, job: EpochJob) -> dict[str, list[int]]:
        """Fit maps, find images in the wrong cluster, draw, and write everything to the sinks.

        Returns the dataset indices of the images in the wrong cluster, per layer.
        """
        flagged = self._write(job)
        for sink in job.sinks:
            sink.finish_epoch()
        return flagged

    def _write(self, job: EpochJob) -> dict[str, list[int]]:
        options, results, sinks, step = self.options, job.results, job.sinks, job.step
        epoch, stats = results.epoch, results.stats
        maps = self._fit_maps(results.bank, stats) if stats and job.with_maps else {}
        flagged = wrong_clusters(results, options.min_share) if stats else {}
        extra = {
            self.tag(measure, layer, f"{d}d"): values[d]
            for layer, layer_maps in maps.items()
            for measure, values in (
                ("tsne_trustworthiness", layer_maps.trust),
                ("tsne_purity", layer_maps.purity),
                ("tsne_displacement", layer_maps.displacement),
            )
            for d in values
        }
        extra |= {self.tag("wrong_cluster_share", layer): len(f) / len(results.bank) for layer, f in flagged.items()}
        for sink in sinks:
            sink.log_metrics({**(job.direct if sink.receives_module_metrics else job.metrics), **extra}, step, epoch)
        if not stats:
            return {}
        chosen = options.wrong_cluster_layer or list(stats)[-1]
        figures: dict[tuple[str, str], Figure] = {}
        if options.log_neighbour_grids:
            figures |= neighbour_grid_figures(results, query_rows(results.bank, options.query_indices))
        if options.log_wrong_cluster and chosen in flagged:
            self._export_wrong_cluster(sinks, results, chosen, flagged[chosen], step, job.paths)
            if len(flagged[chosen]):
                gallery = gallery_figure(results, chosen, flagged[chosen], options.min_share, options.max_gallery)
                figures[("wrong_cluster", chosen)] = gallery
        if options.log_confusion:
            figures |= confusion_figures(results)
            figures[("purity_by_depth", "all_layers")] = depth_figure(results, job.history)
        if maps:
            purity = {layer: layer_stats.mean_purity for layer, layer_stats in stats.items()}
            ringed = {chosen: flagged[chosen].mask(len(results.bank)).numpy()} if chosen in flagged else {}
            labels = results.bank.labels.numpy()
            figures |= map_figures(maps, labels, results.class_names, purity, options.k, epoch, ringed)
        for (kind, name), figure in figures.items():
            image = figure_to_array(figure)
            for sink in sinks:
                sink.log_image(self.tag(kind, name), image, step)
        if maps and options.log_projector:
            self._write_projector(sinks, results, maps, flagged)
        return {layer: results.bank.indices[found.rows].tolist() for layer, found in flagged.items()}

    def _fit_maps(self, bank: BankData, stats: dict[str, NeighbourStats]) -> dict[str, LayerMaps]:
        maps: dict[str, LayerMaps] = {}
        for layer in stats:
            try:
                maps[layer] = fit_layer_maps(self.maps, layer, bank, self.options.tsne_dims, self.options.k)
            except ValueError as error:
                self.warn(f"tsne/{layer}", f"No t-SNE map of layer {layer!r} this epoch: {error}")
        self.maps.next_round()
        return maps

    def _export_wrong_cluster(
        self,
        sinks: list[Sink],
        results: EpochResults,
        layer: str,
        found: WrongCluster,
        step: int,
        paths: list[str] | None,
    ) -> None:
        """The flagged list as CSV under the run's log dir, and as a text table in TensorBoard."""
        table = wrong_cluster_table(found, results.bank, results.class_names, paths)
        folder = Path(self.log_dir or ".") / "featviz_wrong_cluster"
        write_wrong_cluster_csv(folder / f"epoch_{results.epoch:03d}_{file_name(layer)}.csv", table)
        for sink in sinks:
            sink.log_text(self.tag("wrong_cluster_table", layer), markdown_table(table), step)

    def _write_projector(
        self,
        sinks: list[Sink],
        results: EpochResults,
        maps: dict[str, LayerMaps],
        flagged: dict[str, WrongCluster],
    ) -> None:
        names = results.class_names
        if len(names) > MAX_COLOURED_CLASSES:
            self.warn(
                "projector-classes",
                f"{len(names)} classes: the projector colours points by label only up to {MAX_COLOURED_CLASSES}; "
                "the embeddings are written, search or filter by label there instead.",
            )
        columns: dict[str, dict[str, Sequence[object]]] = {}
        for layer, found in flagged.items():
            cluster = ["-"] * len(results.bank)
            for row, other in zip(found.rows.tolist(), found.cluster.tolist(), strict=True):
                cluster[row] = names[other]
            columns[layer] = {"wrong_cluster": cluster}
        entries = projector_entries(results.bank, results.stats, maps, names, self.options.k, results.epoch, columns)
        for sink in sinks:
            sink.log_embeddings(entries, f"featviz_projector/epoch_{results.epoch:03d}")
