import csv

import pytest
import torch

from lightning_featviz.analysis.label_issues import LabelIssues
from lightning_featviz.analysis.wrong_cluster import (
    CSV_COLUMNS,
    find_wrong_cluster,
    neighbourhood_confusion,
    wrong_cluster_table,
)
from lightning_featviz.capture.bank import BankData
from lightning_featviz.outputs.tables import write_csv
from lightning_featviz.report.figures import gallery_grid
from lightning_featviz.report.tables import markdown_table

NAMES = ["hamburger", "caesar_salad", "sushi"]


def test_a_sample_is_flagged_when_another_class_holds_most_of_its_neighbours():
    neighbour_labels = torch.tensor(
        [
            [1, 1, 1, 1, 0],  # a hamburger among salads: 4 of 5
            [1, 1, 1, 0, 0],  # 3 of 5 salads: flagged at 0.6
            [1, 2, 1, 2, 0],  # 2 salads, 2 sushi: a tie, not 0.6 of the neighbours
            [0, 0, 1, 1, 1],  # a salad among salads: its own cluster
            [1, 1, 1, 1, 1],  # sushi among salads: 5 of 5
        ]
    )
    labels = torch.tensor([0, 0, 0, 1, 2])
    found = find_wrong_cluster(neighbour_labels, labels, num_classes=3, min_share=0.6)
    assert found.rows.tolist() == [4, 0, 1]  # ranked: largest share of the other class first
    assert found.cluster.tolist() == [1, 1, 1] and found.count.tolist() == [5, 4, 3] and found.own.tolist() == [0, 1, 2]
    assert found.mask(5).tolist() == [True, True, False, False, True]
    assert find_wrong_cluster(neighbour_labels, labels, 3, min_share=0.8).rows.tolist() == [4, 0]
    votes = (torch.tensor([1, 1, 1, 1, 1]), torch.tensor([4, 3, 2, 3, 5]))  # as the kNN statistics hold it
    given = find_wrong_cluster(neighbour_labels, labels, 3, min_share=0.6, votes=votes)
    assert given.rows.tolist() == [4, 0, 1] and given.count.tolist() == [5, 4, 3]
    with pytest.raises(ValueError, match="`min_share` to be in"):
        find_wrong_cluster(neighbour_labels, labels, 3, min_share=0)


def test_confusion_rows_sum_to_one_and_match_a_direct_count():
    neighbour_labels = torch.tensor([[0, 0, 1], [0, 2, 2], [1, 1, 1], [0, 1, 2]])
    labels = torch.tensor([0, 0, 1, 1])
    confusion = neighbourhood_confusion(neighbour_labels, labels, num_classes=3)
    # class 0: neighbours 0,0,1,0,2,2 -> 3/6, 1/6, 2/6; class 1: 1,1,1,0,1,2 -> 1/6, 4/6, 1/6; class 2: none
    expected = torch.tensor([[3, 1, 2], [1, 4, 1]], dtype=torch.float64) / 6
    torch.testing.assert_close(confusion[:2], expected)
    assert torch.isnan(confusion[2]).all()
    torch.testing.assert_close(confusion[:2].sum(dim=1), torch.ones(2, dtype=torch.float64))


def _bank():
    n = 5
    return BankData(
        indices=torch.tensor([10, 11, 12, 13, 14]),
        labels=torch.tensor([0, 0, 0, 1, 2]),
        preds=torch.tensor([1, 0, -1, 1, 1]),
        confidences=torch.tensor([0.93, 0.6, float("nan"), 0.8, 0.55]),
        vectors={},
        thumbnails=torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 3, 4, 4).clone(),
    )


def test_table_csv_and_gallery_agree_on_which_images_are_shown(tmp_path):
    bank = _bank()
    neighbours = torch.tensor([[3, 3, 3, 3], [0, 2, 3, 4], [0, 1, 3, 4], [0, 1, 2, 4], [3, 3, 3, 0]])
    found = find_wrong_cluster(bank.labels[neighbours], bank.labels, 3, min_share=0.6)
    table = wrong_cluster_table(found, bank, NAMES, paths=[f"/data/{i}.jpg" for i in range(5)])
    assert [row["index"] for row in table] == [10, 13, 14]
    assert table[0] == {
        "rank": 1,
        "index": 10,
        "path": "/data/0.jpg",
        "label": "hamburger",
        "cluster": "caesar_salad",
        "neighbours_in_cluster": 4,
        "k": 4,
        "share": 1.0,
        "prediction": "caesar_salad",
        "confidence": pytest.approx(0.93, abs=1e-4),
        "correct": "false",
    }
    write_csv(tmp_path / "flagged.csv", CSV_COLUMNS, table)
    with open(tmp_path / "flagged.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(CSV_COLUMNS) and [int(r["index"]) for r in rows] == [10, 13, 14]

    grid = gallery_grid(found, bank, bank, neighbours, NAMES, "avgpool", max_rows=8)
    # the gallery's images are the images of the CSV's indices, in the same order
    shown = [int(image[0, 0, 0]) for image in grid.query_images]
    assert [int(bank.indices[value]) for value in shown] == [int(r["index"]) for r in rows]
    assert (
        grid.row_captions[0]
        == "#10: hamburger in the caesar_salad cluster: 4 of 4 neighbours; model says caesar_salad (93%)"
    )
    assert grid.neighbour_images.shape == (3, 4, 3, 4, 4)
    assert "| 1 | 10 | /data/0.jpg | hamburger | caesar_salad |" in markdown_table(table)
    assert markdown_table([]) == "No image sits in another class's cluster."


def test_with_label_issue_scores_the_gallery_keeps_the_lists_ranking_and_captions_each_with_its_score():
    bank = _bank()
    neighbours = torch.tensor([[3, 3, 3, 3], [0, 2, 3, 4], [0, 1, 3, 4], [0, 1, 2, 4], [3, 3, 3, 0]])
    found = find_wrong_cluster(bank.labels[neighbours], bank.labels, 3, min_share=0.6)
    issues = LabelIssues(
        scores=torch.tensor([0.5, 0.1, 0.2, 0.3, 0.9]),
        suggested=torch.tensor([1, 0, 0, 1, 1]),
        neighbour_share=torch.tensor([0.0, 0.5, 0.5, 0.2, 0.2]),
        model_probability=torch.tensor([0.07, 0.6, float("nan"), 0.8, 0.2]),
        neighbour_class=torch.tensor([1, 0, 0, 0, 1]),
        model_class=torch.tensor([1, 0, -1, 1, 1]),
        category=torch.tensor([0, 4, 6, 2, 0]),
        k=4,
    )
    grid = gallery_grid(found, bank, bank, neighbours, NAMES, "avgpool", max_rows=2, issues=issues)
    shown = [int(bank.indices[int(image[0, 0, 0])]) for image in grid.query_images]
    # the wrong-cluster list's order (the CSV's, the tab's), not the scores' (14's 0.9 first): one ranking everywhere
    assert shown == [10, 13]
    assert grid.row_captions[0] == (
        "#10: hamburger in the caesar_salad cluster: 4 of 4 neighbours; model says caesar_salad (93%); "
        "label issue 0.50: likely label error: neighbours and model agree on caesar_salad"
    )
    # just below the 0.5 of a likely label error, the score is rounded down, never to the "0.50" of one
    issues.scores[0], issues.category[0] = 0.497, 7
    grid = gallery_grid(found, bank, bank, neighbours, NAMES, "avgpool", max_rows=2, issues=issues)
    expected = "label issue 0.49: possible label error: neighbours and model agree on caesar_salad"
    assert grid.row_captions[0].endswith(expected)
    assert grid.query_labels.tolist() == [0, 1]
