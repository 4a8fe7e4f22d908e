import numpy as np
import torch

from lightning_featviz.render.canvas import SUPTITLE_PX, class_colours, fit_text, font, title_height
from lightning_featviz.render.chart import colours_of
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
from lightning_featviz.render.maps import SIDE_2D, SIDE_3D, MapPanel, map_image
from lightning_featviz.render.purity_charts import confusion_image, purity_depth_image


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


def _class_rgb(c, paleness=0.15):
    return np.round(255 * (class_colours(3)[c, :3] * (1 - paleness) + paleness)).astype(int)


def _found(image, colour, tolerance=12):
    """(rows, cols) of the pixels of ``colour``."""
    return np.nonzero(_has_colour(image, colour, tolerance))


def test_a_2d_map_draws_each_class_in_its_colour_where_its_points_are_with_y_up():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    centres = np.array([[-5.0, -5.0], [5.0, 5.0], [5.0, -5.0]])  # bottom left, top right, bottom right
    panel = MapPanel("layer", centres[labels] + rng.normal(scale=0.3, size=(90, 2)), labels, ["a", "b", "c"])
    image = map_image([panel], "Epoch 1")
    top = SUPTITLE_PX + 14 + TITLE_PX + 10  # the drawing area starts under the titles
    area = image[top : top + SIDE_2D, :SIDE_2D]
    for c, (right, up) in enumerate([(False, False), (True, True), (True, False)]):
        rows, cols = _found(area, _class_rgb(c))
        assert len(rows) > 30, f"class {c} is not drawn"
        assert (cols.mean() > SIDE_2D / 2) == right and (rows.mean() < SIDE_2D / 2) == up
    legend = image[:, SIDE_2D:]
    for c in range(3):
        assert len(_found(legend, _class_rgb(c, 0.0))[0]) > 20  # a legend dot per class, in full colour


def test_a_2d_map_rings_the_flagged_points_and_says_so_in_the_legend():
    labels = np.arange(40) % 2
    points = np.random.default_rng(0).normal(size=(40, 2))
    ringed = np.zeros(40, bool)
    ringed[:3] = True
    plain, flagged = (map_image([MapPanel("layer", points, labels, ["a", "b"], r)]) for r in (None, ringed))
    assert plain.shape[0] == flagged.shape[0] and flagged.shape[1] >= plain.shape[1]
    black = lambda image: int((image[:, : SIDE_2D - 4].max(axis=-1) < 60).sum())  # noqa: E731
    assert black(flagged) > black(plain) + 30  # the rings (the frame and title are the same in both)


def test_a_3d_map_is_seen_from_each_angle_and_farther_points_are_paler():
    labels = np.zeros(60, int)
    near = np.array([1.0, -0.6, 0.0]) + np.random.default_rng(0).normal(scale=0.05, size=(30, 3))
    far = np.array([-1.0, 0.6, 0.0]) + np.random.default_rng(1).normal(scale=0.05, size=(30, 3))
    panel = MapPanel("layer", np.concatenate([near, far]), labels, ["a"])
    image = map_image([panel], angles=[(0.0, 0.0), (90.0, -90.0)])  # looking along -x; from above
    top = TITLE_PX + 10
    assert image.shape[1] > 2 * SIDE_3D
    side = image[top : top + SIDE_3D, :SIDE_3D].astype(int)
    blue = side[..., 2] - side[..., 0]  # tab:blue, paler (less blue than red) when farther
    rows, cols = np.nonzero(blue > 20)
    left, right = cols < SIDE_3D / 2, cols >= SIDE_3D / 2  # y = -0.6 is on the left when looking along -x
    assert left.sum() > 20 and right.sum() > 20
    assert blue[rows[left], cols[left]].mean() > blue[rows[right], cols[right]].mean() + 20
    above = image[top : top + SIDE_3D, SIDE_3D:].astype(int)
    rows, cols = np.nonzero(above[..., 2] - above[..., 0] > 20)
    assert cols[rows > SIDE_3D / 2].mean() > cols[rows < SIDE_3D / 2].mean()  # from above: x right, y up


def test_class_colours_stay_distinct_beyond_twenty_classes():
    for n in (3, 15, 60):
        colours = class_colours(n)
        assert len(colours) == n and len({tuple(np.round(c, 3)) for c in colours}) == n


def test_confusion_image_shades_each_cell_by_its_share_and_lines_up_the_per_class_bars():
    confusion = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.0, 0.0, 1.0]])
    image = confusion_image(confusion, ["apple", "banana", "cherry"], "Epoch 0")
    for value in (0.9, 0.5, 1.0, 0.3):
        assert len(_found(image, colours_of(np.array(value), "Blues"), 3)[0]) > 200  # a cell of that shade
    bar_rows = [_found(image, np.round(255 * class_colours(3)[c, :3]), 3)[0] for c in range(3)]
    assert all(len(rows) > 50 for rows in bar_rows)
    assert bar_rows[0].mean() < bar_rows[1].mean() < bar_rows[2].mean()  # the first class on top
    cells = [_found(image, colours_of(np.array(v), "Blues"), 3)[0].mean() for v in (0.9, 0.5, 1.0)]  # the diagonal
    assert np.allclose(cells, [rows.mean() for rows in bar_rows], atol=3)  # a class's bar beside its row


def test_purity_depth_image_greys_the_epochs_a_layer_was_not_measured():
    history = np.array([[0.1, 0.2], [np.nan, 0.8]])
    image = purity_depth_image(["input", "pool"], [0.2, 0.8], history, [0, 1], k=5, epoch=1)
    assert len(_found(image, (225, 225, 225), 2)[0]) > 200  # the missing cell
    assert len(_found(image, colours_of(np.array(0.8), "viridis"), 3)[0]) > 400  # its cell and its bar


def test_short_class_names_drop_the_shared_prefix_and_elide_the_middle_but_stay_distinct():
    from lightning_featviz.render.canvas import short_names

    assert short_names(["a_rather_long_class_name_one", "a_rather_long_class_name_two"]) == ["one", "two"]
    assert short_names(["class 0", "class 1"]) == ["class 0", "class 1"]  # short enough: kept whole
    assert short_names(["x_" + "a" * 30 + "_end1", "y_" + "a" * 30 + "_end2"]) == [
        "x_aaaaaaa…aaa_end1",
        "y_aaaaaaa…aaa_end2",
    ]
    same_ends = ["p" + "a" * 30 + "q", "p" + "b" * 30 + "q"]  # would both read "paaaa…q"-like: kept whole
    assert short_names(same_ends, max_chars=3) == same_ends


LONG_NAMES = [f"imagenet_synset_{word}_of_the_long_tail" for word in ("tench", "goldfish", "great_white_shark")]


def test_names_key_lists_only_the_names_that_were_shortened_with_their_full_name():
    from lightning_featviz.render.canvas import names_key, short_names

    names = ["cat", "a_name_long_enough_to_be_elided_in_the_middle"]
    short = short_names(names)
    assert short[0] == "cat" and short[1] != names[1]
    assert names_key(names, short) == [(short[1], names[1])]
    assert names_key(names, short, shown=[0]) == []
    assert names_key(LONG_NAMES, short_names(LONG_NAMES), shown=[2, 0]) == [
        (short_names(LONG_NAMES)[2], LONG_NAMES[2]),
        (short_names(LONG_NAMES)[0], LONG_NAMES[0]),
    ]


def test_figures_with_shortened_class_names_draw_a_table_of_the_full_names_below():
    from lightning_featviz.render.canvas import KEY_PX
    from lightning_featviz.render.purity_charts import class_purity_image

    rng = np.random.default_rng(0)
    confusion = np.full((3, 3), 1 / 3)
    panel = MapPanel("layer", rng.normal(size=(30, 2)), np.arange(30) % 3, [])
    draws = {
        "confusion": lambda names: confusion_image(confusion, names, "Epoch 0"),
        "purity_by_class": lambda names: class_purity_image(np.array([0.2, 0.5, 0.9]), names, "Epoch 0"),
        "map": lambda names: map_image([MapPanel(panel.title, panel.points, panel.labels, names)], "Epoch 0"),
    }
    longest = max(font(KEY_PX).getlength(f"x → {name}") for name in LONG_NAMES)
    for kind, draw in draws.items():
        shortened, plain = draw(LONG_NAMES), draw(["tench", "goldfish", "shark"])
        assert shortened.shape[0] > plain.shape[0] + 3 * KEY_PX, kind  # a title line and three rows
        strip = shortened[-(shortened.shape[0] - plain.shape[0]) :]
        inked = np.flatnonzero((strip < 128).any(axis=(0, 2)))
        assert inked.max() - inked.min() >= longest, kind  # a full name is written out, not cut


def _ink_runs(rows_inked):
    """(start, stop) of each run of True in a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], rows_inked.astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2], strict=True))


def test_type_grows_with_the_figure_width_so_capitals_stay_legible_at_card_width():
    from lightning_featviz.render.canvas import CARD_PX, TEXT_CAP, TITLE_CAP, type_px

    for width in (CARD_PX, 800, 1200, 1600):
        for base, cap in ((11, TEXT_CAP), (19, TITLE_CAP)):
            capital = -font(type_px(width, base, cap)).getbbox("H", anchor="ls")[1]  # px, drawn
            assert capital * CARD_PX / width >= cap - 0.5, (width, base)
    assert type_px(CARD_PX, 11) == 11  # a narrow figure keeps its type


def test_a_wide_map_writes_its_title_and_legend_legible_at_card_width():
    from lightning_featviz.render.canvas import CARD_PX, TEXT_CAP, TITLE_CAP

    rng = np.random.default_rng(0)
    labels = np.arange(60) % 2
    panels = [MapPanel(f"layer{i}", rng.normal(size=(60, 2)), labels, ["HIGH", "LIME"]) for i in range(4)]
    image = map_image(panels, "EPOCH")
    assert image.shape[1] >= 1200  # wide: shown at a quarter of its size or less on a card
    shrink = CARD_PX / image.shape[1]
    dark = (image < 100).all(axis=-1)
    title_rows = _ink_runs(dark[:, image.shape[1] // 3 : 2 * image.shape[1] // 3].any(axis=1))[0]
    assert (title_rows[1] - title_rows[0]) * shrink >= TITLE_CAP - 0.5  # "EPOCH": capitals only
    legend = dark[:, -120:]  # the legend's text (its dots are coloured, not dark)
    runs = [stop - start for start, stop in _ink_runs(legend.any(axis=1))]
    assert len(runs) == 2 and min(runs) * shrink >= TEXT_CAP - 0.5, runs  # "HIGH", "LIME"


def test_wrap_text_breaks_at_spaces_within_the_width_and_cuts_only_the_last_line():
    from lightning_featviz.render.canvas import wrap_text

    typeface = font(13)
    text = "#12: labelled 3, but 5 of its 5 neighbours are 8; model says 3 (97%); label issue 0.83: likely mislabelled"
    lines = wrap_text(text, typeface, 300)
    assert len(lines) == 2 and all(typeface.getlength(line) <= 300 for line in lines)
    assert lines[0] == text[: len(lines[0])] and lines[1].endswith("…")  # the first line whole, the rest cut
    assert wrap_text("short caption", typeface, 300) == ["short caption"]
    assert " ".join(wrap_text(text, typeface, 300, max_lines=5)) == text  # room enough: every word kept


def test_a_wide_confusion_chart_writes_its_class_names_legible_at_card_width():
    from lightning_featviz.render.canvas import CARD_PX, TEXT_CAP

    confusion = np.random.default_rng(0).dirichlet(np.ones(10), size=10)
    image = confusion_image(confusion, [str(c) for c in range(10)], "EPOCH")
    assert image.shape[1] >= 900  # shown at a third of its size or less on a card
    dark = (image < 100).all(axis=-1)
    frame = np.flatnonzero(dark.sum(axis=0) > 300)[0]  # the heatmap's left edge: a long dark line
    names = dark[:, frame - 18 : frame - 2]  # the row names, "0" to "9", right-aligned against it
    runs = [stop - start for start, stop in _ink_runs(names.any(axis=1))]
    assert len(runs) == 10 and min(runs) * CARD_PX / image.shape[1] >= TEXT_CAP - 0.5, runs


def test_colour_tables_hold_the_published_colours_and_look_values_up_as_matplotlib_does():
    from lightning_featviz.render.colours import colour_table, scale_colours

    tab10 = ["1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b", "e377c2", "7f7f7f", "bcbd22", "17becf"]
    assert [bytes(c).hex() for c in colour_table("tab10")] == tab10  # matplotlib's / Tableau's published hex codes
    assert [bytes(c).hex() for c in colour_table("tab20")[::2]] == tab10  # tab20: each tab10 colour, then a light one
    ends = {"viridis": ("440154", "fde725"), "Blues": ("f7fbff", "08306b"), "turbo": ("30123b", "7a0403")}
    for name, (low, high) in ends.items():
        assert len(colour_table(name)) == 256
        assert [bytes(c).hex() for c in scale_colours(name, np.array([0.0, 1.0]))] == [low, high], name
    table = colour_table("viridis")
    values = np.array([-0.5, 0.0, 0.9 / 256, 1 / 256, 0.5, 255 / 256 - 1e-9, 1.0, 2.0])
    expected = table[[0, 0, 0, 1, 128, 254, 255, 255]]  # entry floor(256 value), clipped at both ends
    assert np.array_equal(scale_colours("viridis", values), expected)
    assert bytes(scale_colours("viridis", np.array(0.5))).hex() == "21918c"  # a single value: one colour


def test_the_shipped_font_draws_the_marks_arrows_and_accents_the_pictures_use():
    typeface = font(20)

    def glyph(text):
        mask = typeface.getmask(text)
        return mask.size, bytes(mask)

    missing = glyph("\u4e00")  # a CJK letter, outside the subset: the "no such glyph" box
    drawn = {text: glyph(text) for text in ["✓", "✗", "→", "…", "é", "ß", "Ж", "λ", "e"]}
    assert missing not in drawn.values()  # each is a glyph of its own, none the empty box
    assert len(set(drawn.values())) == len(drawn)


def test_a_narrow_heatmap_and_a_short_colour_bar_write_their_titles_whole():
    from lightning_featviz.render.chart import LABEL_PX, colour_bar, heatmap

    title = "class of the neighbours"
    chart = np.asarray(heatmap(np.eye(2), ["a", "b"], ["a", "b"], "Blues", (16, 16), "true", title, False))
    assert chart.shape[1] >= font(LABEL_PX + 1).getlength(title) + 4  # wider than its two cells for its title
    bottom = (chart[-LABEL_PX - 4 :] < 128).any(axis=(0, 2))  # the title's row
    inked = np.flatnonzero(bottom)
    assert inked.min() > 0 and inked.max() < chart.shape[1] - 1  # not cut at either edge
    label = "share of neighbours"
    bar = np.asarray(colour_bar("Blues", 30, label))  # 30 px of bar, a label longer than that
    assert bar.shape[0] >= font(LABEL_PX).getlength(label)
    column = (bar[:, -LABEL_PX - 4 :] < 128).any(axis=(1, 2))  # the label, written upwards at the right
    inked = np.flatnonzero(column)
    assert inked.min() > 0 and inked.max() < bar.shape[0] - 1  # not cut at the top or the bottom
    assert inked.max() - inked.min() >= font(LABEL_PX).getlength(label) - 4  # the whole label
