"""The tables an epoch's report hands the run's folder beside the event files: the wrong-cluster CSV and the
label-issue CSVs. The report writes no file itself: a :class:`~lightning_featviz.outputs.sinks.FolderSink` (the
run's :class:`~lightning_featviz.outputs.run_folder.RunFolder`) does. Each returns what the report shows of its
table (Markdown) and the paths written."""

from __future__ import annotations

from itertools import islice

from lightning_featviz.analysis import label_issues, wrong_cluster
from lightning_featviz.analysis.history import DYNAMICS_CSV_COLUMNS, dynamics_columns
from lightning_featviz.analysis.label_issues import label_issue_rows
from lightning_featviz.analysis.results import EpochResults, LabelIssueResults
from lightning_featviz.analysis.wrong_cluster import WrongCluster, wrong_cluster_table
from lightning_featviz.outputs.sinks import FolderSink, file_name
from lightning_featviz.report.tables import MARKDOWN_ROWS, label_issue_markdown, markdown_table


def export_wrong_cluster(
    folder: FolderSink | None,
    results: EpochResults,
    layer: str,
    found: WrongCluster,
    paths: list[str] | None,
    step: int,
) -> tuple[str, list[str]]:
    """The samples of ``layer`` in the wrong cluster as ``featviz_wrong_cluster/epoch_NNN_<layer>.csv`` under the
    run's folder (None: no file); the table as Markdown, and the path written."""
    table = wrong_cluster_table(found, results.bank, results.class_names, paths)
    if folder is None:
        return markdown_table(table), []
    name = f"featviz_wrong_cluster/epoch_{results.epoch:03d}_{file_name(layer)}"
    return markdown_table(table), [folder.log_csv(name, wrong_cluster.CSV_COLUMNS, table, step)]


def export_label_issues(
    folder: FolderSink | None, results: EpochResults, issues: LabelIssueResults, paths: list[str] | None, step: int
) -> tuple[str, list[str]]:
    """The relabelling CSVs of ``issues`` under the run's folder (``featviz_label_issues/``: the validation
    samples, and the training samples with a training reference); the top of the validation samples' list as
    Markdown, and the files' paths (none without a ``folder``). Where the epoch has the training dynamics
    (``results.dynamics``), the validation samples' CSV has their columns too (:data:`DYNAMICS_CSV_COLUMNS`)."""
    bank, names, columns = results.bank, results.class_names, label_issues.CSV_COLUMNS
    top = list(islice(label_issue_rows(issues.validation, bank.indices, bank.labels, names, paths), MARKDOWN_ROWS))
    if folder is None:
        return label_issue_markdown(top, len(bank)), []
    name = f"featviz_label_issues/epoch_{results.epoch:03d}_{file_name(issues.layer)}"
    rows = label_issue_rows(issues.validation, bank.indices, bank.labels, names, paths)
    validation_columns: tuple[str, ...] = columns
    if results.dynamics is not None:
        rows, validation_columns = dynamics_columns(results.dynamics, rows, names), (*columns, *DYNAMICS_CSV_COLUMNS)
    written = [folder.log_csv(name, validation_columns, rows, step)]
    if issues.training is not None:
        searched = results.searched
        train_rows = label_issue_rows(issues.training, searched.indices, searched.labels, names)
        written.append(folder.log_csv(f"{name}_train", columns, train_rows, step))
    return label_issue_markdown(top, len(bank)), written
