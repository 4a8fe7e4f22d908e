"""The option groups of FeatureVisualizer."""

import warnings

import pytest

from lightning_featviz import FeatureVisualizer, MapOptions, OutputOptions, ProjectorOptions, WrongClusterOptions


def test_the_option_groups_give_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        visualizer = FeatureVisualizer(maps=MapOptions(perplexity=12), wrong_cluster=WrongClusterOptions(max_gallery=3))
    assert visualizer.maps.perplexity == 12.0 and visualizer.wrong_cluster == WrongClusterOptions(max_gallery=3)


@pytest.mark.parametrize("old", ["perplexity", "tsne_dims", "log_projector", "memory_budget_mb", "query_indices"])
def test_a_flat_argument_of_the_never_released_0_1_is_a_type_error(old):
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{old}'"):
        FeatureVisualizer(**{old: 1})


def test_an_unknown_keyword_is_a_type_error_as_python_gives_it():
    message = r"FeatureVisualizer.__init__\(\) got an unexpected keyword argument 'perplexty'"
    with pytest.raises(TypeError, match=message):
        FeatureVisualizer(perplexty=20)


def test_groups_take_true_false_and_mappings():
    on = FeatureVisualizer(projector=True, wrong_cluster={"min_share": 0.7}, outputs={"confusion": False})
    assert on.projector == ProjectorOptions() and on.wrong_cluster == WrongClusterOptions(min_share=0.7)
    assert on.outputs == OutputOptions(confusion=False)
    off = FeatureVisualizer(maps=False, projector=False, wrong_cluster=False)
    assert off.maps.every_n_epochs is None and off.projector is None and off.wrong_cluster is None


def test_options_are_frozen_and_normalised():
    maps = MapOptions(dims=[3, 2, 3], perplexity=12)
    assert maps.dims == (2, 3) and isinstance(maps.perplexity, float)
    with pytest.raises(AttributeError):
        maps.perplexity = 5.0  # type: ignore[misc]
