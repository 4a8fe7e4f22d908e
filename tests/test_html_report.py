"""The static report's words: the headline, the scalar names, the run's identity kept beside the page."""

from __future__ import annotations

from lightning_featviz.outputs.html_report import ABOUT, write_html_report
from lightning_featviz.outputs.report_words import figure_words, headline, scalar_words
from lightning_featviz.outputs.sinks import FileSink

#: kNN purity per layer and epoch: layer3 reaches 90% of the best purity (0.8) first, at epoch 1.
PURITY = {"input": [0.2, 0.2, 0.2], "layer2": [0.3, 0.6, 0.7], "layer3": [0.4, 0.75, 0.8]}


def _values(purity: dict[str, list[float]]) -> dict[str, dict[int, float]]:
    return {f"featviz/knn_purity@10/{layer}": dict(enumerate(series)) for layer, series in purity.items()}


def test_the_headline_names_the_first_layer_and_epoch_at_90_percent_of_the_best_purity():
    said = headline(_values(PURITY), list(PURITY), (36, "layer3", "epoch 2"))
    assert said == (
        "Classes separate from layer3 at epoch 1: kNN purity 0.80 there at epoch 2 (the best, layer3: 0.80; "
        "input: 0.20). 36 images sit in another class's cluster at layer3, epoch 2."
    )
    earlier = PURITY | {"layer2": [0.3, 0.73, 0.75]}  # layer2 reaches 0.72 at epoch 1: the earlier layer wins
    assert headline(_values(earlier), list(earlier), None).startswith("Classes separate from layer2 at epoch 1:")


def test_the_headline_says_so_when_no_layer_beats_the_input():
    flat = {"input": [0.2, 0.21], "pool": [0.2, 0.22]}
    assert headline(_values(flat), list(flat), (1, "pool", "epoch 1")) == (
        "No layer separates the classes much better than input yet: the best kNN purity at epoch 1 is 0.22 (pool), "
        "input's is 0.21. 1 image sits in another class's cluster at pool, epoch 1."
    )
    assert headline({}, [], None) == "No epoch analysed yet."


def test_tags_and_figure_names_read_as_words():
    assert scalar_words("featviz/tsne_purity@10/layer3/2d") == "layer3: purity on the map (2-D), k = 10"
    assert scalar_words("featviz/tsne_displacement/pool/3d") == "pool: map movement since the previous epoch (3-D)"
    assert scalar_words("featviz/knn_accuracy@5/model.avgpool") == "model.avgpool: kNN accuracy, k = 5"
    assert figure_words("all_layers") == "every layer" and figure_words("input_vs_pool") == "input and pool"


def test_the_runs_identity_stays_on_the_page_written_again_without_it(tmp_path):
    about = {"model": "Net", "data": "Digits", "samples": 120, "classes": 10, "date": "2026-01-02", "version": "9"}
    sink = FileSink(tmp_path, embeddings=False, about=about)
    sink.log_metrics({"featviz/knn_purity@5/input": 0.5}, step=3, epoch=0)
    sink.finish_epoch()
    identity = "model <b>Net</b> · data <b>Digits</b> · samples analysed <b>120</b> · classes <b>10</b>"
    assert identity in (tmp_path / "index.html").read_text() and (tmp_path / ABOUT).exists()
    write_html_report(tmp_path)  # as `featviz` or a user would rewrite it later: the identity is read back
    assert identity in (tmp_path / "index.html").read_text()
