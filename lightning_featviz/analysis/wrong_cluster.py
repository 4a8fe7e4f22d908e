"""Images in the wrong semantic cluster, and which classes a layer's neighbourhoods confuse.

Plain functions on the kNN results of one layer. Shapes: N samples, k neighbours, C classes.

The rule: a sample sits *in the wrong cluster* when the class that most of its k neighbours hold
(ties go to the tied class holding the nearest neighbour) is not its label and holds at least
``min_share`` of the k neighbours. With the default ``min_share=0.6`` that is 6 of 10: most of the
neighbourhood, not a coin toss between two classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lightning_featviz.analysis.knn import majority
from lightning_featviz.capture.bank import BankData

CSV_COLUMNS = (
    "rank",
    "index",
    "path",
    "label",
    "cluster",
    "neighbours_in_cluster",
    "k",
    "share",
    "prediction",
    "confidence",
    "correct",
)


@dataclass
class WrongCluster:
    """The samples in another class's cluster, strongest first.

    Attributes:
        rows: (F,) bank rows of the flagged samples, ranked: largest share of the other class
            first, then fewest neighbours of their own class, then nearest to that class.
        cluster: (F,) the class each sits among.
        count: (F,) how many of its k neighbours hold that class.
        own: (F,) how many hold its own label.
        k: neighbours per sample.
    """

    rows: Tensor
    cluster: Tensor
    count: Tensor
    own: Tensor
    k: int

    def __len__(self) -> int:
        return len(self.rows)

    def mask(self, num_samples: int) -> Tensor:
        """(N,) bool: True for flagged rows."""
        flags = torch.zeros(num_samples, dtype=torch.bool)
        flags[self.rows] = True
        return flags


def find_wrong_cluster(
    neighbour_labels: Tensor,
    labels: Tensor,
    num_classes: int,
    min_share: float = 0.6,
    votes: tuple[Tensor, Tensor] | None = None,
) -> WrongCluster:
    """Flag samples whose neighbourhood is dominated by another class.

    Args:
        neighbour_labels: (N, k) labels of each sample's neighbours, nearest first.
        labels: (N,) labels of the samples.
        num_classes: C.
        min_share: the smallest fraction of the k neighbours the other class must hold.
        votes: ``(cluster, count)``, (N,) each: :func:`~lightning_featviz.analysis.knn.majority` of
            ``neighbour_labels`` where the kNN statistics hold it already; None: computed here.
    """
    if not 0 < min_share <= 1:
        raise ValueError(f"Expected `min_share` to be in (0, 1], but got {min_share}.")
    n, k = neighbour_labels.shape
    cluster, count = votes if votes is not None else majority(neighbour_labels)  # (N,) each
    labels = labels.to(neighbour_labels.device)
    own = (neighbour_labels == labels[:, None]).sum(dim=1)
    flagged = (cluster != labels) & (count >= min_share * k - 1e-9)
    rows = torch.nonzero(flagged)[:, 0]
    # Nearest position of the cluster class among the neighbours: the last sort key.
    first_of_cluster = (neighbour_labels[rows] == cluster[rows, None]).float().argmax(dim=1)
    # largest count first, then fewest of their own class, then nearest to the cluster; ties keep row order
    order = np.lexsort((first_of_cluster.cpu().numpy(), own[rows].cpu().numpy(), -count[rows].cpu().numpy()))
    rows = rows[torch.from_numpy(order).to(rows.device)]
    return WrongCluster(rows, cluster[rows], count[rows], own[rows], k)


def neighbourhood_confusion(neighbour_labels: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(C, C): row c is the distribution of the neighbours' classes over the samples of class c.

    Rows sum to 1 (a class without samples gets a row of NaN). The diagonal is per-class purity.
    """
    k = neighbour_labels.shape[1]
    counts = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    rows = labels.long()[:, None].expand(-1, k).reshape(-1)
    counts.index_put_((rows, neighbour_labels.long().reshape(-1)), torch.ones(rows.numel(), dtype=torch.float64), True)
    return counts / counts.sum(dim=1, keepdim=True)


def caption(flag_rank: int, found: WrongCluster, label: int, class_names: Sequence[str]) -> str:
    """Words for a flagged sample: ``"hamburger in the caesar_salad cluster: 8 of 10 neighbours"``."""
    cluster = class_names[int(found.cluster[flag_rank])]
    return f"{class_names[label]} in the {cluster} cluster: {int(found.count[flag_rank])} of {found.k} neighbours"


def wrong_cluster_table(
    found: WrongCluster,
    bank: BankData,
    class_names: Sequence[str],
    paths: Sequence[str] | None = None,
) -> list[dict[str, object]]:
    """One row per flagged sample, ranked, with the :data:`CSV_COLUMNS` keys.

    ``paths`` (N,) are the samples' file paths in bank order, where the dataset has them.
    """
    table = []
    for rank, row in enumerate(found.rows.tolist()):
        label, pred = int(bank.labels[row]), int(bank.preds[row])
        confidence = float(bank.confidences[row])
        table.append(
            {
                "rank": rank + 1,
                "index": int(bank.indices[row]),
                "path": paths[row] if paths is not None else "",
                "label": class_names[label],
                "cluster": class_names[int(found.cluster[rank])],
                "neighbours_in_cluster": int(found.count[rank]),
                "k": found.k,
                "share": round(int(found.count[rank]) / found.k, 4),
                "prediction": class_names[pred] if pred >= 0 else "",
                "confidence": "" if confidence != confidence else round(confidence, 4),
                "correct": "" if pred < 0 else str(pred == label).lower(),
            }
        )
    return table
