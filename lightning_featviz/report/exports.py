"""The files an epoch's report writes beside the event files: the wrong-cluster CSV, the label-issue CSVs and
the projector's files. Each returns what the report shows of it (a Markdown table, the label issues)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from pathlib import Path

from lightning_featviz.analysis.heap import release_free_heap
from lightning_featviz.analysis.label_issues import LabelIssues, Warn, label_issue_rows
from lightning_featviz.analysis.maps import LayerMaps
from lightning_featviz.analysis.measures import EpochResults
from lightning_featviz.analysis.wrong_cluster import WrongCluster, wrong_cluster_table
from lightning_featviz.outputs.projector import MAX_COLOURED_CLASSES, write_projector
from lightning_featviz.outputs.sinks import file_name
from lightning_featviz.report.figures import label_issues_of
from lightning_featviz.report.projector_entries import LATEST, class_column, projector_entries
from lightning_featviz.report.tables import (
    MARKDOWN_ROWS,
    label_issue_markdown,
    markdown_table,
    write_label_issue_csv,
    write_wrong_cluster_csv,
)


def export_wrong_cluster(
    log_dir: str | None,
    results: EpochResults,
    layer: str,
    found: WrongCluster,
    paths: list[str] | None,
    written: list[str] | None = None,
) -> str:
    """Write the samples of ``layer`` in the wrong cluster as CSV under the run's log dir
    (``featviz_wrong_cluster/epoch_NNN_<layer>.csv``, its path appended to ``written``); return the table as
    Markdown."""
    table = wrong_cluster_table(found, results.bank, results.class_names, paths)
    path = Path(log_dir or ".") / "featviz_wrong_cluster" / f"epoch_{results.epoch:03d}_{file_name(layer)}.csv"
    write_wrong_cluster_csv(path, table)
    if written is not None:
        written.append(str(path))
    return markdown_table(table)


def export_label_issues(
    log_dir: str | None,
    results: EpochResults,
    layer: str,
    paths: list[str] | None,
    warn: Warn,
    written: list[str] | None = None,
) -> tuple[LabelIssues, str]:
    """Score every sample's label in ``layer``; write the relabelling CSVs under the run's log dir
    (``featviz_label_issues/``: the validation samples, and the training samples with a training reference;
    their paths appended to ``written``); return the validation samples' issues and the top of their list as
    Markdown."""
    validation, training = label_issues_of(results, layer, warn)
    folder = Path(log_dir or ".") / "featviz_label_issues"
    name = f"epoch_{results.epoch:03d}_{file_name(layer)}"
    bank, names = results.bank, results.class_names
    files = [folder / f"{name}.csv"]
    write_label_issue_csv(files[0], label_issue_rows(validation, bank.indices, bank.labels, names, paths))
    if training is not None:
        searched = results.searched
        train_rows = label_issue_rows(training, searched.indices, searched.labels, names)
        files.append(folder / f"{name}_train.csv")
        write_label_issue_csv(files[1], train_rows)
    if written is not None:
        written.extend(str(path) for path in files)
    top = list(islice(label_issue_rows(validation, bank.indices, bank.labels, names, paths), MARKDOWN_ROWS))
    release_free_heap()  # the label-issue search's freed blocks
    return validation, label_issue_markdown(top, len(bank))


def export_projector(
    folders: Sequence[str],
    results: EpochResults,
    maps: dict[str, LayerMaps],
    flagged: dict[str, WrongCluster],
    k: int,
    every_n_epochs: int,
    warn: Warn,
) -> None:
    """Write the epoch's projector entries (each layer's vectors and maps, with the wrong cluster of each
    flagged sample as a column) into each of ``folders``, replacing the latest ones; an epoch that is a multiple
    of ``every_n_epochs`` is also kept under its own name."""
    names = results.class_names
    if len(names) > MAX_COLOURED_CLASSES:
        message = (
            f"{len(names)} classes: the projector colours points by label only up to {MAX_COLOURED_CLASSES}; "
            "the embeddings are written, search or filter by label there instead."
        )
        warn("projector-classes", message)
    columns: dict[str, dict[str, Sequence[object]]] = {}
    shown = class_column(names)  # as the projector's class column writes them
    for layer, found in flagged.items():
        cluster = ["-"] * len(results.bank)
        for row, other in zip(found.rows.tolist(), found.cluster.tolist(), strict=True):
            cluster[row] = shown[other]
        columns[layer] = {"wrong_cluster": cluster}
    keep = results.epoch % every_n_epochs == 0
    entries = projector_entries(results.bank, results.stats, maps, names, k, results.epoch, columns, keep=keep)
    for folder in folders:
        write_projector(folder, entries, replace_prefix=f"{LATEST}/")
