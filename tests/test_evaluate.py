"""training.evaluate on a tiny random model and two real chorales, through the C++ engine."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sage_edge._engine", reason="the C++ extension is not built")

from sage_edge.tokenizer import KIND_BAR  # noqa: E402
from training import evaluate, metrics  # noqa: E402

PIECES = ("bwv269", "bwv66.6")


@pytest.fixture(scope="module")
def test_dir(tmp_path_factory, chorale_dir):
    """A folder of two chorales, the evaluation's test pieces."""
    out = tmp_path_factory.mktemp("test_pieces")
    for name in PIECES:
        shutil.copy(chorale_dir / f"{name}.mid", out / f"{name}.mid")
    return out


@pytest.fixture(scope="module")
def report(tiny_models, test_dir):
    return evaluate.evaluate(tiny_models["q8_0"], test_dir, seed=3, max_bars=2)


def test_command_prints_every_field_as_json(tiny_models, test_dir, capsys):
    code = evaluate.main(
        ["--model", str(tiny_models["q8_0"]), "--data", str(test_dir), "--json", "--max-bars", "2"]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == "engine" and out["quantization"] == "q8_0"
    p = out["perplexity"]
    assert p["pieces"] == 2 and p["tokens"] > 1000 and p["notes"] > 100
    for key in ("nats_per_token", "perplexity", "bits_per_note"):
        assert math.isfinite(p[key]) and p[key] > 0
    c = out["continuation"]
    assert c["pieces"] == 2 and c["skipped_short"] == []
    for row in ("generated", "other_piece", "repeat_prompt"):
        assert set(c["nmsi"][row]) == {"nmsi", "chroma", "groove", "structure", "density"}
        assert 0 <= c["nmsi"][row]["nmsi"] <= 100
    for side in ("generated", "real"):
        assert set(out["distribution"][side]) == set(metrics.DISTRIBUTION_METRICS)
    assert out["decode"]["outputs"] == 2
    assert out["decode"]["share"] == 1.0  # the grammar mask keeps every output decodable
    assert out["decode"]["generated_tokens"] > 0


def test_command_prints_a_table(tiny_models, test_dir, capsys):
    evaluate.main(["--model", str(tiny_models["f32"]), "--data", str(test_dir), "--max-bars", "1"])
    out = capsys.readouterr().out
    for needle in (
        "perplexity/token",
        "bits/note",
        "generated",
        "other_piece",
        "repeat_prompt",
        "pitch_class_entropy",
        "decoded 2/2 (100.0 %)",
    ):
        assert needle in out


def test_fixed_seed_reproduces_the_report(tiny_models, test_dir, report):
    again = evaluate.evaluate(tiny_models["q8_0"], test_dir, seed=3, max_bars=2)
    for key in ("perplexity", "continuation", "distribution", "decode"):
        assert again[key] == report[key]


def test_random_model_is_no_better_than_chance(report, tokenizer):
    # Untrained weights know nothing of music: perplexity at least half the vocabulary's size.
    assert report["perplexity"]["perplexity"] > 0.5 * tokenizer.vocab_size
    # A real continuation of another chorale is closer to the truth than untrained noise.
    rows = report["continuation"]["nmsi"]
    assert rows["other_piece"]["nmsi"] > rows["generated"]["nmsi"]


def test_engine_and_reference_agree_on_the_likelihood(tiny_models, tokenizer, chorale_dir):
    ids = np.asarray(tokenizer.encode(chorale_dir / "bwv66.6.mid"))
    bos, eos = tokenizer.id_of("BOS_None"), tokenizer.id_of("EOS_None")
    engine = evaluate.EngineBackend(tiny_models["f32"])
    reference = evaluate.ReferenceBackend(tiny_models["f32"])
    nll_engine, n = evaluate.piece_nll(engine.session(0), ids, bos, eos)
    nll_reference, m = evaluate.piece_nll(reference.session(0), ids, bos, eos)
    assert n == m == len(ids) + 1
    assert nll_engine == pytest.approx(nll_reference, rel=1e-4)


def test_generate_bars_stops_at_the_next_bar(tiny_models, tokenizer, chorale_dir):
    kinds = tokenizer.token_table()["kind"]
    ids = np.asarray(tokenizer.encode(chorale_dir / "bwv269.mid"))
    prompt = ids[: evaluate.bar_starts(ids, kinds)[4]]
    session = evaluate.EngineBackend(tiny_models["q8_0"]).session(1)
    session.feed([tokenizer.id_of("BOS_None"), *prompt.tolist()])
    cont = evaluate.generate_bars(
        session, 1, 5000, kinds, tokenizer.id_of("EOS_None"), {"temperature": 1.0, "top_p": 1.0}
    )
    bars_in_output = int((kinds[np.asarray(cont.ids, dtype=np.int64)] == KIND_BAR).sum())
    assert bars_in_output == cont.bars
    if cont.ended == "bars":
        assert cont.bars == 1


def test_repeat_bars_cycles_the_prompt():
    prompt = metrics.notes_from_arrays([0, 4, 5], [1, 1, 1], [60, 62, 64], bars=[0, 4, 8])
    repeated = evaluate.repeat_bars(prompt, 3)
    np.testing.assert_array_equal(repeated.bars, [0, 4, 8, 12])
    np.testing.assert_array_equal(repeated.onset, [0, 4, 5, 8])
    np.testing.assert_array_equal(repeated.pitch, [60, 62, 64, 60])


def test_a_folder_without_music_is_refused(tmp_path, tiny_models):
    with pytest.raises(ValueError, match="no test pieces"):
        evaluate.evaluate(tiny_models["q8_0"], tmp_path)
