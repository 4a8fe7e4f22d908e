import pytest
import torch

from lightning_featviz.capture.batches import read_batch


def test_reads_tuples_dicts_and_custom_extractors():
    images, labels = torch.rand(2, 3, 4, 4), torch.tensor([1, 0])
    assert read_batch((images, labels)).indices is None
    batch = read_batch({"image": images, "label": labels, "index": torch.tensor([5, 6])})
    assert batch.labels.tolist() == [1, 0] and batch.indices.tolist() == [5, 6]
    custom = read_batch({"a": images, "b": [1, 0]}, extractor=lambda b: (b["a"], b["b"]))
    assert custom.labels.dtype == torch.int64 and custom.inputs.shape == (2, 3, 4, 4)
    assert read_batch((torch.rand(2, 4, 4), labels)).inputs.shape == (2, 4, 4)  # its kind is told with the model


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ({"pixels": torch.rand(2, 3, 4, 4)}, "batch_extractor"),
        (torch.rand(2, 3, 4, 4), "batch_extractor"),
        ((torch.rand(2, 3, 4, 4), torch.tensor([0.5, 1.0])), "integer class ids.*batch_extractor"),
        ((torch.rand(2, 3, 4, 4), torch.tensor([[0, 1], [1, 0]])), "integer class ids"),
        (([[0.1, 0.2], [0.3, 0.4]], torch.tensor([0, 1])), "tensor with a batch dimension.*batch_extractor"),
        ((torch.rand(2, 3, 4, 4), ["cat", "dog"]), "strings such as 'cat'.*class_names"),
        ((torch.rand(2, 3, 4, 4), torch.tensor([0, 1, 2])), "one label per input"),
    ],
)
def test_unreadable_batches_say_how_to_pass_an_extractor(batch, match):
    with pytest.raises(TypeError, match=match):
        read_batch(batch)
