"""The pictures: neighbour grids (Pillow), and the charts and maps (matplotlib), checked on their pixels and on
matplotlib's own text extents (``fig.canvas.get_renderer()``, ``Text.get_window_extent``) at the width they are
shown at on a TensorBoard card."""

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_featviz.render.canvas import SUPTITLE_PX, fit_text, font, font_file, title_height
from lightning_featviz.render.cartography import FLAGGED, OTHERS, cartography_figure
from lightning_featviz.render.colours import PALETTE, class_colour, class_colours
from lightning_featviz.render.grids import (
    BORDER,
    CAPTION_PX,
    GAP,
    OTHER_COLOUR,
    PANEL_GAP,
    QUERY_COLOUR,
    SAME_COLOUR,
    TITLE_PX,
    NeighbourGrid,
    _compose,
    neighbour_grid_image,
)
from lightning_featviz.render.maps import MapPanel, map_figure
from lightning_featviz.render.names import key_lines, names_key, short_names
from lightning_featviz.render.purity_charts import (
    class_purity_figure,
    confusion_figure,
    confusion_image,
    purity_depth_figure,
    purity_depth_image,
)
from lightning_featviz.render.style import NAN_GREY, WIDTH_PX, pixels


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
    typeface = font(CAPTION_PX)
    assert fit_text("✓ 7", typeface, 70) == "✓ 7"
    short = fit_text("✗ caesar_salad_with_croutons", typeface, 70)
    assert short.endswith("…") and typeface.getlength(short) <= 70


def test_neighbour_grid_image_puts_panels_side_by_side_under_one_title():
    one = neighbour_grid_image([_grid()], "Epoch 0")
    two = neighbour_grid_image([_grid(), _grid()], "Epoch 0")
    assert one.dtype == np.uint8 and one.ndim == 3 and one.shape[2] == 3
    assert two.shape[1] == 2 * one.shape[1] + PANEL_GAP
    for image in (one, two):  # each panel's type sized for the width of the whole picture
        assert image.shape[0] - title_height(image.shape[1]) == _compose(_grid(), image.shape[1]).shape[0]
    assert _has_colour(one, QUERY_COLOUR, 30).sum() > 50  # the highlighted query borders are drawn
    assert (one[:SUPTITLE_PX] < 128).any()  # the title is written


def test_wrap_text_breaks_at_spaces_within_the_width_and_cuts_only_the_last_line():
    from lightning_featviz.render.canvas import wrap_text

    typeface = font(13)
    text = "#12: labelled 3, but 5 of its 5 neighbours are 8; model says 3 (97%); label issue 0.83: likely mislabelled"
    lines = wrap_text(text, typeface, 300)
    assert len(lines) == 2 and all(typeface.getlength(line) <= 300 for line in lines)
    assert lines[0] == text[: len(lines[0])] and lines[1].endswith("…")  # the first line whole, the rest cut
    assert wrap_text("short caption", typeface, 300) == ["short caption"]
    assert " ".join(wrap_text(text, typeface, 300, max_lines=5)) == text  # room enough: every word kept


# ----------------------------------------------------------------------------------- charts and maps

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
LONG_NAMES = [f"imagenet_synset_{word}_of_the_long_tail" for word in ("tench", "goldfish", "great_white_shark")]


def _confusion(c, seed=0):
    rng = np.random.default_rng(seed)
    matrix = rng.dirichlet(np.full(c, 0.3), size=c) + 2 * np.eye(c)
    return matrix / matrix.sum(axis=1, keepdims=True)


def _clusters(n, classes, d=2, seed=0):
    """(n, d) points in one blob per class around a circle, and their (n,) labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    angle = 2 * np.pi * labels / classes
    centres = np.stack([np.cos(angle), np.sin(angle), *([labels / classes] if d == 3 else [])], axis=1) * 4
    return centres + rng.normal(size=(n, d)), labels


def _panel(layer, n=600, classes=10, d=2, names=None, ringed=None, seed=0):
    points, labels = _clusters(n, classes, d, seed)
    names = names or [str(c) for c in range(classes)]
    return MapPanel(layer, points, labels, names, ringed, "purity@10 0.91, map 0.89")


def _cartography(layers, n=500, seed=0):
    """(confidence, variability, {layer: flagged}) of n samples, a few never seen (NaN), fewer flagged by each
    later layer."""
    rng = np.random.default_rng(seed)
    confidence, variability = rng.beta(5, 1.5, n), rng.uniform(0, 0.3, n)
    confidence[:5] = np.nan
    flagged = {layer: rng.random(n) < 0.3 / (i + 1) for i, layer in enumerate(layers)}
    return confidence, variability, flagged


def _figures():
    """Every chart and map kind, at the sizes that stress its layout: (name, a function that draws the figure)."""
    rng = np.random.default_rng(0)
    ringed = rng.random(600) < 0.05
    layers = ["input", "layer1", "layer2", "layer3", "avgpool"]
    many_layers = [f"encoder.layers.{i}.mlp" for i in range(12)]
    history, long_history = rng.uniform(size=(5, 8)), rng.uniform(size=(12, 40))
    history[0, :3] = np.nan
    title = "Epoch 7: avgpool, where each class's neighbours come from"
    figures = {
        "confusion, 10 classes": lambda: confusion_figure(_confusion(10), DIGITS, title),
        "confusion, 3 long names": lambda: confusion_figure(_confusion(3), LONG_NAMES, "Epoch 0: layer"),
        "confusion, 50 classes": lambda: confusion_figure(_confusion(50), [f"class {c}" for c in range(50)], "E"),
        "confusion, 20 one-digit names": lambda: confusion_figure(
            _confusion(20), [str(c % 10) for c in range(20)], "E"
        ),
        "purity by class, 10": lambda: class_purity_figure(rng.uniform(size=10), DIGITS, "Epoch 7: avgpool"),
        "purity by class, 60": lambda: class_purity_figure(rng.uniform(size=60), [f"c{c}" for c in range(60)], "E"),
        "depth, 5 layers": lambda: purity_depth_figure(layers, history[:, -1], history, list(range(8)), 10, 7),
        "depth, 12 layers 40 epochs": lambda: purity_depth_figure(
            many_layers, long_history[:, -1], long_history, list(range(40)), 10, 39
        ),
        "map, one": lambda: map_figure([_panel("avgpool", ringed=ringed)], "Epoch 7: 2-D t-SNE of avgpool"),
        "map, first vs last": lambda: map_figure(
            [_panel("input", ringed=ringed), _panel("avgpool", ringed=ringed)], "Epoch 7: 2-D t-SNE, input vs avgpool"
        ),
        "map, all layers": lambda: map_figure(
            [_panel(layer, seed=i) for i, layer in enumerate(layers)], "Epoch 7: every layer in network order"
        ),
        "map, 3-D": lambda: map_figure([_panel("avgpool", d=3)], "Epoch 7: 3-D t-SNE of avgpool"),
        "map, 3-D first vs last": lambda: map_figure(
            [_panel("input", d=3), _panel("avgpool", d=3)], "Epoch 7: 3-D t-SNE, input vs avgpool"
        ),
        "map, 60 classes": lambda: map_figure([_panel("avgpool", 3000, 60)], "Epoch 7: 2-D t-SNE of avgpool"),
        "map, long names": lambda: map_figure(
            [_panel("a", 90, 3, names=LONG_NAMES), _panel("b", 90, 3, names=LONG_NAMES)], "E"
        ),
        "cartography, one layer": lambda: cartography_figure(*_cartography(["avgpool"]), "Epoch 7: cartography"),
        "cartography, five layers": lambda: cartography_figure(*_cartography(layers), "Epoch 7: cartography, by layer"),
        "cartography, long layer names": lambda: cartography_figure(*_cartography(many_layers[:4]), "E"),
    }
    yield from figures.items()


FIGURES = list(_figures())


def _texts(fig):
    """(text artist, its window extent) of every visible, non-empty text of the drawn ``fig``."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []
    for text in fig.findobj(Text):
        if text.get_visible() and text.get_text().strip() and text.get_figure() is not None:
            found.append((text, text.get_window_extent(renderer)))
    return found


def _line_height(text, extent):
    """px of one line of ``text`` (upright or turned a quarter)."""
    across = extent.width if text.get_rotation() % 180 == 90 else extent.height
    lines = text.get_text().count("\n") + 1
    return across / (1.2 * lines - 0.2)  # matplotlib's line spacing: 1.2


@pytest.mark.parametrize(("name", "draw"), FIGURES, ids=[name for name, _ in FIGURES])
def test_a_figure_is_card_sized_and_its_text_is_on_one_type_scale_inside_the_canvas(name, draw):
    fig = draw()
    width, height = fig.canvas.get_width_height()
    assert 600 <= width <= 800 and width <= 2 * height, (width, height)  # a TensorBoard card, aspect <= 2:1
    texts = _texts(fig)
    assert len(texts) >= 5
    heights = [_line_height(text, extent) for text, extent in texts]
    assert max(heights) <= min(heights) * 1.25, sorted(set(np.round(heights)))  # one scale: titles a little larger
    assert min(heights) >= 10  # 10-pt type at 100 dpi, shown at its size on a card up to 735 px wide
    for text, extent in texts:  # nothing cut at the canvas's edges
        assert extent.x0 >= -0.5 and extent.y0 >= -0.5, text.get_text()
        assert extent.x1 <= width + 0.5 and extent.y1 <= height + 0.5, text.get_text()
    for axes in fig.axes:  # upright ticks: only names longer than one character may be turned (to fit)
        for label in [*axes.get_xticklabels(), *axes.get_yticklabels()]:
            if len(label.get_text().strip()) <= 1:
                assert label.get_rotation() == 0, (name, label.get_text())
            assert label.get_rotation() in (0, 90)
    pixels(fig)  # drawn and freed
    assert not fig.axes and not fig.texts


@pytest.mark.parametrize(("name", "draw"), FIGURES, ids=[name for name, _ in FIGURES])
def test_no_two_texts_of_a_figure_overlap(name, draw):
    fig = draw()
    texts = _texts(fig)
    assert len(texts) >= 5
    for (a, box_a), (b, box_b) in itertools.combinations(texts, 2):
        overlap_x = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
        overlap_y = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
        assert min(overlap_x, overlap_y) <= 1, (name, a.get_text(), b.get_text())
    pixels(fig)


def test_class_colours_are_the_tabs_in_every_figure():
    script = (Path(font_file.__code__.co_filename).parents[1] / "dashboard" / "static" / "index.js").read_text()
    palette = re.findall(r"'(#[0-9a-f]{6})'", script[script.index("const PALETTE") : script.index("];")])
    assert list(PALETTE) == palette and len(palette) == 20
    assert "`hsl(${(c * 137.5) % 360}, 65%, 50%)`" in script  # the rule beyond twenty, which class_colour follows
    import colorsys

    for c in (20, 33, 59):
        assert np.allclose(class_colour(c), colorsys.hls_to_rgb((c * 137.5) % 360 / 360, 0.5, 0.65))
    for n in (3, 15, 60):
        colours = class_colours(n)
        assert len(colours) == n and len({tuple(np.round(c, 3)) for c in colours}) == n


def _has_rgb(image, colour, tolerance=3):
    return np.all(np.abs(image.astype(int) - np.round(255 * np.asarray(colour[:3]))) <= tolerance, axis=-1)


def test_a_2d_map_draws_each_class_in_its_colour_where_its_points_are_with_y_up():
    labels = np.repeat(np.arange(3), 30)
    centres = np.array([[-5.0, -5.0], [5.0, 5.0], [5.0, -5.0]])  # bottom left, top right, bottom right
    points = centres[labels] + np.random.default_rng(0).normal(scale=0.3, size=(90, 2))
    fig = map_figure([MapPanel("layer", points, labels, ["a", "b", "c"])])
    axes = fig.axes[0].get_window_extent()
    image = pixels(fig)
    height = image.shape[0]
    inside = image[int(height - axes.y1) + 2 : int(height - axes.y0) - 2, int(axes.x0) + 2 : int(axes.x1) - 2]
    middle_row, middle_col = inside.shape[0] / 2, inside.shape[1] / 2
    for c, (right, up) in enumerate([(False, False), (True, True), (True, False)]):
        rows, cols = np.nonzero(_has_rgb(inside, class_colour(c)))
        assert len(rows) > 30, f"class {c} is not drawn in its colour"
        assert (cols.mean() > middle_col) == right and (rows.mean() < middle_row) == up
    legend = image[:, int(axes.x1) :]
    assert all(_has_rgb(legend, class_colour(c)).sum() > 20 for c in range(3))  # a legend dot per class


def test_a_map_scales_its_points_to_their_number_and_rings_the_flagged_ones():
    few, many = (map_figure([_panel("layer", n, 5)]) for n in (100, 5000))
    size = lambda fig: float(fig.axes[0].collections[0].get_sizes()[0])  # noqa: E731
    assert size(few) > 4 * size(many)
    ringed = np.zeros(600, bool)
    ringed[:7] = True
    fig = map_figure([_panel("layer", ringed=ringed)])
    rings = fig.axes[0].collections[1]
    assert len(rings.get_offsets()) == 7 and (rings.get_facecolors().size == 0 or rings.get_facecolors()[0, 3] == 0)
    assert rings.get_sizes()[0] > 4 * fig.axes[0].collections[0].get_sizes()[0]  # a ring around a point
    assert any("flagged" in text.get_text() for text in fig.texts)  # and said in the legend


def test_a_3d_map_is_seen_from_each_angle_and_names_each_view():
    fig = map_figure([_panel("layer", d=3)], angles=[(0.0, 0.0), (90.0, -90.0)])
    assert [ax.name for ax in fig.axes] == ["3d", "3d"]
    assert [(ax.elev, ax.azim) for ax in fig.axes] == [(0.0, 0.0), (90.0, -90.0)]
    written = " ".join(text.get_text() for text in fig.texts)
    assert "layer" in written and "elevation 90°, azimuth -90°" in written


def test_confusion_chart_shades_each_cell_by_its_share_and_lines_up_the_per_class_bars():
    confusion = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.0, 0.0, 1.0]])
    fig = confusion_figure(confusion, ["apple", "banana", "cherry"], "Epoch 0")
    heat, _, bars = fig.axes
    assert np.array_equal(np.asarray(heat.images[0].get_array()), confusion)
    widths = [patch.get_width() for patch in bars.patches]
    assert np.allclose(widths, [0.9, 0.5, 1.0])  # the diagonal
    for row, patch in enumerate(bars.patches):  # a class's bar beside its row, in its colour
        bar_y = bars.transData.transform((0, patch.get_y() + patch.get_height() / 2))[1]
        assert abs(bar_y - heat.transData.transform((0, row))[1]) < 1
        assert np.allclose(patch.get_facecolor()[:3], class_colour(row))
    values = {text.get_text() for text in heat.texts}
    assert {"0.90", "0.50", "1.00", "0.30"} <= values and "0.00" not in values  # shares written, zeros not
    image = confusion_image(confusion, ["apple", "banana", "cherry"], "Epoch 0")
    assert image.dtype == np.uint8 and image.shape[1] == WIDTH_PX


def test_bar_values_stay_inside_the_axis_of_shares():
    fig = class_purity_figure(np.array([0.02, 0.5, 0.97, 1.0]), ["a", "b", "c", "d"], "E")
    ax = fig.axes[0]
    fig.canvas.draw()
    right = ax.get_window_extent().x1
    renderer = fig.canvas.get_renderer()
    assert len(ax.texts) == 4
    assert all(text.get_window_extent(renderer).x1 <= right + 0.5 for text in ax.texts)
    assert ax.get_xlim() == (0, 1)


def test_purity_depth_chart_greys_the_epochs_a_layer_was_not_measured():
    history = np.array([[0.1, 0.2], [np.nan, 0.8]])
    image = purity_depth_image(["input", "pool"], [0.2, 0.8], history, [0, 1], k=5, epoch=1)
    grey = tuple(int(NAN_GREY[i : i + 2], 16) for i in (1, 3, 5))
    assert _has_rgb(image, np.array(grey) / 255, 2).sum() > 200  # the missing cell


def test_many_classes_write_every_nth_name_and_long_names_are_turned_not_cut():
    fig = confusion_figure(_confusion(50), [f"class {c}" for c in range(50)], "E")
    heat = fig.axes[0]
    assert 10 <= len(heat.get_yticklabels()) < 50  # rows too close for every name: every n-th
    assert not heat.texts  # cells too small for their values
    fig = confusion_figure(_confusion(10), DIGITS, "E")
    columns = fig.axes[0].get_xticklabels()
    assert [label.get_text() for label in columns] == DIGITS and {label.get_rotation() for label in columns} == {90.0}
    pixels(fig)


def test_short_class_names_drop_the_shared_prefix_and_elide_the_middle_but_stay_distinct():
    assert short_names(["a_rather_long_class_name_one", "a_rather_long_class_name_two"]) == ["one", "two"]
    assert short_names(["class 0", "class 1"]) == ["class 0", "class 1"]  # short enough: kept whole
    assert short_names(["x_" + "a" * 30 + "_end1", "y_" + "a" * 30 + "_end2"]) == [
        "x_aaaaaaa…aaa_end1",
        "y_aaaaaaa…aaa_end2",
    ]
    same_ends = ["p" + "a" * 30 + "q", "p" + "b" * 30 + "q"]  # would both read "paaaa…q"-like: kept whole
    assert short_names(same_ends, max_chars=3) == same_ends


def test_names_key_lists_only_the_names_that_were_shortened_with_their_full_name():
    names = ["cat", "a_name_long_enough_to_be_elided_in_the_middle"]
    short = short_names(names)
    assert short[0] == "cat" and short[1] != names[1]
    assert names_key(names, short) == [(short[1], names[1])]
    assert names_key(names, short, shown=[0]) == [] and key_lines(names, short, shown=[0]) == []
    assert names_key(LONG_NAMES, short_names(LONG_NAMES), shown=[2, 0]) == [
        (short_names(LONG_NAMES)[2], LONG_NAMES[2]),
        (short_names(LONG_NAMES)[0], LONG_NAMES[0]),
    ]


def test_figures_with_shortened_class_names_write_the_full_names_below():
    confusion = np.full((3, 3), 1 / 3)
    draws = {
        "confusion": lambda names: confusion_figure(confusion, names, "Epoch 0"),
        "purity_by_class": lambda names: class_purity_figure(np.array([0.2, 0.5, 0.9]), names, "Epoch 0"),
        "map": lambda names: map_figure([_panel("layer", 90, 3, names=names)], "Epoch 0"),
    }
    for kind, draw in draws.items():
        shortened, plain = draw(LONG_NAMES), draw(["tench", "goldfish", "shark"])
        written = [text.get_text() for text in shortened.texts]
        assert all(any(text.endswith(f"= {name}") for text in written) for name in LONG_NAMES), kind
        shortened.canvas.draw()
        renderer, lowest = shortened.canvas.get_renderer(), min(ax.get_window_extent().y0 for ax in shortened.axes)
        key = [text for text in shortened.texts if "=" in text.get_text() or "shortened" in text.get_text()]
        assert all(text.get_window_extent(renderer).y1 < lowest for text in key), kind  # below every chart
        assert not any("=" in text.get_text() for text in plain.texts), kind


def test_matplotlibs_font_draws_the_marks_arrows_and_accents_the_mosaics_use():
    typeface = font(20)

    def glyph(text):
        mask = typeface.getmask(text)
        return mask.size, bytes(mask)

    missing = glyph("\\U0001f600")  # an emoji, outside DejaVu Sans: the "no such glyph" box
    drawn = {text: glyph(text) for text in ["✓", "✗", "→", "…", "é", "ß", "Ж", "λ", "e"]}
    assert missing not in drawn.values()  # each is a glyph of its own, none the empty box
    assert len(set(drawn.values())) == len(drawn)


def test_cartography_draws_a_panel_per_layer_in_order_with_that_layers_flagged_samples_in_red():
    from matplotlib.colors import to_hex

    confidence, variability, flagged = _cartography(["input", "layer2", "avgpool"])
    fig = cartography_figure(confidence, variability, flagged, "Epoch 3: cartography")
    assert len(fig.axes) == 3
    seen = np.isfinite(confidence)
    headings = [t.get_text() for t in fig.texts if "in its wrong cluster" in t.get_text()]
    for axes, (layer, marked), heading in zip(fig.axes, flagged.items(), headings, strict=True):
        grey, red = axes.collections  # the rest first, the flagged drawn over them
        assert to_hex(grey.get_facecolor()[0]) == OTHERS and to_hex(red.get_facecolor()[0]) == FLAGGED
        np.testing.assert_array_equal(red.get_offsets(), np.stack([confidence, variability], 1)[seen & marked])
        assert len(grey.get_offsets()) == int((seen & ~marked).sum())
        assert heading == f"{layer}\n{int((seen & marked).sum())} in its wrong cluster"
    pixels(fig)
