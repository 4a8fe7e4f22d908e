"""The Custom Scalars layout: every layer's purity and kNN accuracy on one chart each, read back from a real run."""

import re

from conftest import TinyNet, read_events, tiny_trainer
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.plugins.custom_scalar import layout_pb2, metadata

from lightning_featviz import FeatureVisualizer, OutputOptions
from lightning_featviz.outputs.custom_scalars import CATEGORY


def test_a_run_writes_one_layout_whose_charts_name_every_layers_purity_and_accuracy(tmp_path, small_data):
    layers = ["input", "conv2", "pool"]
    visualizer = FeatureVisualizer(
        layers, k=5, overhead=None, maps=False, outputs=OutputOptions(neighbour_grids=False, confusion=False)
    )
    trainer = tiny_trainer(tmp_path, logger=TensorBoardLogger(tmp_path), callbacks=[visualizer])
    trainer.fit(TinyNet(), datamodule=small_data)

    events = read_events(tmp_path)
    written = events.Tensors(metadata.CONFIG_SUMMARY_TAG)
    assert len(written) == 1  # once per run, though each of the two epochs made its sinks
    layout = layout_pb2.Layout.FromString(written[0].tensor_proto.string_val[0])
    [category] = layout.category
    assert category.title == CATEGORY
    scalars = events.Tags()["scalars"]
    charts = {chart.title: list(chart.multiline.tag) for chart in category.chart}
    assert len(charts) == 2
    for kind, (title, patterns) in zip(("knn_purity", "knn_accuracy"), charts.items(), strict=True):
        named = sorted(tag for tag in scalars if any(re.search(pattern, tag) for pattern in patterns))
        assert named == sorted(f"featviz/{kind}@5/{layer}" for layer in layers), title  # every layer, nothing else
        assert all(len(events.Scalars(tag)) == 2 for tag in named)  # one value per epoch on the chart's lines
