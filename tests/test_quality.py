"""The project's own checks, so that CI runs them with the tests: lint, types, docs build, docs in sync."""

import dataclasses
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_featviz import FeatureVisualizer
from lightning_featviz.options import GROUPS
from lightning_featviz.report.settings import UNRANKED_KINDS

ROOT = Path(__file__).parent.parent


def _run(*command, timeout=600):
    result = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def test_ruff_finds_nothing():
    _run("ruff", "check", ".")
    _run("ruff", "format", "--check", ".")


@pytest.mark.slow
def test_mypy_finds_nothing():
    _run("mypy")  # configured in pyproject.toml


def test_docs_build_without_warnings(tmp_path):
    _run("mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"))
    assert (tmp_path / "site" / "tags" / "index.html").exists()


def test_every_argument_of_the_callback_is_documented():
    api = (ROOT / "docs" / "api.md").read_text()
    for name in inspect.signature(FeatureVisualizer).parameters:
        assert re.search(rf"\| [^|]*`{name}`", api), f"argument {name!r} is not in docs/api.md's table"
        assert f"    {name}=" in api, f"argument {name!r} is not in docs/api.md's signature"


def test_every_option_of_every_group_is_documented_and_api_md_shows_each_group():
    api = (ROOT / "docs" / "api.md").read_text()
    for name, kind in GROUPS.items():
        assert f"### `{name}`\n\n::: lightning_featviz.options.{kind.__name__}" in api, name
        documented = re.findall(r"^        (\w+):", kind.__doc__ or "", flags=re.MULTILINE)
        assert documented == [field.name for field in dataclasses.fields(kind)], kind.__name__


def test_every_logged_kind_is_documented():
    tags = (ROOT / "docs" / "tags.md").read_text()
    ranked = [
        "knn_purity",
        "knn_accuracy",
        "purity_of_class",
        "tsne_trustworthiness",
        "tsne_purity",
        "wrong_cluster_share",
    ]
    for kind in ranked:
        assert f"`featviz/{kind}@{{k}}/" in tags, kind
    for kind in UNRANKED_KINDS:
        assert f"featviz/{kind}/" in tags, kind
    for picture in re.findall(r"\]\((images/[^)]+)\)", tags):
        assert (ROOT / "docs" / picture).is_file(), picture


def test_every_public_name_imports_and_the_package_does_not_import_lightning_until_asked():
    code = (
        "import sys, lightning_featviz as f\n"
        "assert 'pytorch_lightning' not in sys.modules, 'imported at once'\n"
        "assert f.__all__ == sorted(f._MODULE_OF), 'the two lists differ'\n"
        "assert all(getattr(f, name) is not None for name in f.__all__)\n"
        "assert f.FeatureVisualizer.__module__ == 'lightning_featviz.callback'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
