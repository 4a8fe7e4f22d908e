"""Each layer's output becomes the right (B, D) vectors: ViT tokens, Swin channels-last maps, batch-first and
sequence-first RNNs and attention, tuples; and a clear error where the layout cannot be known. References are
computed by hand, by running the modules directly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import SwinTransformer, VisionTransformer, convnext_tiny, resnet18

from lightning_featviz.capture.default_layers import default_layers
from lightning_featviz.capture.hooks import ActivationCapture
from lightning_featviz.capture.layouts import LayoutError

pytestmark = pytest.mark.usefixtures("one_thread")


def capture_once(model: nn.Module, layers, x, reduction="avg", batch_size=None, call=None):
    capture = ActivationCapture(model, layers, reduction, batch_size=batch_size)
    model.eval()
    with torch.no_grad(), capture.attach():
        (call or model)(x)
    return capture.pop(), capture


def tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)


def test_vit_encoder_output_of_17_tokens_becomes_its_32_d_class_token():
    model = tiny_vit().eval()
    x = torch.rand(3, 3, 32, 32)
    head_inputs = []
    model.heads.register_forward_pre_hook(lambda module, args: head_inputs.append(args[0]))
    outputs, capture = capture_once(model, ["encoder.ln", "encoder.layers.encoder_layer_1"], x)
    assert capture.layouts["encoder.ln"].class_token
    assert outputs["encoder.ln"].shape == (3, 32)
    torch.testing.assert_close(outputs["encoder.ln"], head_inputs[0], rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the last block's tokens, by hand: the class token of its output
        tokens = model._process_input(x)
        tokens = torch.cat([model.class_token.expand(3, -1, -1), tokens], dim=1)
        block_out = model.encoder.layers(model.encoder.dropout(tokens + model.encoder.pos_embedding))
    assert block_out.shape == (3, 17, 32)
    torch.testing.assert_close(outputs["encoder.layers.encoder_layer_1"], block_out[:, 0], rtol=1e-5, atol=1e-5)


def test_vit_tokens_can_be_averaged_instead_of_the_class_token():
    model = tiny_vit().eval()
    x = torch.rand(2, 3, 32, 32)
    outputs, _ = capture_once(model, ["encoder.ln"], x, reduction={"encoder.ln": "mean"})
    with torch.no_grad():
        tokens = torch.cat([model.class_token.expand(2, -1, -1), model._process_input(x)], dim=1)
        reference = model.encoder(tokens).mean(dim=1)
    torch.testing.assert_close(outputs["encoder.ln"], reference, rtol=1e-5, atol=1e-5)


def test_swin_last_stage_channels_last_becomes_its_channel_vector():
    torch.manual_seed(0)
    model = SwinTransformer([4, 4], 16, [1, 1, 1, 1], [1, 1, 1, 2], [2, 2]).eval()
    x = torch.rand(2, 3, 64, 64)
    outputs, capture = capture_once(model, ["features.7", "features.1"], x)
    with torch.no_grad():
        stage1 = model.features[1](model.features[0](x))
        stage7 = model.features(x)
    assert stage7.shape == (2, 2, 2, 128)  # (B, H, W, C)
    assert capture.layouts["features.7"].feature_axis == -1
    torch.testing.assert_close(outputs["features.7"], stage7.mean(dim=(1, 2)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs["features.1"], stage1.mean(dim=(1, 2)), rtol=1e-5, atol=1e-5)


def test_convnext_block_internals_channels_last_and_layernorm2d_channels_first():
    torch.manual_seed(0)
    model = convnext_tiny().eval()
    x = torch.rand(2, 3, 32, 32)
    inner = "features.1.0.block.3"  # Linear on (B, H, W, C)
    outputs, _ = capture_once(model, [inner, "features.0", "features.1.0"], x)
    with torch.no_grad():
        stem = model.features[0](x)  # ends in LayerNorm2d: (B, C, H, W)
        block = model.features[1][0].block
        channels_last = block[3](block[2](block[1](block[0](stem))))
        first_block = model.features[1][0](stem)
    torch.testing.assert_close(outputs[inner], channels_last.mean(dim=(1, 2)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs["features.0"], stem.mean(dim=(2, 3)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs["features.1.0"], first_block.mean(dim=(2, 3)), rtol=1e-5, atol=1e-5)


class Recurrent(nn.Module):
    def __init__(self, batch_first: bool, bidirectional: bool = False):
        super().__init__()
        self.lstm = nn.LSTM(5, 6, batch_first=batch_first, bidirectional=bidirectional)
        self.fc = nn.Linear(6 * (1 + bidirectional), 3)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out.mean(dim=1 if self.lstm.batch_first else 0))


@pytest.mark.parametrize("reduction", ["mean", "last"])
def test_batch_first_lstm_gives_one_vector_per_sequence(reduction):
    torch.manual_seed(0)
    model = Recurrent(batch_first=True).eval()
    x = torch.randn(4, 7, 5)  # (B, T, F)
    outputs, _ = capture_once(model, ["lstm"], x, reduction={"lstm": reduction}, batch_size=4)
    with torch.no_grad():
        out, _ = model.lstm(x)
    expected = out.mean(dim=1) if reduction == "mean" else out[:, -1]
    assert outputs["lstm"].shape == (4, 6)
    torch.testing.assert_close(outputs["lstm"], expected)


@pytest.mark.parametrize("steps", [4, 9], ids=["T==B", "T!=B"])
def test_sequence_first_lstm_is_reduced_over_time_even_when_time_equals_batch(steps):
    torch.manual_seed(0)
    model = Recurrent(batch_first=False, bidirectional=True).eval()
    x = torch.randn(steps, 4, 5)  # (T, B, F)
    outputs, capture = capture_once(model, ["lstm"], x, batch_size=4)
    with torch.no_grad():
        out, _ = model.lstm(x)
    assert capture.layouts["lstm"].batch_axis == 1
    torch.testing.assert_close(outputs["lstm"], out.mean(dim=0))
    last, _ = capture_once(model, ["lstm"], x, reduction={"lstm": "last"}, batch_size=4)
    torch.testing.assert_close(last["lstm"], out[-1])


class Attention(nn.Module):
    def __init__(self, batch_first: bool):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        out, _ = self.attn(x, x, x)
        return self.norm(out)


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_tuple_output_in_both_layouts(batch_first):
    torch.manual_seed(0)
    model = Attention(batch_first).eval()
    x = torch.randn(3, 5, 8) if batch_first else torch.randn(5, 3, 8)
    outputs, _ = capture_once(model, ["attn", "norm"], x, batch_size=3)
    with torch.no_grad():
        out, _ = model.attn(x, x, x)
        normed = model.norm(out)
    axis = 1 if batch_first else 0
    torch.testing.assert_close(outputs["attn"], out.mean(dim=axis))
    torch.testing.assert_close(outputs["norm"], normed.mean(dim=axis))  # a LayerNorm inside no sequence module


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_is_averaged_over_its_sequence_axis(batch_first):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=batch_first)
    model = nn.Sequential()
    model.add_module("encoder", nn.TransformerEncoder(layer, 2, enable_nested_tensor=False))
    x = torch.randn(3, 6, 8) if batch_first else torch.randn(6, 3, 8)
    outputs, _ = capture_once(model, ["encoder", "encoder.layers.0"], x, batch_size=3)
    model.eval()
    with torch.no_grad():
        first = model.encoder.layers[0](x)
        out = model.encoder(x)
    axis = 1 if batch_first else 0
    torch.testing.assert_close(outputs["encoder"], out.mean(dim=axis))
    torch.testing.assert_close(outputs["encoder.layers.0"], first.mean(dim=axis))


class Flattener(nn.Module):
    """A conv whose output is turned into tokens by functional ops: nothing tells the layout."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x).flatten(2).transpose(1, 2)  # (B, HW, C)


def test_an_undecidable_layout_fails_naming_layer_shape_and_the_override():
    model = nn.Sequential()
    model.add_module("tokens", Flattener())
    capture = ActivationCapture(model, ["tokens"])
    with capture.attach():
        model(torch.rand(2, 3, 4, 4))
    message = r"layer 'tokens' \(Flattener, shape \(2, 16, 4\)\).*reduction=\{'tokens': 'mean'\}"
    with pytest.raises(LayoutError, match=message):
        capture.pop()


def test_a_callable_reduction_gets_the_raw_output():
    model = nn.Sequential()
    model.add_module("tokens", Flattener())
    x = torch.rand(2, 3, 4, 4)
    outputs, _ = capture_once(model, ["tokens"], x, reduction={"tokens": lambda out: out.amax(dim=1)})
    with torch.no_grad():
        reference = model.tokens(x).amax(dim=1)
    torch.testing.assert_close(outputs["tokens"], reference)


def test_a_rank_5_output_fails_with_a_hint_for_a_callable():
    model = nn.Sequential(nn.Conv3d(1, 2, 1))
    capture = ActivationCapture(model, ["0"])
    with capture.attach():
        model(torch.rand(2, 1, 3, 3, 3))
    with pytest.raises(LayoutError, match=r"layer '0' to output at most 4 dimensions.*\(2, 2, 3, 3, 3\).*mean\(dim"):
        capture.pop()


class TwoOutputs(nn.Module):
    def forward(self, x):
        return x, x * 2


def test_a_module_returning_several_tensors_fails_naming_it():
    model = nn.Sequential()
    model.add_module("pair", TwoOutputs())
    capture = ActivationCapture(model, ["pair"])
    with capture.attach():
        model(torch.rand(2, 3))
    with pytest.raises(LayoutError, match=r"layer 'pair' \(TwoOutputs\) to output one tensor.*tuple of 2 items"):
        capture.pop()


def test_a_wrong_batch_axis_is_an_error_not_a_silent_number():
    model = Recurrent(batch_first=True).eval()
    capture = ActivationCapture(model, ["lstm"], batch_size=4)
    with capture.attach(), torch.no_grad():
        model(torch.randn(7, 4, 5))  # fed sequence-first to a batch_first LSTM
    with pytest.raises(LayoutError, match=r"batch axis 0 of layer 'lstm'.*batch of 4.*\(7, 4, 6\)"):
        capture.pop()


def test_a_cls_reduction_of_a_conv_map_is_refused():
    model = resnet18().eval()
    capture = ActivationCapture(model, ["layer1"], {"layer1": "cls"})
    with capture.attach(), torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    with pytest.raises(LayoutError, match=r"reduction of layer 'layer1' to be one of .*'avg'.* but got 'cls'"):
        capture.pop()


def test_the_functional_core_example_in_the_docs_runs_as_written():
    text = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "ActivationCapture(model" in b)
    torch.manual_seed(0)
    namespace = {
        "model": resnet18().eval(),
        "images": torch.rand(2, 3, 64, 64),
        "queries": torch.randn(4, 8),
        "reference": torch.randn(20, 8),
        "vectors": torch.randn(20, 8),
        "labels": torch.arange(20) % 5,
    }
    exec(block, namespace)
    vectors = namespace["vectors"]
    assert {name: tuple(v.shape) for name, v in vectors.items()} == {"layer3": (2, 256), "avgpool": (2, 512)}
    with torch.no_grad():
        reference = namespace["model"].avgpool(
            namespace["model"].layer4(
                namespace["model"].layer3(_stem_to_layer2(namespace["model"], namespace["images"]))
            )
        )
    torch.testing.assert_close(vectors["avgpool"], reference.flatten(1))


def _stem_to_layer2(model, x):
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer2(model.layer1(x))


def test_an_mlp_default_is_its_last_hidden_layer_stored_as_it_is():
    from lightning_featviz.capture.default_layers import default_layers

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 3))
    x = torch.randn(5, 20)
    assert list(default_layers(model, x).layers) == ["input", "3"]
    outputs, _ = capture_once(model, ["1", "3"], x, batch_size=5)
    with torch.no_grad():
        hidden = model[1](model[0](x))
        torch.testing.assert_close(outputs["1"], hidden)
        torch.testing.assert_close(outputs["3"], model[3](model[2](hidden)))


def test_a_text_transformer_default_is_its_encoder_averaged_over_tokens():
    from lightning_featviz.capture.default_layers import default_layers

    class Text(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(50, 16)
            layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(16, 4)

        def forward(self, ids):
            return self.head(self.encoder(self.embed(ids)).mean(dim=1))

    torch.manual_seed(0)
    model = Text().eval()
    ids = torch.randint(0, 50, (3, 7))
    found = default_layers(model, ids)
    assert list(found.layers) == ["input", "encoder"]
    outputs, _ = capture_once(model, ["encoder"], ids, batch_size=3)
    with torch.no_grad():
        torch.testing.assert_close(outputs["encoder"], model.encoder(model.embed(ids)).mean(dim=1))


def test_an_rnn_fed_a_packed_sequence_fails_with_a_hint_for_its_hidden_state():
    model = Recurrent(batch_first=True).eval()
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(3, 4, 5), [4, 2, 1], batch_first=True)
    capture = ActivationCapture(model, ["lstm"])
    with capture.attach(), torch.no_grad():
        model.lstm(packed)
    with pytest.raises(LayoutError, match=r"'lstm' \(LSTM\).*PackedSequence.*out\[1\]\[0\]\[-1\]"):
        capture.pop()


class PrefixTokens(nn.Module):
    """A token model no library knows: 2 learned prefix tokens before 16 patch tokens, a head reading ``read``
    of the encoder's output: ``"avg"`` (the patches after the prefix), ``"max"`` (which no candidate pools),
    ``"dense"`` (``tanh`` of a Linear of the first token, as RoBERTa's head)."""

    def __init__(self, read: str):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, stride=4)
        self.prefix = nn.Parameter(torch.randn(1, 2, 16))
        layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.dense, self.head = nn.Linear(16, 16), nn.Linear(16, 3)
        self.read = read

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = self.encoder(torch.cat([self.prefix.expand(len(x), -1, -1), tokens], dim=1))
        if self.read == "dense":
            return self.head(torch.tanh(self.dense(tokens[:, 0])))
        pooled = tokens[:, 2:].mean(dim=1) if self.read == "avg" else tokens.amax(dim=1)
        return self.head(pooled)


def test_an_unknown_token_models_pooling_is_identified_from_what_its_head_reads():
    torch.manual_seed(0)
    model, x = PrefixTokens("avg").eval(), torch.rand(4, 3, 16, 16)
    found = default_layers(model, x)
    assert [known.pooling.name for known in found.identified] == ["mean[2:]"]
    encoder = next(c for c in found.candidates if c.path == "encoder")
    with torch.no_grad():
        tokens = model.encoder(
            torch.cat([model.prefix.expand(4, -1, -1), model.embed(x).flatten(2).transpose(1, 2)], 1)
        )
    torch.testing.assert_close(encoder.vectors, tokens[:, 2:].mean(dim=1))
    assert encoder.reduction == "mean[2:]"


def test_an_unknown_token_model_whose_head_reads_no_candidate_pooling_fails_naming_the_layer():
    torch.manual_seed(0)
    with pytest.raises(LayoutError, match=r"last token layer 'encoder' \(shape \(4, 18, 16\)\).*Hint: pass reduction="):
        default_layers(PrefixTokens("max").eval(), torch.rand(4, 3, 16, 16))


def test_an_unknown_token_model_whose_head_reads_a_function_of_a_layer_gets_that_layer_through_it():
    """Why: the probe looked for a pooling of the last token layer only, and failed where the head reads
    ``tanh(dense(token 0))``; now ``dense`` through ``tanh`` is the pooled layer."""
    torch.manual_seed(0)
    model, x = PrefixTokens("dense").eval(), torch.rand(4, 3, 16, 16)
    found = default_layers(model, x)
    assert list(found.layers)[-1] == "dense" and found.activations == {"dense": "tanh"} and not found.identified


def test_a_layout_decided_for_a_freed_entry_is_never_read_for_a_later_one():
    """Why: the resolver cached decisions by ``id(entry)``; the probe's entries are freed after each call, so a later
    entry at the same address read a freed one's layout (HF Swin's second stage was undecided in about one probe
    in 60). CPython reuses a freed object's address for the next one of its size: here, every round."""
    from lightning_featviz.capture.layouts import LayoutResolver, UndecidedLayout
    from lightning_featviz.capture.trace import TraceEntry

    model = nn.Sequential(nn.Identity(), nn.Linear(16, 16))
    resolver = LayoutResolver(model)
    identity, linear = model[0], model[1]
    for _ in range(20):
        undecided = TraceEntry("0", identity, (4, 16, 16), None, None, None)  # nothing tells its axes
        with pytest.raises(UndecidedLayout):
            resolver.resolve("0", undecided, [])
        del undecided
        vector = TraceEntry("1", linear, (4, 16), None, None, None)
        assert resolver.resolve("1", vector, []).kind == "vector"
