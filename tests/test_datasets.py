import pytest
import torch
from PIL import Image

from lightning_featviz.analysis.knn import neighbour_stats
from lightning_featviz.demo.datasets import ColouredDigits, stratified_split
from lightning_featviz.loading import image_folder


def test_coloured_digits_are_deterministic_balanced_and_in_range(digits_val):
    again = ColouredDigits("val", seed=0)
    assert torch.equal(digits_val.images, again.images) and torch.equal(digits_val.targets, again.targets)
    assert len(digits_val) == 1000 and digits_val.images.shape == (1000, 3, 32, 32)
    assert 0.0 <= digits_val.images.min() and digits_val.images.max() <= 1.0
    assert torch.bincount(digits_val.targets).min() > 70
    image, label = digits_val[394]
    assert image.shape == (3, 32, 32) and isinstance(label, int)
    assert not torch.equal(digits_val.images, ColouredDigits("val", seed=1).images)


def test_pixel_space_neighbours_follow_colour_not_the_digit(digits_val):
    pixels = digits_val.images.flatten(1)
    purity = neighbour_stats(pixels, digits_val.targets, k=10, num_classes=10).mean_purity
    assert purity < 0.25  # chance is 0.1: colour and brightness dominate pixel distances


def test_train_and_val_hold_different_digits():
    train = ColouredDigits("train", train_copies=1)
    assert len(train) == 797
    with pytest.raises(ValueError, match="`split`"):
        ColouredDigits("test")


def test_stratified_split_takes_a_share_of_each_class():
    labels = [0] * 10 + [1] * 5 + [2]
    train, val = stratified_split(labels, 0.2, seed=0)
    assert sorted(train + val) == list(range(16))
    assert [labels[i] for i in val].count(0) == 2 and [labels[i] for i in val].count(1) == 1
    assert 15 in train  # a class with one image stays in train
    assert stratified_split(labels, 0.2, seed=0) == (train, val)


def test_image_folder_reads_a_generated_tree(tmp_path):
    for name, colour in [("fries", (250, 200, 40)), ("sushi", (240, 240, 240))]:
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("RGB", (40, 30), colour).save(tmp_path / name / f"{i}.jpg")
    dataset = image_folder(tmp_path, image_size=24)
    assert dataset.classes == ["fries", "sushi"] and len(dataset) == 6
    image, label = dataset[4]
    assert image.shape == (3, 24, 24) and label == 1
