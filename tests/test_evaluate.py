"""training.evaluate on a tiny random model and two real chorales, through the C++ engine."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sage_edge._engine", reason="the C++ extension is not built")

from sage_edge.engine import SamplingParams  # noqa: E402
from sage_edge.vocab import Kind  # noqa: E402
from training import evaluate, metrics, music_theory  # noqa: E402

PIECES = ("bwv269", "bwv66.6")
# A small music-theory section: 2 pieces of 4 bars, a 32-bar run, 1 seed of 1 bar per family.
SMALL_MUSIC = evaluate.MusicOptions(
    pieces=2, bars=4, long_run_bars=32, adherence_seeds=1, adherence_bars=1
)
SMALL_MUSIC_ARGS = [
    "--music-pieces", "2", "--music-bars", "4", "--long-run-bars", "32",
    "--adherence-seeds", "1", "--adherence-bars", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def test_dir(tmp_path_factory, chorale_dir):
    """A folder of two chorales, the evaluation's test pieces."""
    out = tmp_path_factory.mktemp("test_pieces")
    for name in PIECES:
        shutil.copy(chorale_dir / f"{name}.mid", out / f"{name}.mid")
    return out


@pytest.fixture(scope="module")
def report(tiny_models, test_dir):
    return evaluate.evaluate(tiny_models["q8_0"], test_dir, seed=3, max_bars=2, music=SMALL_MUSIC)


def test_command_prints_every_field_as_json(tiny_models, test_dir, capsys):
    code = evaluate.main(
        ["--model", str(tiny_models["q8_0"]), "--data", str(test_dir), "--json", "--max-bars", "2"]
        + SMALL_MUSIC_ARGS
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
    music = out["music"]
    assert music["bars"] == 4
    assert music["generated"]["excerpts"] == 2 and music["real"]["excerpts"] == 2
    for key, _, _, _ in music_theory.TABLE_ROWS:
        assert key in music["generated"] and key in music["real"]
    assert music["key_stability"]["generated"]["pairs"] == 1  # 32 bars: two 16-bar windows
    assert music["key_stability"]["real"]["pairs"] == 0  # both chorales are under 32 bars
    families = music["program_adherence"]["families"]
    assert set(families) == set(music_theory.ADHERENCE_FAMILIES)
    for row in families.values():
        assert row["share"] == row["played"] / 1


def test_command_prints_a_table(tiny_models, test_dir, capsys):
    evaluate.main(
        ["--model", str(tiny_models["f32"]), "--data", str(test_dir), "--max-bars", "1"]
        + SMALL_MUSIC_ARGS
    )
    out = capsys.readouterr().out
    for needle in (
        "perplexity/token",
        "bits/note",
        "generated",
        "other_piece",
        "repeat_prompt",
        "pitch_class_entropy",
        "decoded 2/2 (100.0 %)",
        "music theory: 2 generated pieces of 4 bars",
        "parallel fifths / 100 beats",
        "same key, next 16 bars %",
        "synth pad",
    ):
        assert needle in out


def test_fixed_seed_reproduces_the_report(tiny_models, test_dir, report):
    again = evaluate.evaluate(tiny_models["q8_0"], test_dir, seed=3, max_bars=2, music=SMALL_MUSIC)
    for key in ("perplexity", "continuation", "distribution", "decode", "music"):
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


def test_engine_continuation_stops_before_the_next_bar(tiny_models, tokenizer, chorale_dir):
    # The engine's bar loop (through Engine.generate): a Bar closes the prompt, one new bar, and
    # the tokens are those the same seed samples up to the Bar that would open a second bar.
    kinds = tokenizer.token_table()["kind"]
    ids = np.asarray(tokenizer.encode(chorale_dir / "bwv269.mid"))
    prompt = ids[: evaluate.bar_starts(ids, kinds)[4]]
    backend = evaluate.EngineBackend(tiny_models["q8_0"])
    cont = backend.continuation(prompt, 1, 1, {"temperature": 1.0, "top_p": 1.0}, 5000)
    assert cont.ended == "bars" and cont.bars == 1
    bar_tokens = np.flatnonzero(kinds[np.asarray(cont.ids, dtype=np.int64)] == Kind.BAR)
    assert bar_tokens.tolist() == [0]
    session = backend.session(1)
    session.feed([tokenizer.id_of("BOS_None"), *prompt.tolist(), cont.ids[0]])
    sampling = SamplingParams(temperature=1.0, top_p=1.0)
    plain = session.generate(len(cont.ids), sampling)
    assert plain[:-1] == cont.ids[1:] and kinds[plain[-1]] == Kind.BAR


def test_repeat_bars_cycles_the_prompt():
    prompt = metrics.notes_from_arrays([0, 4, 5], [1, 1, 1], [60, 62, 64], bars=[0, 4, 8])
    repeated = evaluate.repeat_bars(prompt, 3)
    np.testing.assert_array_equal(repeated.bars, [0, 4, 8, 12])
    np.testing.assert_array_equal(repeated.onset, [0, 4, 5, 8])
    np.testing.assert_array_equal(repeated.pitch, [60, 62, 64, 60])


def test_a_folder_without_music_is_refused(tmp_path, tiny_models):
    with pytest.raises(ValueError, match="no test pieces"):
        evaluate.evaluate(tiny_models["q8_0"], tmp_path)


def test_music_real_side_is_each_pieces_last_bars(report, tokenizer, test_dir):
    analyses = []
    for name in sorted(PIECES):
        ids = tokenizer.encode(test_dir / f"{name}.mid")
        bars = len(evaluate.bar_starts(np.asarray(ids), tokenizer.token_table()["kind"]))
        notes = metrics.notes_from_score(tokenizer.decode(ids), n_bars=bars)
        last = metrics.slice_bars(notes, bars - SMALL_MUSIC.bars, bars)
        analyses.append(music_theory.analyze(last))
    assert report["music"]["real"] == music_theory.summarize(analyses)


def test_a_family_asked_alone_is_the_only_one_generated(tiny_models):
    engine = evaluate.EngineBackend(tiny_models["q8_0"]).engine
    sampling = {"temperature": 1.0, "top_p": 0.95}
    for program in (40, -1):
        notes = evaluate.generated_notes(engine, 2, 5, sampling, [program])
        assert notes.n_bars == 2
        assert set(notes.program.tolist()) <= {program}


def test_the_torch_backend_has_no_music_section(tiny_models, test_dir):
    out = evaluate.evaluate(
        tiny_models["f32"], test_dir, max_pieces=1, max_bars=1, backend="torch", music=SMALL_MUSIC
    )
    assert out["music"] is None


def test_pieces_from_an_npz_of_token_ids(tokenizer):
    split = Path(__file__).parent / "data" / "corpus_test_split.npz"
    pieces = evaluate.load_pieces(split, tokenizer, max_pieces=None)
    with np.load(split) as saved:
        assert [p.name for p in pieces] == saved.files
        np.testing.assert_array_equal(pieces[0].ids, saved[saved.files[0]])
    assert len(evaluate.load_pieces(split, tokenizer, max_pieces=3)) == 3


def test_perplexity_without_program_and_velocity_tokens(report, tiny_models, tokenizer, test_dir):
    # The same per-token likelihoods as the whole perplexity, with the left-out kinds' targets
    # dropped from the sum and from the count.
    kinds = tokenizer.token_table()["kind"]
    bos, eos = tokenizer.id_of("BOS_None"), tokenizer.id_of("EOS_None")
    engine = evaluate.EngineBackend(tiny_models["q8_0"])
    nll, kept = [], {name: [] for name in evaluate.PERPLEXITY_WITHOUT}
    for i, piece in enumerate(evaluate.load_pieces(test_dir, tokenizer, None)):
        piece_nll = evaluate.token_nll(engine.session(3 + i), piece.ids, bos, eos)
        target_kinds = kinds[np.append(piece.ids, eos)]
        nll.append(piece_nll)
        for name, left_out in evaluate.PERPLEXITY_WITHOUT.items():
            kept[name].append(piece_nll[~np.isin(target_kinds, left_out)])
    p = report["perplexity"]
    assert p["perplexity"] == pytest.approx(math.exp(np.concatenate(nll).mean()), rel=1e-9)
    for name in evaluate.PERPLEXITY_WITHOUT:
        assert p["without"][name] == pytest.approx(math.exp(np.concatenate(kept[name]).mean()))
    assert len(np.concatenate(kept["program_velocity"])) < len(np.concatenate(kept["program"]))


def test_music_section_takes_controls(tiny_models, test_dir, capsys):
    """--control passes musical controls to every generation of the music-theory section: with
    the usual ranges locked, no generated note is out of range (the tiny random model's notes
    are, without)."""
    args = ["--model", str(tiny_models["q8_0"]), "--data", str(test_dir), "--json"]
    small = ["--max-bars", "1", "--music-pieces", "2", "--music-bars", "4"]
    small += ["--long-run-bars", "0", "--adherence-seeds", "0"]
    assert evaluate.main(args + small + ["--control", "range=usual"]) == 0
    music = json.loads(capsys.readouterr().out)["music"]
    assert music["controls"] == {"range": "usual"}
    assert music["generated"]["range_violation_share"] == 0
    assert evaluate.main(args + small) == 0
    assert json.loads(capsys.readouterr().out)["music"]["generated"]["range_violation_share"] > 0


def test_kv_memory_picks_the_engine_sessions_memory(tiny_models, tokenizer, test_dir, capsys):
    """--kv-memory int8 measures the engine with the int8 key/value memory: the perplexity is
    that of int8 sessions, not the f32 memory's."""
    args = ["--model", str(tiny_models["q8_0"]), "--data", str(test_dir), "--json"]
    small = ["--max-bars", "1", "--music-pieces", "0", "--max-pieces", "1"]
    assert evaluate.main(args + small + ["--kv-memory", "int8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kv_memory"] == "int8"
    bos, eos = tokenizer.id_of("BOS_None"), tokenizer.id_of("EOS_None")
    piece = evaluate.load_pieces(test_dir, tokenizer, 1)[0]
    per_memory = {}
    for memory in ("f32", "int8"):
        engine = evaluate.EngineBackend(tiny_models["q8_0"], memory)
        nll = evaluate.token_nll(engine.session(0), piece.ids, bos, eos)
        per_memory[memory] = math.exp(nll.mean())
    assert out["perplexity"]["perplexity"] == pytest.approx(per_memory["int8"], rel=1e-12)
    assert per_memory["int8"] != per_memory["f32"]
    with pytest.raises(ValueError, match="engine backend"):
        evaluate.evaluate(tiny_models["f32"], test_dir, backend="torch", kv_memory="int8")
