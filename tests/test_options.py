"""The option groups of FeatureVisualizer, and the shim that takes the old flat arguments for one release."""

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from lightning_featviz import FeatureVisualizer, MapOptions, OutputOptions, ProjectorOptions, WrongClusterOptions
from lightning_featviz.options import DEPRECATED, GROUPS, FeatvizDeprecationWarning, new_spelling

ROOT = Path(__file__).resolve().parents[1]


def _extract(batch):
    return batch[0], batch[1]


#: A value other than the default for each old argument (with its partner where one needs one).
OLD_VALUES: dict[str, dict] = {
    "query_indices": {"query_indices": [4, 2]},
    "metric": {"metric": "cosine"},
    "reduction": {"reduction": {"pool": "flatten"}},
    "pool_size": {"pool_size": 3},
    "input_size": {"input_size": 8},
    "input_kind": {"input_kind": "sequence"},
    "reference": {"reference": "train"},
    "max_reference": {"max_reference": 50},
    "batch_extractor": {"batch_extractor": _extract},
    "image_mean": {"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.2, 0.2]},
    "image_std": {"image_std": [0.1, 0.2, 0.3], "image_mean": [0.5, 0.5, 0.5]},
    "thumbnail_size": {"thumbnail_size": 16},
    "dataloader_idx": {"dataloader_idx": 1},
    "storage_dtype": {"storage_dtype": "float16"},
    "log_neighbour_grids": {"log_neighbour_grids": False},
    "monitor_class_purity": {"monitor_class_purity": True},
    "log_confusion": {"log_confusion": False},
    "report_dir": {"report_dir": "some/folder"},
    "tsne_every_n_epochs": {"tsne_every_n_epochs": 3},
    "tsne_dims": {"tsne_dims": [3]},
    "perplexity": {"perplexity": 12},
    "tsne_backend": {"tsne_backend": "sklearn"},
    "map_samples": {"map_samples": 500},
    "log_projector": {"log_projector": False},
    "projector_every_n_epochs": {"projector_every_n_epochs": 2},
    "log_wrong_cluster": {"log_wrong_cluster": False},
    "wrong_cluster_layer": {"wrong_cluster_layer": "pool"},
    "min_share": {"min_share": 0.8},
    "max_gallery": {"max_gallery": 3},
    "background": {"background": True},
    "memory_budget_mb": {"memory_budget_mb": 64},
    "chunk_size": {"chunk_size": 256},
}


def test_every_old_argument_has_a_test_value():
    assert set(OLD_VALUES) == set(DEPRECATED)


@pytest.mark.parametrize("old", sorted(DEPRECATED))
def test_an_old_argument_warns_with_its_new_spelling_and_lands_in_its_field(old):
    with pytest.warns(FeatvizDeprecationWarning, match=re.escape(f"`{old}` is deprecated; use `{new_spelling(old)}`")):
        visualizer = FeatureVisualizer(**OLD_VALUES[old])
    group, _, name = DEPRECATED[old].partition(".")
    if not name:  # a switch: False turns the group off
        assert getattr(visualizer, group) is None
        return
    landed = getattr(getattr(visualizer, group), name)
    spelled_new = GROUPS[group](**{DEPRECATED[given].partition(".")[2]: v for given, v in OLD_VALUES[old].items()})
    assert landed == getattr(spelled_new, name)  # as the new spelling gives it
    assert landed != getattr(GROUPS[group](), name)  # not the default


def test_several_old_arguments_give_one_warning_naming_each_and_fill_one_group():
    with pytest.warns(FeatvizDeprecationWarning) as record:
        visualizer = FeatureVisualizer(perplexity=12, tsne_dims=[2], log_projector=False)
    messages = [str(w.message) for w in record if issubclass(w.category, FeatvizDeprecationWarning)]
    assert len(messages) == 1 and "`perplexity`" in messages[0] and "`tsne_dims`" in messages[0]
    assert visualizer.maps == MapOptions(perplexity=12, dims=[2]) and visualizer.projector is None


def test_the_new_spelling_gives_no_deprecation_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatvizDeprecationWarning)
        visualizer = FeatureVisualizer(maps=MapOptions(perplexity=12), wrong_cluster=WrongClusterOptions(max_gallery=3))
    assert visualizer.maps.perplexity == 12.0 and visualizer.wrong_cluster == WrongClusterOptions(max_gallery=3)


def test_an_unknown_keyword_is_a_type_error_as_python_gives_it():
    message = r"FeatureVisualizer.__init__\(\) got an unexpected keyword argument 'perplexty'"
    with pytest.raises(TypeError, match=message):
        FeatureVisualizer(perplexty=20)


def test_an_old_argument_beside_its_group_fails_naming_both():
    both = r"Expected `perplexity` or `maps`, but got both.*`maps=MapOptions\(perplexity"
    with pytest.raises(ValueError, match=both):
        FeatureVisualizer(perplexity=20, maps=MapOptions(dims=[2]))
    with pytest.raises(ValueError, match="Expected `log_projector` or `projector`, but got both"):
        FeatureVisualizer(log_projector=False, projector=ProjectorOptions(every_n_epochs=3))


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


def test_the_deprecation_warning_is_shown_by_default_filters_when_library_code_makes_the_callback(tmp_path):
    # A DeprecationWarning raised for a call made outside ``__main__`` (LightningCLI's, a user's module) is hidden
    # by Python's default filters; the shim's FutureWarning subclass is not.
    (tmp_path / "user_module.py").write_text(
        "from lightning_featviz import FeatureVisualizer\n\ndef make():\n    return FeatureVisualizer(perplexity=12)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", "import user_module; user_module.make()"],
        cwd=tmp_path,
        env={"PYTHONPATH": f"{ROOT}:{tmp_path}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "user_module.py:4: FeatvizDeprecationWarning: FeatureVisualizer: `perplexity` is deprecated" in result.stderr
