"""Each validation sample's thumbnail is made the first epoch it is kept and taken from the memo after; another
dataset (``trainer.validate`` on other images at the same indices) starts anew."""

import torch
from conftest import TinyNet, tiny_trainer
from torch.utils.data import DataLoader, Dataset

from lightning_featviz import FeatureVisualizer
from lightning_featviz.capture.bank import to_thumbnails
from lightning_featviz.capture.epoch import ValidationCapture
from lightning_featviz.capture.thumbnail_memo import ThumbnailMemo


class Inverted(Dataset):
    """The images of ``base`` in negative, the same labels at the same indices."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        image, label = self.base[index]
        return 1 - image, label


DATASET = Inverted([])  # the memos' dataset in the unit tests


def _white_maker(asked: list):
    """A ``make`` for the memo: records each rows mask it is asked for, makes white 2 x 2 thumbnails."""

    def make(rows):
        asked.append(rows.clone())
        return torch.full((int(rows.sum()), 3, 2, 2), 255, dtype=torch.uint8)

    return make


def _memo_of(indices: list[int]) -> tuple[ThumbnailMemo, torch.Tensor]:
    """A memo of one dataset holding numbered 2 x 2 thumbnails of ``indices`` (rows in the order given)."""
    memo = ThumbnailMemo()
    memo.start(DATASET)
    stored = torch.arange(len(indices) * 3 * 2 * 2, dtype=torch.uint8).view(len(indices), 3, 2, 2)
    memo.keep(torch.tensor(indices), stored)
    return memo, stored


def test_every_epochs_bank_holds_the_thumbnails_of_the_images_it_was_shown_each_made_once(
    tmp_path, small_data, monkeypatch, one_thread
):
    kept, made = [], []  # per epoch: (indices, thumbnails) of the bank; (epoch, thumbnails made)
    take_columns, thumbnails = ValidationCapture.take_columns, ValidationCapture.thumbnails

    def spy_columns(self):
        columns = take_columns(self)
        kept.append((columns["indices"].clone(), columns["thumbnails"].clone()))
        return columns

    def spy_thumbnails(self, inputs):
        made.append((len(kept), len(inputs)))
        return thumbnails(self, inputs)

    monkeypatch.setattr(ValidationCapture, "take_columns", spy_columns)
    monkeypatch.setattr(ValidationCapture, "thumbnails", spy_thumbnails)
    model, visualizer = TinyNet(), FeatureVisualizer(["conv2"], overhead=None)
    trainer = tiny_trainer(tmp_path, max_epochs=2, callbacks=[visualizer])
    trainer.fit(model, datamodule=small_data)
    val = small_data.val
    images = torch.stack([val[i][0] for i in range(len(val))])
    trainer.validate(model, DataLoader(Inverted(val), batch_size=32))

    assert len(kept) == 3
    for (indices, shown), pictures in zip(kept, [images, images, 1 - images], strict=True):
        assert len(indices) == len(val)
        assert torch.equal(shown, to_thumbnails(pictures[indices], 32))
    per_epoch = [sum(n for epoch, n in made if epoch == e) for e in range(3)]
    assert per_epoch == [len(val), 0, len(val)]  # the second epoch made none; other images are made anew


def test_the_memo_takes_what_it_knows_makes_the_rest_and_keeps_the_order_of_the_batch():
    memo, stored = _memo_of([7, 3, 5, 3])  # a repeated index (a padding sampler) is kept once
    asked: list = []
    make = _white_maker(asked)
    out = memo.thumbnails(torch.tensor([5, 9, 7, 3]), make)
    assert asked[0].tolist() == [False, True, False, False]  # only index 9 is new
    assert torch.equal(out[0], stored[2]) and torch.equal(out[2], stored[0]) and torch.equal(out[3], stored[1])
    assert bool((out[1] == 255).all())
    assert torch.equal(memo.thumbnails(torch.tensor([3, 7]), make), stored[[1, 0]]) and len(asked) == 1

    memo.start(Inverted([]))  # another dataset: nothing is known
    memo.thumbnails(torch.tensor([5]), make)
    assert asked[-1].tolist() == [True]


def test_a_dataset_that_cannot_be_weakly_referenced_is_never_remembered():
    memo = ThumbnailMemo()
    memo.start([])  # a list: no weak reference, and its id may be reused by another object later
    memo.keep(torch.tensor([0]), torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    asked: list = []
    memo.thumbnails(torch.tensor([0]), _white_maker(asked))
    assert len(asked) == 1


def test_a_pickled_memo_starts_empty():
    import pickle

    memo, _ = _memo_of([0])
    copy = pickle.loads(pickle.dumps(memo))
    copy.start(DATASET)
    asked: list = []
    copy.thumbnails(torch.tensor([0]), _white_maker(asked))
    assert len(asked) == 1


def test_consecutive_indices_take_a_slice_and_a_batch_past_the_memos_end_makes_the_rest():
    memo, stored = _memo_of([10, 11, 12, 13])
    asked: list = []
    make = _white_maker(asked)
    assert torch.equal(memo.thumbnails(torch.tensor([11, 12]), make), stored[1:3]) and not asked
    out = memo.thumbnails(torch.tensor([12, 13, 14]), make)  # 14 is past the end
    assert asked[-1].tolist() == [False, False, True]
    assert torch.equal(out[:2], stored[2:]) and bool((out[2] == 255).all())
    assert torch.equal(memo.thumbnails(torch.tensor([13, 10]), make), stored[[3, 0]])  # not in order: looked up
