"""The examples run as written (the food one on a generated ImageFolder; CIFAR-10 needs a download)."""

import importlib.util
from pathlib import Path

import pytest
from conftest import read_events
from torch.utils.data import Subset

from lightning_featviz.demo.datasets import ColouredDigits, save_image_folder

EXAMPLES = Path(__file__).parent.parent / "examples"


def _example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_food_example_fine_tunes_and_reports_on_an_image_folder(tmp_path, capsys):
    digits = ColouredDigits("val", seed=0)
    five = [i for i in range(200) if digits.targets[i] < 5]  # five classes, as the food data has
    names = ["hamburger", "pizza", "salad", "sushi", "fries"] + [str(d) for d in range(5, 10)]
    folder = save_image_folder(Subset(digits, five), tmp_path / "food", names)
    logdir = tmp_path / "logs"
    argv = ["--data", str(folder), "--epochs", "1", "--image-size", "32", "--batch-size", "16", "--logdir", str(logdir)]
    argv += ["--overhead", "none"]  # the schedule as written: with the budget, a 1-epoch fit's grids vary with speed
    _example("food_resnet18").main(argv)
    assert "kNN purity@10 at the last epoch" in capsys.readouterr().out
    events = read_events(logdir / "food")
    assert events.Scalars("featviz/knn_purity@10/avgpool") and events.Images("featviz/neighbours/avgpool")
    assert (logdir / "food_report" / "index.html").exists()
    assert list((logdir / "food").glob("version_0/checkpoints/*.ckpt"))  # the best-purity checkpoint


def test_the_cifar_example_parses_its_arguments():
    with pytest.raises(SystemExit) as exit_info:
        _example("cifar10").main(["--help"])
    assert exit_info.value.code == 0
