import numpy as np
import pytest
import torch

from lightning_featviz.plots import (
    BORDER,
    CAPTION_PX,
    GAP,
    OTHER_COLOUR,
    PANEL_GAP,
    QUERY_COLOUR,
    SAME_COLOUR,
    SUPTITLE_PX,
    TITLE_PX,
    MapPanel,
    NeighbourGrid,
    _compose,
    _fit,
    _font,
    class_colours,
    confusion_figure,
    figure_to_array,
    map_figure,
    neighbour_grid_figure,
    neighbour_grid_image,
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


def _has_colour(image, colour, tolerance=40):
    return np.all(np.abs(image.astype(int) - colour) < tolerance, axis=-1)


def test_compose_highlights_the_query_and_marks_each_neighbour_same_or_other():
    image = _compose(_grid())  # 8 px thumbnails, enlarged 8 times
    top = TITLE_PX + 10
    cell = 8 * 8 + 2 * BORDER
    assert tuple(image[top, GAP]) == QUERY_COLOUR  # the query's border
    assert tuple(image[top + BORDER + 5, GAP + BORDER + 5]) == (10, 10, 10)  # its pixels, enlarged
    neighbour_x = [3 * GAP + (col + 1) * (cell + GAP) for col in range(3)]
    assert [tuple(image[top, x]) for x in neighbour_x] == [SAME_COLOUR, OTHER_COLOUR, SAME_COLOUR]
    captions = image[top + cell : top + cell + CAPTION_PX + 4]
    for x, colour in zip(neighbour_x, [SAME_COLOUR, OTHER_COLOUR, SAME_COLOUR], strict=True):
        assert _has_colour(captions[:, x : x + cell], colour).sum() > 5  # its caption, in its colour


def test_long_names_are_cut_short_to_fit_their_cell():
    font = _font(CAPTION_PX)
    assert _fit("✓ 7", font, 70) == "✓ 7"
    short = _fit("✗ caesar_salad_with_croutons", font, 70)
    assert short.endswith("…") and font.getlength(short) <= 70


def test_neighbour_grid_image_puts_panels_side_by_side_under_one_title():
    one = neighbour_grid_image([_grid()], "Epoch 0")
    two = neighbour_grid_image([_grid(), _grid()], "Epoch 0")
    assert one.dtype == np.uint8 and one.ndim == 3 and one.shape[2] == 3
    assert two.shape[0] == one.shape[0] and two.shape[1] == 2 * one.shape[1] + PANEL_GAP
    assert _has_colour(one, QUERY_COLOUR, 30).sum() > 50  # the highlighted query borders are drawn
    assert (one[:SUPTITLE_PX] < 128).any()  # the title is written
    figure = figure_to_array(neighbour_grid_figure([_grid()], "Epoch 0"))
    assert figure.shape == one.shape and np.abs(figure.astype(int) - one).mean() < 1  # the same picture


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


def test_class_names_with_dollar_signs_are_drawn_as_written_not_as_maths():
    names = ["$5-$10", r"$\nocommand$", "plain"]
    labels = np.arange(30) % 3
    panel = MapPanel("input", np.random.default_rng(0).normal(size=(30, 2)), labels, names)
    assert figure_to_array(map_figure([panel])).std() > 10  # "$\nocommand$" as maths would fail to draw
    assert figure_to_array(confusion_figure(np.eye(3), names, "Epoch 0")).std() > 10
