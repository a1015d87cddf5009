"""int8 search: the quantized layers hold int8 weights, stay within their quantization error, and a
fitted model searches as in fp32; int8 is refused for training and off the CPU."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from test_cli_translate import WORDS, make_checkpoint, translate
from test_model import swapped_pairs

from nmt.attention import ConcatScorer
from nmt.cli import train as train_cli
from nmt.config import AttentionConfig, ConfigError, DecodeConfig, ModelConfig
from nmt.model import Seq2Seq
from nmt.precision import INT8, check_precision
from nmt.quantize import Int8Linear, Int8LSTM, is_quantized, quantize_model
from nmt.search import decode
from nmt.tokenizer import SPECIALS, WordTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = {
    "general-global": {"score": "general", "align": "global"},
    "concat-local-p-bidirectional": {"score": "concat", "align": "local-p", "bidirectional": True},
    "location-no-feed": {"score": "location", "align": "global", "input_feed": False},
    "no-attention-tied": {"align": "none", "embed": 6, "tie_embeddings": True},
}


def float_model(make_model, seed: int = 0, **fields: object) -> Seq2Seq:
    torch.manual_seed(seed)
    return make_model(**fields).float()


def quantized_copy(model: Seq2Seq) -> Seq2Seq:
    return quantize_model(copy.deepcopy(model))


def is_int8_per_channel(weight: torch.Tensor) -> bool:
    return weight.dtype == torch.qint8 and weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)


@pytest.mark.usefixtures("seeded")
def test_int8_linear_stays_within_its_quantization_bound() -> None:
    """|ŷ - y| <= (s_w/2)·|x|₁ + (s_x/2)·|w|₁ + n·s_w·s_x/4 per output: weights rounded to one symmetric
    scale s_w = max|w_j| / 127.5 per row, inputs to 7 bits over their range, s_x = (max - min) / 127."""
    for _ in range(10):
        linear, x = torch.nn.Linear(24, 40), torch.randn(5, 24) * 3
        weight = linear.weight.detach()
        s_w = weight.abs().amax(1) / 127.5  # (out,)
        s_x = (x.max().clamp(min=0) - x.min().clamp(max=0)) / 127
        bound = s_w / 2 * x.abs().sum(1, keepdim=True) + s_x / 2 * weight.abs().sum(1) + 24 * s_w * s_x / 4
        with torch.no_grad():
            error = (Int8Linear.from_float(linear)(x) - linear(x)).abs()  # (5, out)
        assert (error <= bound * 1.001 + 1e-6).all()
        assert error.max() > 0  # it is quantized, not a float product


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("bias", [True, False])
def test_an_int8_layers_rows_give_its_columns(bias: bool) -> None:
    """A shortlist's rows, packed with a unit scale and each row's scale applied after the product,
    give the whole layer's outputs at those rows up to float rounding, in any order of rows."""
    layer = Int8Linear.from_float(torch.nn.Linear(32, 50, bias=bias))
    x, index = torch.randn(7, 32) * 2, torch.tensor([0, 3, 4, 17, 49, 12])
    with torch.no_grad():
        torch.testing.assert_close(layer.rows(index)(x), layer(x)[:, index], rtol=1e-5, atol=1e-6)
        assert layer.rows(index[:0])(x).shape == (7, 0)


@pytest.mark.parametrize("fields", CONFIGS.values(), ids=CONFIGS.keys())
def test_the_weight_matrices_become_int8_per_channel(make_model, fields) -> None:
    model = quantized_copy(float_model(make_model, **fields))
    assert is_quantized(model)
    linears = [m for m in model.modules() if isinstance(m, Int8Linear)]
    assert model.generator in linears and (model.decoder.W_c is None or model.decoder.W_c in linears)
    assert all(is_int8_per_channel(m.weight_and_bias()[0]) for m in linears)
    floats = [(parent, m) for parent in model.modules() for m in parent.children() if isinstance(m, torch.nn.Linear)]
    assert all(isinstance(parent, ConcatScorer) or m.out_features == 1 for parent, m in floats)  # W_a halves, v_a, v_p
    encoder_weights = model.encoder.rnn.get_weight().values()
    assert len(encoder_weights) == 2 * 2 * (2 if fields.get("bidirectional") else 1)
    assert all(is_int8_per_channel(w) for w in encoder_weights)
    assert isinstance(model.decoder.rnn, Int8LSTM) and len(model.decoder.rnn.layers) == 2
    for packed_ih, packed_hh, *_ in model.decoder.rnn.layers:
        for packed in (packed_ih, packed_hh):
            assert is_int8_per_channel(torch.ops.quantized.linear_unpack(packed)[0])


@pytest.mark.parametrize("fields", CONFIGS.values(), ids=CONFIGS.keys())
def test_search_runs_both_lstms_through_the_quantized_kernels(make_model, fields, monkeypatch) -> None:
    """The encoder calls the dynamic quantized LSTM once per batch; every decoder step runs
    :meth:`Int8LSTM.step` (input feeding: prepared once, then stepped; without it, a sequence of one)."""
    model = quantized_copy(float_model(make_model, **fields))
    calls = {"encoder": 0, "decoder": 0}
    for name, cls, method in (("encoder", type(model.encoder.rnn), "forward"), ("decoder", Int8LSTM, "step")):
        original = getattr(cls, method)

        def counted(self, *args, name=name, original=original):
            calls[name] += 1
            return original(self, *args)

        monkeypatch.setattr(cls, method, counted)
    src, lengths = torch.randint(4, 11, (3, 5)), torch.tensor([5, 4, 2])
    decode(model, src, lengths, config=DecodeConfig(beam=2, max_len=4, min_len_ratio=1.0, precision=INT8))
    assert calls == {"encoder": 1, "decoder": 5}  # max_len 4 tokens and EOS


@pytest.mark.parametrize("fields", CONFIGS.values(), ids=CONFIGS.keys())
def test_peaked_random_models_search_as_in_fp32(make_model, fields) -> None:
    """Output weights scaled up give wide margins between the best tokens, which int8's error (about 1%
    of a product) does not cross: every sentence's best hypothesis is the fp32 one."""
    model = float_model(make_model, seed=3, **fields)
    with torch.no_grad():
        model.generator.weight.mul_(10)
    torch.manual_seed(1)
    src, lengths = torch.randint(4, 11, (8, 7)), torch.tensor([7, 7, 6, 5, 5, 4, 2, 1])
    src = src.masked_fill(torch.arange(7) >= lengths.unsqueeze(1), 0)
    config = DecodeConfig(beam=3, max_len=10)
    want = decode(model, src, lengths, config=config)
    got = decode(quantized_copy(model), src, lengths, config=DecodeConfig(beam=3, max_len=10, precision=INT8))
    assert [h[0].tokens for h in got] == [h[0].tokens for h in want]


@pytest.fixture(scope="module")
def fitted() -> tuple[Seq2Seq, tuple[torch.Tensor, ...]]:
    """A 2-layer model fitted to 32 pairs of the neighbour-swapping task, and the pairs: Adam until every
    target's teacher-forced probability is at least 0.9 (350-450 steps, CPU kinds differ; about 5 s)."""
    torch.manual_seed(0)
    config = ModelConfig(embed=16, hidden=32, layers=2, dropout=0.0, init=0.1, attention=AttentionConfig())
    model = Seq2Seq(config=config, src_vocab=11, tgt_vocab=11).train()
    pairs = swapped_pairs(32, torch.Generator().manual_seed(0))
    src, src_lengths, tgt_in, tgt_out = pairs
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for _ in range(800):
        logits, _ = model(src, src_lengths, tgt_in)
        loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=0)
        target = torch.softmax(logits, -1).gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1)[tgt_out != 0]
        if target.min() >= 0.9:
            break
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    torch.set_num_threads(threads)
    return model.eval(), pairs


@pytest.mark.slow
@pytest.mark.parametrize("beam", [1, 4])
def test_a_fitted_model_searches_as_in_fp32(fitted, beam: int) -> None:
    """Every fitted sentence gets the fp32 output, its score within 0.02 (0.004 measured on this seed)."""
    model, (src, src_lengths, _, _) = fitted
    want = decode(model, src, src_lengths, config=DecodeConfig(beam=beam))
    got = decode(quantized_copy(model), src, src_lengths, config=DecodeConfig(beam=beam, precision=INT8))
    assert [h[0].tokens for h in got] == [h[0].tokens for h in want]
    assert max(abs(g[0].score - w[0].score) for g, w in zip(got, want, strict=True)) < 0.02


@pytest.mark.slow
def test_a_fitted_models_probabilities_stay_within_two_points(fitted) -> None:
    """Teacher forced, every probability moves by less than 0.02 (0.004 measured): int8 rounds each
    weight row and input to ~1/255 and ~1/127 of its range, a relative error that three products
    and two LSTM layers compound to about a percent of a logit."""
    model, (src, src_lengths, tgt_in, _) = fitted
    with torch.no_grad():
        want = torch.softmax(model(src, src_lengths, tgt_in)[0], -1)
        got = torch.softmax(quantized_copy(model)(src, src_lengths, tgt_in)[0], -1)
    assert (got - want).abs().max() < 0.02


def test_int8_is_refused_for_training_and_off_the_cpu(config, capsys) -> None:
    with pytest.raises(ConfigError, match=r"train\.precision=int8 is for search only"):
        check_precision(INT8, None, key="train.precision", search=False)
    with pytest.raises(ConfigError, match=r"decode\.precision=int8 runs on the CPU only"):
        check_precision(INT8, torch.device("cuda"), key="decode.precision", search=True)
    check_precision(INT8, torch.device("cpu"), key="decode.precision", search=True)
    for override in ("train.precision=int8", "decode.precision=int8"):
        assert train_cli.main(["--config", str(config), override]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "int8" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="float32 model in eval mode"):
        quantize_model(Seq2Seq(config=ModelConfig(), src_vocab=9, tgt_vocab=9))  # in training mode


def test_translate_with_int8(tmp_path, capsys, monkeypatch) -> None:
    checkpoint = str(make_checkpoint(tmp_path / "model.pt", WordTokenizer(words=[*SPECIALS, *WORDS])))
    argv = ["--checkpoint", checkpoint, "--precision", "int8", "--device", "cpu", "--min-len-ratio", "0.5"]
    status, out, _ = translate(argv, b"the cat sat\n\na dog ran\n", capsys, monkeypatch)
    assert status == 0
    got = out.split("\n")
    assert len(got) == 4 and got[0] and got[1] == "" and got[2] and got[3] == ""
