"""The C++ engine against the PyTorch reference (training.model), through sage_edge.Engine.

Tiny random-init models (d 64, 3 layers) of every attention mode and two DSMR schedules with short
horizons, so that 4 000 tokens of real Bach chorales wrap every ring memory many times. The
weights are scaled up from the GPT-2 init so that attention and the logits are far from uniform
(a near-zero model would make any engine look exact).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from sage_edge import ModelFormatError, _engine
from sage_edge.engine import Engine, NoteEvent, SamplingParams
from training.export import export
from training.model import ModelConfig, SageModel, full, two_scale

N_TOKENS = 4000
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; more only contend on a shared CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def piece_tokens(tokenizer, chorale_paths) -> np.ndarray:
    """4 000 tokens of real chorales, whole pieces one after another."""
    ids: list[int] = []
    for path in chorale_paths:
        ids += tokenizer.encode(path)
        if len(ids) >= N_TOKENS:
            break
    assert len(ids) >= N_TOKENS, "the chorale fixtures hold fewer than 4 000 tokens"
    return np.asarray(ids[:N_TOKENS], dtype=np.int64)


def tiny_model(tokenizer, attention: str, schedule: str, seed: int = 0) -> SageModel:
    n_heads = 4
    n_kv_heads = 4 if attention == "mha" else 2
    horizons = full(3, 32) if schedule == "full" else two_scale(3, 1, 32, 8)
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        n_layers=3,
        d_model=64,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        d_ff=96,
        attention=attention,
        families=list(tokenizer.families),
        horizons=list(horizons.horizons),
        d_head=16,
    )
    torch.manual_seed(seed)
    model = SageModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.mul_(10.0)  # std 0.2: sharp attention, logits of a few units
            else:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))  # norm gains that matter
    return model


def reference_logits(model: SageModel, ids: np.ndarray, segment: int = 500) -> np.ndarray:
    """The reference forward over the whole sequence, streamed in segments (exact by design;
    the first segment is also checked against the plain full-sequence forward)."""
    ids_t = torch.as_tensor(ids)[None]
    memory = model.init_memory(1)
    out = []
    with torch.no_grad():
        for start in range(0, len(ids), segment):
            logits, memory = model.forward_segment(ids_t[:, start : start + segment], memory)
            out.append(logits[0])
        whole = model(ids_t[:, :segment])[0]
    streamed = torch.cat(out)
    assert (streamed[:segment] - whole).abs().max() <= 1e-4
    return streamed.numpy()


def export_model(model, tokenizer, quant: str, path: Path) -> Path:
    export(model, tokenizer.to_json(), quant, path, {"test": "test_engine"})
    return path


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("schedule", ["full", "two_scale"])
@pytest.mark.parametrize("attention", ["mha", "gqa", "askv"])
def test_f32_logits_match_the_reference(
    attention, schedule, tokenizer, piece_tokens, tmp_path
) -> None:
    model = tiny_model(tokenizer, attention, schedule)
    expected = reference_logits(model, piece_tokens)
    # The reference holds its keys and values in f32: so does this engine's memory.
    engine = Engine(export_model(model, tokenizer, "f32", tmp_path / "m.sage"), kv_memory="f32")
    assert engine.info["attention"] == attention
    assert engine.info["horizons"] == list(model.config.horizons)
    session = engine.session(seed=0)
    got = session.feed(piece_tokens, all_logits=True)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.abs(expected).max() > 1.0  # the model is not trivially flat
    assert np.abs(got - expected).max() <= 1e-4
    assert session.position == N_TOKENS

    # Token by token (the decode path) matches the block (the prefill path) bit for bit.
    session.reset()
    stepped = np.stack([session.feed([t]) for t in piece_tokens[:300]])
    np.testing.assert_array_equal(stepped, got[:300])


@pytest.mark.parametrize(("attention", "schedule"), [("askv", "two_scale"), ("mha", "full")])
def test_q8_0_stays_close_to_the_reference(
    attention, schedule, tokenizer, piece_tokens, tmp_path
) -> None:
    model = tiny_model(tokenizer, attention, schedule, seed=1)
    expected = reference_logits(model, piece_tokens)
    engine = Engine(export_model(model, tokenizer, "q8_0", tmp_path / "m.sage"))
    assert engine.info["quantization"] == "q8_0"
    got = engine.session().feed(piece_tokens, all_logits=True)
    p_log, q_log = log_softmax(expected), log_softmax(got)
    kl = (np.exp(p_log) * (p_log - q_log)).sum(axis=-1)
    assert kl.mean() <= 0.01, f"mean KL {kl.mean():.4f} nats"


@pytest.fixture(scope="module")
def q8_model_path(tokenizer, tmp_path_factory) -> Path:
    model = tiny_model(tokenizer, "askv", "two_scale", seed=2)
    return export_model(model, tokenizer, "q8_0", tmp_path_factory.mktemp("q8") / "askv.sage")


def test_every_kernel_path_generates_the_same_tokens(q8_model_path, tokenizer) -> None:
    bos = tokenizer.id_of("BOS_None")
    script = textwrap.dedent(
        f"""
        from sage_edge.engine import Engine, SamplingParams
        session = Engine({str(q8_model_path)!r}).session(seed=7)
        session.feed([{bos}])
        print(session.generate(300, SamplingParams(temperature=1.0, top_p=0.95)))
        """
    )
    outputs = {}
    for kernel in _engine.available_kernels():
        env = {**os.environ, "SAGE_EDGE_KERNEL": kernel}
        result = subprocess.run(
            [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        outputs[kernel] = result.stdout
    assert "scalar" in outputs and len(set(outputs.values())) == 1, outputs

    env = {**os.environ, "SAGE_EDGE_KERNEL": "no_such_path"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode != 0 and "no_such_path" in result.stderr


def test_generation_gives_notes_and_reset_replays_the_seed(q8_model_path, tokenizer) -> None:
    engine = Engine(q8_model_path)
    session = engine.session(seed=3, programs=[52, 53])
    session.feed([tokenizer.id_of("BOS_None")])
    sampling = SamplingParams(temperature=0.9, top_k=50, top_p=0.95, min_p=0.01)
    tokens = session.generate(400, sampling)
    assert len(tokens) == 400 and session.position == 401
    events = session.pop_events()
    assert events and all(isinstance(e, NoteEvent) for e in events)
    assert {e.program for e in events} <= {52, 53}
    assert all(0 <= e.pitch <= 127 and e.duration > 0 for e in events)
    assert session.pop_events() == []
    session.reset()
    session.feed([tokenizer.id_of("BOS_None")])
    assert session.generate(400, sampling) == tokens
    # sample() does not feed: greedy sampling gives the best allowed token of the last logits.
    before = session.position
    best = masked_argmax(session.feed([]), session.allowed_next())
    assert session.sample(SamplingParams(temperature=0.0)) == best
    assert session.position == before


def masked_argmax(logits: np.ndarray, allowed: np.ndarray) -> int:
    return int(np.argmax(np.where(allowed, logits, -np.inf)))


def test_greedy_generation_is_the_argmax_of_the_masked_logits(q8_model_path, tokenizer) -> None:
    """Greedy decoding, computed here from the logits and the grammar mask and fed back token by
    token, against the engine's own loop."""
    engine = Engine(q8_model_path)
    bos = tokenizer.id_of("BOS_None")
    generated = engine.session(seed=0)
    generated.feed([bos])
    greedy = generated.generate(300, SamplingParams(temperature=0.0))

    stepped = engine.session(seed=0)
    logits = stepped.feed([bos])
    expected, masked_out_best = [], 0
    for _ in range(300):
        allowed = stepped.allowed_next()
        token = masked_argmax(logits, allowed)
        masked_out_best += not allowed[int(np.argmax(logits))]
        expected.append(token)
        logits = stepped.feed([token])
    assert greedy == expected
    assert masked_out_best > 0  # the mask decided some tokens, so a maskless argmax would differ


def program_of(track) -> int:
    return -1 if track.is_drum else int(track.program)


def test_events_match_the_tokenizer_decoding(q8_model_path, tokenizer, piece_tokens) -> None:
    ids = piece_tokens[:1500]
    session = Engine(q8_model_path).session(seed=0)
    session.feed(ids)
    events = session.pop_events()
    score = tokenizer.decode(ids.tolist())
    tpq = score.ticks_per_quarter
    assert tpq == tokenizer.ticks_per_quarter
    # Both sides divide the same integer ticks by the same tpq in double precision, so onsets and
    # durations are exact: a duration one tick off is a different note, not a rounding error.
    notes = sorted(
        (n.time / tpq, n.duration / tpq, n.pitch, n.velocity, program_of(track))
        for track in score.tracks
        for n in track.notes
    )
    decoded = sorted((e.time, e.duration, e.pitch, e.velocity, e.program) for e in events)
    assert len(decoded) == len(notes) > 100
    for index, (got, expected) in enumerate(zip(decoded, notes, strict=True)):
        assert got == expected, f"note {index}: engine {got}, tokenizer {expected}"


def ring_bytes(horizons: list[int], n_kv_heads: int, d_head: int, kv_memory: str) -> int:
    """docs/design.md: the memory of a session's rings is Σ h_l × G × (key, value) × a row: d_h
    floats, or d_h int8 and one float scale."""
    row = {"f32": d_head * 4, "int8": d_head + 4}[kv_memory]
    return sum(horizons) * n_kv_heads * 2 * row


def test_info_and_memory(q8_model_path, tokenizer, tmp_path) -> None:
    engine = Engine(q8_model_path)
    info = engine.info
    for key in ("parameters", "quantization", "n_layers", "n_heads", "n_kv_heads", "attention"):
        assert key in info
    assert info["horizons"] == [32, 8, 8] and info["budget"] == 48
    assert info["kernel"] in _engine.available_kernels()
    G, d_head = info["n_kv_heads"], info["d_head"]
    assert info["kv_memory"] == engine.kv_memory == _engine.DEFAULT_KV_MEMORY
    assert info["kv_bytes"] == ring_bytes([32, 8, 8], G, d_head, engine.kv_memory)
    session = engine.session(seed=0)
    memory = session.memory
    assert memory["kv_bytes"] == ring_bytes([32, 8, 8], G, d_head, engine.kv_memory)
    assert memory["weights_bytes"] == q8_model_path.stat().st_size
    assert memory["total_bytes"] > memory["kv_bytes"] + memory["activation_bytes"]

    # Fixed at creation: 1 000 tokens, many times every horizon, change no byte of it.
    session.feed([tokenizer.id_of("BOS_None")])
    session.generate(1000, SamplingParams(temperature=1.0))
    assert session.memory == memory

    # The same model with every layer's horizon 32: only the rings grow, by the formula's bytes.
    full_model = tiny_model(tokenizer, "askv", "full", seed=2)
    full_path = export_model(full_model, tokenizer, "q8_0", tmp_path / "full.sage")
    full_memory = Engine(full_path).session().memory
    grown = ring_bytes([32, 32, 32], G, d_head, engine.kv_memory) - ring_bytes(
        [32, 8, 8], G, d_head, engine.kv_memory
    )
    assert full_memory["kv_bytes"] - memory["kv_bytes"] == grown
    assert full_memory["total_bytes"] - memory["total_bytes"] == grown
    assert full_memory["activation_bytes"] == memory["activation_bytes"]


def test_int8_kv_memory(q8_model_path, tokenizer, piece_tokens) -> None:
    """kv_memory="int8", the default: a quarter of the rings' bytes plus a scale per head and
    slot, logits close to the f32 memory's (the real model's gate: benchmarks/kv_quality.py),
    prefill equal to token-by-token feeding bit for bit, and the same names as the C API."""
    f32, int8 = Engine(q8_model_path, kv_memory="f32"), Engine(q8_model_path)
    G, d_head = int8.info["n_kv_heads"], int8.info["d_head"]
    assert int8.info["kv_memory"] == "int8" and f32.info["kv_memory"] == "f32"
    assert int8.info["kv_bytes"] == ring_bytes([32, 8, 8], G, d_head, "int8")
    session = int8.session(seed=0)
    assert session.memory["kv_bytes"] == int8.info["kv_bytes"]
    assert session.memory["total_bytes"] == int8.info["session_bytes"]
    # The rings shrink, and so does a prefill block's window, which is stored like them: the
    # longest horizon - 1 + 64 (the block) positions of one layer's key/value head (an int8
    # memory holds its values in quads of slots, so 96 of them).
    window = 32 - 1 + 64
    window_int8 = window * (d_head + 8) + (window + 3) // 4 * 4 * d_head
    assert f32.info["session_bytes"] - int8.info["session_bytes"] == (
        f32.info["kv_bytes"] - int8.info["kv_bytes"]
    ) + (window * 2 * 4 * d_head - window_int8)

    expected = f32.session(seed=0).feed(piece_tokens, all_logits=True)
    got = session.feed(piece_tokens, all_logits=True)
    p_log, q_log = log_softmax(expected), log_softmax(got)
    kl = (np.exp(p_log) * (p_log - q_log)).sum(axis=-1)
    assert 0 < kl.mean() <= 0.01, f"mean KL {kl.mean():.5f} nats"

    session.reset()
    stepped = np.stack([session.feed([t]) for t in piece_tokens[:300]])
    np.testing.assert_array_equal(stepped, got[:300])

    with pytest.raises(ValueError, match="kv memory must be f32 or int8, not 'f16'"):
        Engine(q8_model_path, kv_memory="f16")
    assert repr(int8).endswith("kv_memory='int8')")


def test_bad_arguments_raise_value_error(q8_model_path, tokenizer) -> None:
    engine = Engine(q8_model_path)
    session = engine.session(seed=0)
    with pytest.raises(RuntimeError, match="nothing has been fed"):
        session.feed([])  # no logits yet to return
    session.feed([tokenizer.id_of("BOS_None")])
    bad_sampling = [
        {"temperature": -1.0},
        {"temperature": float("nan")},
        {"top_k": -1},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"min_p": 1.0},
        {"min_p": -0.5},
    ]
    for values in bad_sampling:  # refused when made, by the engine's own check
        with pytest.raises(ValueError):
            SamplingParams(**values)
    for ids in ([-1], [engine.info["vocab_size"]], [2**40], [[1, 2]], [0.5]):
        with pytest.raises(ValueError):
            session.feed(ids)
    with pytest.raises(ValueError, match="program"):
        session.set_programs([128])
    with pytest.raises(ValueError):
        session.generate(-1)
    with pytest.raises(ValueError):
        engine.session(seed=-1)


def test_bad_files_raise_model_format_error(q8_model_path, tmp_path) -> None:
    with pytest.raises(ModelFormatError, match="does not exist"):
        Engine(tmp_path / "missing.sage")
    data = q8_model_path.read_bytes()
    truncated = tmp_path / "truncated.sage"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="truncated"):
        Engine(truncated)
    corrupted = tmp_path / "corrupted.sage"
    corrupted.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    with pytest.raises(ModelFormatError, match="checksum"):
        Engine(corrupted)
    not_a_model = tmp_path / "notes.sage"
    not_a_model.write_bytes(b"MThd" + bytes(60))
    with pytest.raises(ModelFormatError, match="magic"):
        Engine(not_a_model)


def test_default_model_missing_is_a_clear_error(monkeypatch, tmp_path) -> None:
    import sage_edge.engine as engine_module

    monkeypatch.setattr(engine_module, "DEFAULT_MODEL", tmp_path / "default.sage")
    with pytest.raises(ModelFormatError, match="default"):
        Engine()
