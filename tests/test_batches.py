import pytest
import torch

from lightning_featviz.batches import read_batch


def test_reads_tuples_dicts_and_custom_extractors():
    images, labels = torch.rand(2, 3, 4, 4), torch.tensor([1, 0])
    assert read_batch((images, labels)).indices is None
    batch = read_batch({"image": images, "label": labels, "index": torch.tensor([5, 6])})
    assert batch.labels.tolist() == [1, 0] and batch.indices.tolist() == [5, 6]
    custom = read_batch({"a": images, "b": [1, 0]}, extractor=lambda b: (b["a"], b["b"]))
    assert custom.labels.dtype == torch.int64 and custom.images.shape == (2, 3, 4, 4)
    assert read_batch((torch.rand(2, 4, 4), labels)).images.shape == (2, 1, 4, 4)


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ({"pixels": torch.rand(2, 3, 4, 4)}, "batch_extractor"),
        (torch.rand(2, 3, 4, 4), "batch_extractor"),
        ((torch.rand(2, 3, 4, 4), torch.tensor([0.5, 1.0])), "integer class ids.*batch_extractor"),
        ((torch.rand(2, 3, 4, 4), torch.tensor([[0, 1], [1, 0]])), "integer class ids"),
        ((torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1])), "float tensor"),
        ((torch.rand(2, 3, 4, 4), torch.tensor([0, 1, 2])), "one label per image"),
    ],
)
def test_unreadable_batches_say_how_to_pass_an_extractor(batch, match):
    with pytest.raises(TypeError, match=match):
        read_batch(batch)
