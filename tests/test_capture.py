import pytest
import torch
from torch import nn

from lightning_featviz.capture.hooks import ActivationCapture, reduce_activation, resolve_layers
from lightning_featviz.capture.inputs import reduce_input


class InPlaceNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)  # overwrites conv's output in place
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))

    def forward(self, x):
        return self.relu(self.conv(x)).sum()


def _hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("reduction", ["flatten", "avg"])
def test_captured_values_are_taken_before_an_in_place_relu(reduction):
    model = InPlaceNet()
    x = torch.tensor([[[[1.0, -2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2)
    capture = ActivationCapture(model, ["conv", "relu"], reduction=reduction)
    with capture.attach():
        model(x)
        outputs = capture.pop()
    if reduction == "flatten":
        assert outputs["conv"].tolist() == [[1.0, -2.0, 3.0, 4.0, -1.0, 2.0, -3.0, -4.0]]
        assert outputs["relu"].tolist() == [[1.0, 0.0, 3.0, 4.0, 0.0, 2.0, 0.0, 0.0]]
    else:
        assert outputs["conv"].tolist() == [[1.5, -1.5]]
        assert outputs["relu"].tolist() == [[2.0, 0.5]]
    assert not outputs["conv"].requires_grad and outputs["conv"].dtype == torch.float32
    assert _hooks(model) == 0


def test_hooks_are_removed_when_the_forward_raises():
    model = InPlaceNet()
    capture = ActivationCapture(model, ["conv"])
    with pytest.raises(RuntimeError), capture.attach():
        assert _hooks(model) >= 1
        model(torch.zeros(1, 3, 2, 2))  # wrong channel count
    assert _hooks(model) == 0


def test_a_module_reused_in_forward_keeps_its_first_call_and_warns_once():
    relu = nn.ReLU()
    model = nn.Sequential(relu, nn.Linear(2, 2), relu)
    capture = ActivationCapture(model, ["0"])
    x = torch.tensor([[-1.0, 2.0]])
    with capture.attach(), pytest.warns(UserWarning, match="runs more than once per forward") as record:
        model(x)
        first = capture.pop()
        model(x)
    assert first["0"].tolist() == [[0.0, 2.0]]
    assert len([w for w in record if "more than once" in str(w.message)]) == 1


def test_reduce_activation_shapes():
    maps = torch.randn(4, 8, 6, 6)
    assert reduce_activation(maps, "avg").shape == (4, 8)
    torch.testing.assert_close(reduce_activation(maps, "avg"), maps.mean(dim=(2, 3)))
    assert reduce_activation(maps, "adaptive", pool_size=2).shape == (4, 32)
    assert reduce_activation(maps, "flatten").shape == (4, 288)
    assert reduce_activation(torch.randn(4, 5), "avg").shape == (4, 5)
    assert reduce_input(torch.rand(2, 3, 64, 64), "image", size=16).shape == (2, 768)
    torch.testing.assert_close(reduce_input(torch.ones(1, 3, 9, 9), "image", size=3), torch.ones(1, 27))


def test_resolve_layers_accepts_paths_unique_endings_and_display_names():
    wrapper = nn.Module()
    wrapper.model = nn.Sequential()
    wrapper.model.add_module("layer3", nn.Linear(1, 1))
    wrapper.model.add_module("avgpool", nn.Identity())
    assert resolve_layers(wrapper, ["input", "layer3", "model.avgpool"]) == {
        "input": "input",
        "model.layer3": "layer3",
        "model.avgpool": "model.avgpool",
    }
    assert resolve_layers(wrapper, {"layer3": "stage 3"}) == {"model.layer3": "stage 3"}


def test_resolve_layers_names_close_matches_and_how_to_list_all():
    model = nn.Sequential()
    model.add_module("layer3", nn.Linear(1, 1))
    with pytest.raises(ValueError, match=r"got 'layer33'.*Close matches: \['layer3'\].*named_modules"):
        resolve_layers(model, ["layer33"])


def test_resolve_layers_rejects_an_ambiguous_ending():
    model = nn.Module()
    model.a, model.b = nn.Sequential(), nn.Sequential()
    model.a.add_module("relu", nn.ReLU())
    model.b.add_module("relu", nn.ReLU())
    with pytest.raises(ValueError, match=r"'relu' ends several paths: \['a.relu', 'b.relu'\]"):
        resolve_layers(model, ["relu"])


def test_close_matches_look_at_path_endings():
    wrapper = nn.Module()
    wrapper.model = nn.Sequential()
    for name in ("layer1", "layer4", "avgpool"):
        wrapper.model.add_module(name, nn.Identity())
    with pytest.raises(ValueError, match=r"Close matches: \['model.layer4', 'model.layer1'\]"):
        resolve_layers(wrapper, ["layer5"])


def test_resolve_layers_refuses_a_module_list_that_never_runs_naming_an_item():
    model = nn.Module()
    model.blocks = nn.ModuleList([nn.Linear(1, 1), nn.Linear(1, 1)])
    with pytest.raises(ValueError, match=r"'blocks' is a ModuleList, a container that is never called.*'blocks.1'"):
        resolve_layers(model, ["blocks"])


class TwoStageNet(nn.Module):
    """A conv map (pooled to (B, 4)) and a linear head whose output is stored as it is."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        features = self.relu(self.conv(x)).mean(dim=(2, 3))
        return self.head(features)


def _reference_vectors(model, x):
    """What the capture must give, computed without hooks: the conv map averaged (in its dtype), the head output as
    it is, then float32 on the CPU."""
    with torch.no_grad():
        conv = model.conv(x)
        head = model.head(torch.relu(conv).mean(dim=(2, 3)))
    return {"conv": conv.mean(dim=(2, 3)).float().cpu(), "head": head.float().cpu()}


def _capture_batches(model, batches):
    """``{layer: (B, D)}`` popped after each batch's forward, hooks attached for the forwards only."""
    capture = ActivationCapture(model, ["conv", "head"])
    popped = []
    with capture.attach():
        for x in batches:
            model(x)
            popped.append((capture._host.pending, capture.pop(), capture._host.pending))
    return popped


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_capture_gives_unpinned_float32_vectors_equal_to_a_forward_without_hooks(dtype):
    model = TwoStageNet().to(dtype)
    batches = [torch.randn(5, 3, 6, 6, generator=torch.Generator().manual_seed(seed)).to(dtype) for seed in range(3)]
    for x, (_, outputs, _) in zip(batches, _capture_batches(model, batches), strict=True):  # each batch its own
        expected = _reference_vectors(model, x)
        for name in ("conv", "head"):
            assert outputs[name].dtype == torch.float32 and outputs[name].device.type == "cpu"
            assert not outputs[name].is_pinned()  # the CPU path makes plain copies, as before
            torch.testing.assert_close(outputs[name], expected[name], rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the pinned, non-blocking copy runs only from a CUDA layer")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_capture_copies_into_pinned_memory_and_equals_a_blocking_copy(dtype):
    model = TwoStageNet().cuda().to(dtype)
    batches = [
        torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).cuda().to(dtype) for seed in range(3)
    ]
    for x, (pending, outputs, pending_after) in zip(batches, _capture_batches(model, batches), strict=True):
        assert pending and not pending_after  # the hooks did not wait for their copies; pop did
        expected = _reference_vectors(model, x)
        for name in ("conv", "head"):
            assert outputs[name].is_pinned() and outputs[name].dtype == torch.float32
            torch.testing.assert_close(outputs[name], expected[name], rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the pinned, non-blocking copy runs only from a CUDA layer")
def test_cuda_capture_is_taken_before_an_in_place_relu():
    model = InPlaceNet().cuda()
    x = torch.tensor([[[[1.0, -2.0], [3.0, 4.0]]]]).cuda()
    capture = ActivationCapture(model, ["conv", "relu"], reduction="flatten")
    with capture.attach():
        model(x)
        outputs = capture.pop()
    assert outputs["conv"].tolist() == [[1.0, -2.0, 3.0, 4.0, -1.0, 2.0, -3.0, -4.0]]
    assert outputs["relu"].tolist() == [[1.0, 0.0, 3.0, 4.0, 0.0, 2.0, 0.0, 0.0]]
