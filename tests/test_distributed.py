"""Real multi-process DDP (gloo on CPU, 2 processes) against a single process on the same data."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_featviz.runtime.distributed import broadcast_object, gather_columns

SCRIPT = Path(__file__).parent / "ddp_run.py"


_SINGLE: dict[tuple[str, ...], list[dict]] = {}  # one process's results by its arguments: the same run serves two tests


def _single(tmp_path, *extra):
    """The one-process run with ``extra`` arguments, run once per session."""
    if extra not in _SINGLE:
        _SINGLE[extra] = _run(tmp_path, 1, *extra)
    return _SINGLE[extra]


def _run(tmp_path, devices, *extra):
    out = tmp_path / f"result_{devices}.json"
    command = [sys.executable, str(SCRIPT), "--devices", str(devices), "--out", str(out), *extra]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return [json.loads(Path(f"{out}.rank{rank}").read_text()) for rank in range(devices)]


def _assert_same(single, ranks):
    assert single["metrics"], "the single-process run logged no featviz metric"
    for result in ranks:  # every rank logs the same values as one process does
        assert result["metrics"].keys() == single["metrics"].keys()
        for tag, value in single["metrics"].items():
            assert result["metrics"][tag] == pytest.approx(value, abs=1e-6), tag
        assert [row["layer"] for row in result["history"]] == [row["layer"] for row in single["history"]]
    assert ranks[0]["indices"] == single["indices"]  # the same samples, each once
    assert ranks[0]["wrong_cluster"] == single["wrong_cluster"]
    assert ranks[0]["dynamics"] == single["dynamics"] and single["dynamics"]["pool"]["epochs"] == [0]
    # the FEATVIZ tab's files of the DDP run hold the single process's epochs and each sample's neighbours
    assert single["dashboard"]["epochs"] == [0]
    assert ranks[0]["dashboard"] == single["dashboard"]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("background", [[], ["--background"]], ids=["in the loop", "report process"])
def test_two_processes_with_uneven_shards_match_one_process(tmp_path, background):
    # 157 samples on 2 ranks: the distributed sampler repeats one; 101 kept split unevenly.
    single = _single(tmp_path)[0]
    assert len(single["indices"]) == 101 and single["indices"] == sorted(set(single["indices"]))
    _assert_same(single, _run(tmp_path, 2, *background))


@pytest.mark.timeout(600)
def test_a_rank_that_keeps_no_sample_still_takes_part(tmp_path):
    single = _run(tmp_path, 1, "--rank-one-keeps-nothing")[0]
    _assert_same(single, _run(tmp_path, 2, "--rank-one-keeps-nothing"))


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("stage", "layers"), [("fit", []), ("validate", []), ("fit", ["--auto-layers"])], ids=["fit", "validate", "auto"]
)
def test_a_rank_that_sees_no_validation_batch_switches_the_callback_off_without_hanging(tmp_path, stage, layers):
    # Lightning runs no validation hook on a rank without batches (the module opts in to empty
    # ranks), so that rank could not join the gather: the callback says so and stays out of the way.
    out = tmp_path / "result.json"
    command = [sys.executable, str(SCRIPT), "--devices", "2", "--out", str(out), "--rank-one-sees-nothing"]
    completed = subprocess.run(
        [*command, "--stage", stage, *layers], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "FeatureVisualizer is off for this run" in completed.stderr
    expected = "ranks [1] see no batch" if stage == "fit" else "allow_zero_length_dataloader_with_multiple_devices"
    assert expected in completed.stderr
    for rank in range(2):
        result = json.loads(Path(f"{out}.rank{rank}").read_text())
        assert result["metrics"] == {} and result["history"] == []


@pytest.mark.timeout(600)
def test_default_layers_are_chosen_alike_on_every_rank(tmp_path):
    single = _run(tmp_path, 1, "--auto-layers")[0]
    assert [row["layer"] for row in single["history"]] == ["input", "relu1", "pool"]
    _assert_same(single, _run(tmp_path, 2, "--auto-layers"))


def test_outside_ddp_gathering_is_the_identity():
    columns = {"indices": torch.arange(3), "vec/x": torch.ones(3, 2)}
    assert gather_columns(columns) is columns
    assert broadcast_object({"a": 1.0}) == {"a": 1.0}
