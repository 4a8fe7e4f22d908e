"""What the callback's parts read, made from its options: the capture's settings, rank 0's analysis, the plan of
each epoch's outputs and the reports' options."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lightning_featviz.capture.epoch import CaptureSettings
from lightning_featviz.epoch_analysis import EpochAnalysis
from lightning_featviz.options import ProjectorOptions, WrongClusterOptions
from lightning_featviz.report.plan import OutputPlan
from lightning_featviz.report.settings import ReportSettings

if TYPE_CHECKING:
    from lightning_featviz.callback import FeatureVisualizer


def capture_settings(visualizer: FeatureVisualizer) -> CaptureSettings:
    """What the visualizer's :class:`~lightning_featviz.capture.epoch.ValidationCapture` reads."""
    capture = visualizer.capture
    shows_images = (  # whether any output shows thumbnails (grids, the gallery, the projector's sprite)
        visualizer.outputs.neighbour_grids
        or visualizer.wrong_cluster is not None
        or bool(visualizer.projector is not None and visualizer.maps.every_n_epochs)
    )
    return CaptureSettings(
        k=visualizer.k,
        max_samples=visualizer.max_samples,
        max_reference=capture.max_reference,
        reference=capture.reference,
        seed=visualizer.seed,
        pool_size=capture.pool_size,
        input_size=capture.input_size,
        input_kind=capture.input_kind,
        thumbnail_size=capture.thumbnail_size,
        image_mean=capture.image_mean,
        image_std=capture.image_std,
        storage_dtype=capture.storage_dtype,
        memory_budget_mb=visualizer.resources.memory_budget_mb,
        strict=visualizer.strict,
        batch_extractor=capture.batch_extractor,
        shows_images=shows_images,
    )


def report_options(visualizer: FeatureVisualizer) -> ReportSettings:
    """What the visualizer's reports read."""
    outputs, wrong_cluster = visualizer.outputs, visualizer.wrong_cluster or WrongClusterOptions()
    return ReportSettings(
        k=visualizer.k,
        query_indices=None if outputs.query_indices is None else list(outputs.query_indices),
        log_neighbour_grids=outputs.neighbour_grids,
        log_wrong_cluster=visualizer.wrong_cluster is not None,
        wrong_cluster_layer=wrong_cluster.layer,
        min_share=wrong_cluster.min_share,
        max_gallery=wrong_cluster.max_gallery,
        log_confusion=outputs.confusion,
        tsne_dims=list(visualizer.maps.dims),
        log_projector=visualizer.projector is not None,
        projector_every_n_epochs=(visualizer.projector or ProjectorOptions()).every_n_epochs,
        dashboard=visualizer.dashboard,
        map_samples=visualizer.maps.samples,
        seed=visualizer.seed,
    )


def epoch_analysis(visualizer: FeatureVisualizer, warn: Callable[[str, str], None]) -> EpochAnalysis:
    """Rank 0's analysis of each epoch, with the visualizer's options."""
    v = visualizer
    return EpochAnalysis(
        v.k, v.max_samples, v.seed, v.class_names, v.capture, v.maps, v.wrong_cluster, v.resources,
        v.outputs.monitor_class_purity, warn,
    )  # fmt: skip


def output_plan(visualizer: FeatureVisualizer) -> OutputPlan:
    """The plan of each epoch's outputs: the time budget, the map cadence, the outputs switched on."""
    v = visualizer
    figures = v.outputs.neighbour_grids or v.wrong_cluster is not None or v.outputs.confusion
    return OutputPlan(
        v.overhead, v.every_n_epochs, v.maps.every_n_epochs, v.maps.dims, figures, v.projector is not None
    )
