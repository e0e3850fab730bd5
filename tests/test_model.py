"""The reference model (training/model.py) against docs/design.md: the math itself, exact
streaming, position invariance, per-family key/value projections, names and validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.model import (
    ModelConfig,
    SageModel,
    full,
    schedule_from_dict,
    two_scale,
    uniform,
)

N_TOKENS = 3000


@pytest.fixture(autouse=True)
def one_thread():
    """Small matrices: a second thread only adds synchronisation (and the CPU is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def piece(tokenizer, chorale_paths) -> torch.Tensor:
    """3 000 tokens of real four-part music: whole chorales one after another."""
    ids: list[int] = []
    for path in chorale_paths:
        ids += tokenizer.encode(path)
        if len(ids) >= N_TOKENS:
            break
    assert len(ids) >= N_TOKENS
    return torch.tensor(ids[:N_TOKENS]).unsqueeze(0)


def make_model(tokenizer, attention="askv", horizons=(300, 64, 64), seed=0, d_model=64):
    n_heads = 4
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        n_layers=len(horizons),
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=n_heads if attention == "mha" else 2,
        d_ff=2 * d_model,
        attention=attention,
        families=tokenizer.families.tolist(),
        horizons=list(horizons),
    )
    torch.manual_seed(seed)
    model = SageModel(config).eval()
    with torch.no_grad():  # larger weights than the init: sharp attention, logits that differ
        for p in model.parameters():
            if p.ndim > 1:
                p.mul_(8.0)
            else:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
    return model


def stream(model: SageModel, ids: torch.Tensor, lengths) -> torch.Tensor:
    """Logits of ``ids`` fed through ``forward_segment`` in pieces of the given lengths."""
    memory = model.init_memory(ids.shape[0])
    out, start = [], 0
    for length in lengths:
        logits, memory = model.forward_segment(ids[:, start : start + length], memory)
        out.append(logits)
        start += length
    assert start == ids.shape[1]
    return torch.cat(out, dim=1)


# --------------------------------------------------------------------------------------------
# The math of docs/design.md, written out one position and one head at a time


def rmsnorm(x, gain, eps):
    return x / torch.sqrt((x * x).mean() + eps) * gain


def naive_forward(model: SageModel, ids: list[int]) -> torch.Tensor:
    c, t = model.config, model.tensors()
    H, G, d_h = c.n_heads, c.n_kv_heads, c.d_head
    slopes = [2.0 ** (-8.0 * (i + 1) / H) for i in range(H)]
    x = [t["tok_embedding"][token] for token in ids]
    for layer, h in enumerate(c.horizons):
        w = {
            name: t[f"layers.{layer}.{name}"] for name in ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
        }
        keys, values, new_x = [], [], []
        for p, token in enumerate(ids):
            u = rmsnorm(x[p], t[f"layers.{layer}.attn_norm"], c.norm_eps)
            q = (w["wq"] @ u).view(H, d_h)
            f = c.families[token] if c.attention == "askv" else 0
            keys.append((w["wk"][f] @ u).view(G, d_h))
            values.append((w["wv"][f] @ u).view(G, d_h))
            window = range(max(0, p - h + 1), p + 1)  # j in (p − h_l, p]
            heads = []
            for i in range(H):
                g = i // (H // G)
                s = torch.stack(
                    [q[i] @ keys[j][g] / math.sqrt(d_h) - slopes[i] * (p - j) for j in window]
                )
                a = torch.softmax(s, dim=0)
                heads.append(sum(a[n] * values[j][g] for n, j in enumerate(window)))
            xp = x[p] + w["wo"] @ torch.cat(heads)
            u = rmsnorm(xp, t[f"layers.{layer}.ffn_norm"], c.norm_eps)
            z = w["w1"] @ u
            new_x.append(xp + w["w2"] @ (z * torch.sigmoid(z) * (w["w3"] @ u)))
        x = new_x
    return torch.stack([t["output"] @ rmsnorm(xp, t["final_norm"], c.norm_eps) for xp in x])


@pytest.mark.parametrize("attention", ["mha", "gqa", "askv"])
def test_forward_is_the_design_math(tokenizer, piece, attention):
    model = make_model(tokenizer, attention, horizons=(9, 3), d_model=32)
    ids = piece[0, :40].tolist()
    with torch.no_grad():
        expected = naive_forward(model, ids)
        got = model(torch.tensor([ids]))[0]
    assert torch.allclose(got, expected, atol=1e-4, rtol=0), (got - expected).abs().max()


# --------------------------------------------------------------------------------------------
# Streaming is exact


@pytest.mark.parametrize("attention", ["mha", "gqa", "askv"])
@pytest.mark.parametrize("horizons", [full(3, 300).horizons, two_scale(3, 1, 300, 64).horizons])
def test_streaming_equals_full_sequence(tokenizer, piece, attention, horizons):
    model = make_model(tokenizer, attention, horizons)
    with torch.no_grad():
        whole = model(piece)
        segments = stream(model, piece, [256] * (N_TOKENS // 256) + [N_TOKENS % 256])
        # Uneven segments, then the engine's decode step (one token at a time) once every
        # layer's memory has wrapped many times.
        tail = 200
        head = [1, 7, 64, 65, 300, 301, 1000]
        head.append(N_TOKENS - tail - sum(head))
        mixed = stream(model, piece, head + [1] * tail)
    assert whole.abs().max() > 1.0  # not a trivially flat model
    assert (segments - whole).abs().max() <= 1e-4
    assert (mixed - whole).abs().max() <= 1e-4


def test_memory_reset_forgets_the_previous_piece(tokenizer, piece):
    model = make_model(tokenizer, "askv", (64, 16))
    a, b = piece[:, :500], piece[:, 500:700]
    with torch.no_grad():
        memory = model.init_memory(2)
        _, memory = model.forward_segment(torch.cat([a[:, :200], a[:, 300:500]]), memory)
        memory.reset(torch.tensor([True, False]))
        logits, _ = model.forward_segment(torch.cat([b, b]), memory)
        fresh = model(b)
    assert (logits[0] - fresh[0]).abs().max() <= 1e-5  # slot 0 starts clean
    assert (logits[1] - fresh[0]).abs().max() > 1e-2  # slot 1 still remembers its piece


# --------------------------------------------------------------------------------------------
# Position invariance


def test_same_window_same_logits_at_position_100000(tokenizer, piece):
    """The last token's logits depend on the window only: the same 128 tokens at offset 0 and
    after 100 000 other tokens (fed through the streaming path) give the same logits."""
    model = make_model(tokenizer, "askv", (64, 16), d_model=32)
    window = piece[:, -128:]  # longer than the receptive field, 64 + 16 − 1 tokens
    filler = piece[:, :500]  # short chunks: the banded attention costs chunk × (chunk + h)
    with torch.no_grad():
        at_zero = model(window)[0, -1]
        memory = model.init_memory(1)
        offset = 0
        while offset < 100_000:  # cycle through the real piece
            chunk = filler[:, : min(filler.shape[1], 100_000 - offset)]
            _, memory = model.forward_segment(chunk, memory)
            offset += chunk.shape[1]
        logits, _ = model.forward_segment(window, memory)
    assert offset == 100_000
    assert (logits[0, -1] - at_zero).abs().max() <= 1e-4
    assert at_zero.abs().max() > 1.0


# --------------------------------------------------------------------------------------------
# AS-KVHS


def test_askv_uses_each_tokens_family_projection(tokenizer, piece):
    model = make_model(tokenizer, "askv", (64, 16))
    ids = piece[:, :200]
    families = torch.tensor(tokenizer.families)[ids[0]]
    pitch = 3
    first_pitch = int(torch.nonzero(families == pitch)[0])
    assert first_pitch > 0
    with torch.no_grad():
        before = model(ids)[0]
        model.layers[0].wk[pitch].add_(torch.randn_like(model.layers[0].wk[pitch]))
        after = model(ids)[0]
    # Nothing before the first pitch token reads a pitch key; everything from it on does.
    assert (after[:first_pitch] - before[:first_pitch]).abs().max() == 0
    changed = (after - before).abs().amax(dim=-1) > 1e-3
    assert changed[first_pitch:].all()


def test_askv_with_equal_projections_is_gqa(tokenizer, piece):
    askv = make_model(tokenizer, "askv", (64, 16))
    gqa = make_model(tokenizer, "gqa", (64, 16), seed=1)
    tensors = askv.tensors()
    for layer in range(2):
        for name in (f"layers.{layer}.wk", f"layers.{layer}.wv"):
            # every family gets the program family's projection
            tensors[name] = tensors[name][2:3].expand(6, -1, -1).clone()
    askv.load_tensors(tensors)
    gqa.load_tensors(
        {name: t[:1] if name.endswith((".wk", ".wv")) else t for name, t in tensors.items()}
    )
    with torch.no_grad():
        assert (askv(piece[:, :300]) - gqa(piece[:, :300])).abs().max() <= 1e-5


# --------------------------------------------------------------------------------------------
# Tensor names and shapes (docs/format.md)


def test_tensors_have_the_file_names_and_shapes(tokenizer):
    model = make_model(tokenizer, "askv", (64, 16, 16))
    c = model.config
    V, d, H, G, d_h, d_ff = c.vocab_size, c.d_model, 4, 2, c.d_head, c.d_ff
    expected = {"tok_embedding": (V, d), "alibi_slopes": (H,), "final_norm": (d,), "output": (V, d)}
    for layer in range(3):
        expected |= {
            f"layers.{layer}.attn_norm": (d,),
            f"layers.{layer}.wq": (H * d_h, d),
            f"layers.{layer}.wk": (6, G * d_h, d),
            f"layers.{layer}.wv": (6, G * d_h, d),
            f"layers.{layer}.wo": (d, H * d_h),
            f"layers.{layer}.ffn_norm": (d,),
            f"layers.{layer}.w1": (d_ff, d),
            f"layers.{layer}.w3": (d_ff, d),
            f"layers.{layer}.w2": (d, d_ff),
        }
    tensors = model.tensors()
    assert {name: tuple(t.shape) for name, t in tensors.items()} == expected
    slopes = [2.0 ** (-8.0 * (i + 1) / H) for i in range(H)]
    assert np.allclose(tensors["alibi_slopes"].numpy(), slopes, rtol=0, atol=1e-7)
    assert make_model(tokenizer, "gqa", (8,)).tensors()["layers.0.wk"].shape[0] == 1


def test_load_tensors_round_trips_and_checks(tokenizer, piece):
    a, b = make_model(tokenizer, seed=0), make_model(tokenizer, seed=1)
    b.load_tensors({name: t.numpy() for name, t in a.tensors().items()})
    with torch.no_grad():
        assert torch.equal(a(piece[:, :100]), b(piece[:, :100]))
    tensors = a.tensors()
    with pytest.raises(ValueError, match="missing"):
        b.load_tensors({k: v for k, v in tensors.items() if k != "output"})
    with pytest.raises(ValueError, match="shape"):
        b.load_tensors(tensors | {"final_norm": torch.ones(3)})


# --------------------------------------------------------------------------------------------
# Configuration and schedules


def config_args(**overrides):
    args = dict(
        vocab_size=12,
        n_layers=2,
        d_model=32,
        n_heads=4,
        n_kv_heads=2,
        d_ff=64,
        attention="gqa",
        families=[i % 6 for i in range(12)],
        horizons=[8, 4],
    )
    return args | overrides


def test_config_defaults_and_properties():
    c = ModelConfig(**config_args())
    assert c.d_head == 8 and c.norm_eps == 1e-5 and c.n_families == 1 and c.budget == 12
    assert ModelConfig(**config_args(attention="askv")).n_families == 6
    assert ModelConfig(**config_args(d_head=24)).d_head == 24


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_kv_heads": 3}, "divide"),
        ({"attention": "mha"}, "mha needs"),
        ({"attention": "gqa", "n_kv_heads": 4}, "gqa needs"),
        ({"attention": "rope"}, "attention must be"),
        ({"horizons": [8]}, "horizons has 1"),
        ({"horizons": [8, 0]}, "at least 1"),
        ({"families": [0] * 11}, "families has 11"),
        ({"families": [6] * 12}, "family must be"),
        ({"d_model": 0}, "d_model"),
        ({"norm_eps": 0.0}, "norm_eps"),
        ({"attn_dropout": 1.0}, "attn_dropout"),
        ({"ffn_dropout": -0.1}, "ffn_dropout"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**config_args(**overrides))


def test_schedules():
    assert full(4, 512).horizons == (512,) * 4 and full(4, 512).budget == 2048
    assert two_scale(6, 2, 512, 64).horizons == (512, 512, 64, 64, 64, 64)
    assert two_scale(6, 2, 512, 64).budget == 1280
    assert uniform(6, 1280).horizons == (214, 214, 213, 213, 213, 213)
    assert uniform(6, 1280).budget == 1280
    spec = {"kind": "two_scale", "k": 2, "h_long": 512, "h_short": 64}
    assert schedule_from_dict(6, spec) == two_scale(6, 2, 512, 64)
    with pytest.raises(ValueError):
        two_scale(6, 7, 512, 64)
    with pytest.raises(ValueError):
        uniform(6, 5)
    with pytest.raises(ValueError):
        full(0, 512)
    with pytest.raises(ValueError, match="kind"):
        schedule_from_dict(6, {"kind": "triangle"})


# --------------------------------------------------------------------------------------------
# Dropout: training only


def with_dropout(model: SageModel, attn: float, ffn: float) -> SageModel:
    """The same weights in a model whose config has dropout."""
    import dataclasses

    config = dataclasses.replace(model.config, attn_dropout=attn, ffn_dropout=ffn)
    other = SageModel(config)
    other.load_state_dict(model.state_dict())
    return other


def test_dropout_changes_training_but_not_evaluation(tokenizer, piece):
    model = make_model(tokenizer)
    ids = piece[:, :200]
    reference = model(ids)
    assert model.config.attn_dropout == model.config.ffn_dropout == 0.0  # the default
    for attn, ffn in ((0.3, 0.0), (0.0, 0.3)):
        dropped = with_dropout(model, attn, ffn)
        # no parameters of its own: the same tensors, so export and the engine see no difference
        assert dropped.tensors().keys() == model.tensors().keys()
        torch.testing.assert_close(dropped.eval()(ids), reference, rtol=0, atol=0)
        dropped.train()
        torch.manual_seed(1)
        first = dropped(ids)
        torch.manual_seed(2)
        assert not torch.allclose(first, dropped(ids))  # a different mask each forward
        torch.manual_seed(1)
        torch.testing.assert_close(dropped(ids), first)  # seeded: reproducible
    model.train()  # without dropout, training mode is the same function
    torch.testing.assert_close(model(ids), reference, rtol=0, atol=0)
