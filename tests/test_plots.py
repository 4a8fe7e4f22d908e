import numpy as np
import pytest
import torch

from lightning_featviz.plots import (
    OTHER_COLOUR,
    QUERY_COLOUR,
    SAME_COLOUR,
    MapPanel,
    NeighbourGrid,
    _compose,
    class_colours,
    figure_to_array,
    map_figure,
    neighbour_grid_figure,
)


def _grid(q=2, k=3, t=8):
    return NeighbourGrid(
        title="layer",
        query_images=torch.full((q, 3, t, t), 10, dtype=torch.uint8),
        neighbour_images=torch.full((q, k, 3, t, t), 200, dtype=torch.uint8),
        query_labels=torch.tensor([0, 1]),
        neighbour_labels=torch.tensor([[0, 1, 0], [1, 1, 0]]),
        class_names=["hamburger", "caesar_salad"],
    )


def test_compose_highlights_the_query_and_marks_each_neighbour_same_or_other():
    canvas, captions = _compose(_grid())
    texts = [text for _, _, text, _ in captions]
    assert texts[:4] == ["query: hamburger", "✓ hamburger", "✗ caesar_sal…", "✓ hamburger"]
    colours = [colour for _, _, _, colour in captions]
    assert colours[:4] == [QUERY_COLOUR, SAME_COLOUR, OTHER_COLOUR, SAME_COLOUR]
    assert tuple(canvas[0, 0]) == QUERY_COLOUR  # the query's border
    assert tuple(canvas[5, 5]) == (10, 10, 10)  # the query's pixels inside the border


def test_neighbour_grid_figure_renders_side_by_side_panels_to_rgb():
    one = figure_to_array(neighbour_grid_figure([_grid()], "Epoch 0"))
    two = figure_to_array(neighbour_grid_figure([_grid(), _grid()], "Epoch 0"))
    assert one.dtype == np.uint8 and one.ndim == 3 and one.shape[2] == 3
    assert two.shape[1] > 1.8 * one.shape[1]
    blue = np.all(np.abs(one.astype(int) - QUERY_COLOUR) < 30, axis=2)
    assert blue.sum() > 50  # the highlighted query borders are drawn


def _legend_texts(fig):
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


@pytest.mark.parametrize("dims", [2, 3])
def test_map_figure_colours_points_by_class_with_a_legend_of_class_names(dims):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    points = rng.normal(size=(60, dims)) + labels[:, None] * 5
    ringed = np.zeros(60, bool)
    ringed[:4] = True
    panels = [MapPanel("input", points, labels, ["apple", "banana", "cherry"], ringed)] * 2
    fig = map_figure(panels, "Epoch 1")
    assert _legend_texts(fig) == ["apple", "banana", "cherry", "flagged"]
    assert len(fig.axes) == (6 if dims == 3 else 2)  # 3-D: each panel seen from three angles
    image = figure_to_array(fig)
    assert image.ndim == 3 and image.shape[2] == 3 and image.std() > 10


def test_class_colours_stay_distinct_beyond_twenty_classes():
    for n in (3, 15, 60):
        colours = class_colours(n)
        assert len(colours) == n and len({tuple(np.round(c, 3)) for c in colours}) == n
