"""Real multi-process DDP (gloo on CPU, 2 processes) against a single process on the same data."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_featviz.runtime.distributed import broadcast_object, gather_columns

SCRIPT = Path(__file__).parent / "ddp_run.py"

# Each case is one run of ddp_run.py; all the cases of one process count run one after the other in ONE
# launch (``--then``), so the suite pays process start-up, imports and gloo set-up twice, not once per case.
# The uneven-shard runs choose their layers themselves (``layers="auto"``): one run checks both.
_UNEVEN = {"uneven": ["--auto-layers"], "uneven_background": ["--background", "--auto-layers"]}
_SEES_NOTHING = {
    f"sees_nothing_{name}": ["--rank-one-sees-nothing", "--stage", stage, *layers]
    for name, stage, layers in [("fit", "fit", []), ("validate", "validate", []), ("auto", "fit", ["--auto-layers"])]
}
_SINGLE_CASES = {"uneven": _UNEVEN["uneven"], "keeps_nothing": ["--rank-one-keeps-nothing"]}
_PAIR_CASES = {**_UNEVEN, "keeps_nothing": ["--rank-one-keeps-nothing"], **_SEES_NOTHING}


def _launch(folder: Path, devices: int, cases: dict[str, list[str]]) -> tuple[dict[str, list[dict]], str]:
    """Run every case in one launch of ``devices`` processes: each case's per-rank results, and the stderr."""
    command = [sys.executable, str(SCRIPT), "--devices", str(devices)]
    for i, (name, extra) in enumerate(cases.items()):
        command += [*(["--then"] if i else []), "--out", str(folder / f"{name}.json"), *extra]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=540, cwd=folder)
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = {
        name: [json.loads(Path(f"{folder / name}.json.rank{rank}").read_text()) for rank in range(devices)]
        for name in cases
    }
    return results, completed.stderr


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict[str, dict]:
    """Rank 0's result of each case run on one process."""
    results, _ = _launch(tmp_path_factory.mktemp("single"), 1, _SINGLE_CASES)
    return {name: ranks[0] for name, ranks in results.items()}


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[dict[str, list[dict]], str]:
    """Each case's results on two DDP processes (one per rank), and the launch's stderr."""
    return _launch(tmp_path_factory.mktemp("pair"), 2, _PAIR_CASES)


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
@pytest.mark.parametrize("case", list(_UNEVEN), ids=["in the loop", "report process"])
def test_two_processes_with_uneven_shards_match_one_process(single, pair, case):
    # 157 samples on 2 ranks: the distributed sampler repeats one; 101 kept split unevenly.
    assert len(single["uneven"]["indices"]) == 101
    assert single["uneven"]["indices"] == sorted(set(single["uneven"]["indices"]))
    _assert_same(single["uneven"], pair[0][case])


@pytest.mark.timeout(600)
def test_a_rank_that_keeps_no_sample_still_takes_part(single, pair):
    _assert_same(single["keeps_nothing"], pair[0]["keeps_nothing"])


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", list(_SEES_NOTHING), ids=["fit", "validate", "auto"])
def test_a_rank_that_sees_no_validation_batch_switches_the_callback_off_without_hanging(pair, case):
    # Lightning runs no validation hook on a rank without batches (the module opts in to empty
    # ranks), so that rank could not join the gather: the callback says so and stays out of the way.
    results, stderr = pair
    expected = (
        "allow_zero_length_dataloader_with_multiple_devices" if case.endswith("validate") else "ranks [1] see no batch"
    )
    for rank, result in enumerate(results[case]):
        said = [message for message in result["warnings"] if "FeatureVisualizer is off for this run" in message]
        assert len(said) == 1 and expected in said[0], (rank, result["warnings"])
        assert said[0] in stderr  # the user sees it
        assert result["metrics"] == {} and result["history"] == []


@pytest.mark.timeout(600)
def test_default_layers_are_chosen_alike_on_every_rank(single, pair):
    assert [row["layer"] for row in single["uneven"]["history"]] == ["input", "relu1", "pool"]
    _assert_same(single["uneven"], pair[0]["uneven"])  # (the in-the-loop run of the uneven-shards test)


def test_outside_ddp_gathering_is_the_identity():
    columns = {"indices": torch.arange(3), "vec/x": torch.ones(3, 2)}
    assert gather_columns(columns) is columns
    assert broadcast_object({"a": 1.0}) == {"a": 1.0}
