"""Learned programs: a model file records the General MIDI programs of its training data with their
note counts (docs/format.md, "learned_programs"). Asking for a program the model never learned, or
a generation in which a requested program stayed silent, is an error that names the learned ones,
in Python, in `sage-edge` (exit 2) and in `sage-edge-run` (exit 2); `info` lists them."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import built_binary

import sage_edge
from sage_edge import _engine
from sage_edge import format as sage_format
from sage_edge.engine import DEFAULT_MODEL, Controls, Engine
from sage_edge.errors import ModelFormatError, UnplayedProgramsError

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "tiny_q8_0.sage"
CORPUS = ROOT / "csrc" / "tests" / "corpus"
TINY_LEARNED = {-1: 10, 40: 100, 41: 100, 42: 100, 43: 50}
# Programs the shipped model never heard (drums, piccolo, timpani, helicopter, and them with a
# program it knows) and programs it did (a piano and a bass, from the folk tunes' realisations).
UNLEARNED_REQUESTS = ["-1", "72", "47", "125", "0,72"]
LEARNED_VOICES = "0,32"


@pytest.fixture(scope="module")
def tiny_learned(tmp_path_factory) -> Path:
    """The tiny fixture model, recording that it learned TINY_LEARNED."""
    model = sage_format.read(FIXTURE)
    model.learned_programs = TINY_LEARNED
    path = tmp_path_factory.mktemp("learned") / "tiny_learned.sage"
    sage_format.write(path, model)
    return path


@pytest.fixture(scope="module")
def runner() -> Path:
    return built_binary("csrc/runner/sage-edge-run")


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def cli(*args) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "sage_edge.cli", *args)


def test_learned_programs_count_the_notes_of_each_program(tokenizer, chorale_paths):
    training_export = pytest.importorskip("training.export")
    pieces = [tokenizer.encode(path) for path in chorale_paths]
    counted = training_export.learned_programs(pieces, tokenizer)
    decoded = Counter()
    for ids in pieces:
        for track in tokenizer.decode(ids).tracks:
            decoded[-1 if track.is_drum else track.program] += len(track.notes)
    assert counted == dict(decoded)
    assert set(counted) == {42, 48, 49, 50, 51, 52, 53, 54}


def test_both_readers_give_the_recorded_programs(tiny_learned, runner):
    assert sage_format.read(tiny_learned).learned_programs == TINY_LEARNED
    assert Engine(tiny_learned).learned_programs == TINY_LEARNED
    info = run(runner, "--model", tiny_learned, "--info").stdout
    assert (
        "learned programs -1 (drums) (10 notes), 40 (100 notes), 41 (100 notes), "
        "42 (100 notes), 43 (50 notes)\n" in info
    )
    # A file without the key: nothing is known, so nothing is checked.
    assert Engine(FIXTURE).learned_programs is None
    assert "learned programs unknown" in run(runner, "--model", FIXTURE, "--info").stdout
    Engine(FIXTURE).generate(programs=[40, 41, 42, 43, -1], bars=1, seed=1)


@pytest.mark.parametrize(
    "name",
    sorted(
        p.name
        for p in CORPUS.glob("*.sage")
        if p.name.startswith(("metadata_", "learned_programs_", "valid_"))
    ),
)
def test_the_two_readers_judge_every_metadata_file_alike(name):
    def outcome(load) -> str:
        try:
            load(CORPUS / name)
        except (ModelFormatError, ValueError, RuntimeError) as error:
            return f"refused: {error}"
        return "loads"

    python, engine = outcome(sage_format.read), outcome(lambda p: _engine.Model(str(p)))
    assert python.startswith("loads") == engine.startswith("loads") == name.startswith("valid_"), (
        python,
        engine,
    )


def test_a_program_the_model_never_learned_is_refused_before_generating(tiny_learned):
    engine = Engine(tiny_learned)
    for ask in (engine.generate, engine.stream):
        with pytest.raises(UnplayedProgramsError) as error:
            ask(programs=[0, 40, -1], bars=1, seed=1)
        assert error.value.programs == [0]
        assert error.value.learned == TINY_LEARNED
        message = str(error.value)
        assert "cannot play Acoustic grand piano (0)" in message
        assert "it learned Drums 10 notes, Violin (40) 100 notes" in message
    assert isinstance(error.value, ValueError)  # a bad argument for this model
    assert sage_edge.UnplayedProgramsError is UnplayedProgramsError


def test_a_learned_program_that_stays_silent_is_an_error(tiny_learned):
    engine = Engine(tiny_learned)
    quartet_and_drums = [40, 41, 42, 43, -1]
    bare = Controls(plays_after=0)  # no bonus for silent programs: the model's own choice
    with pytest.raises(UnplayedProgramsError, match=r"played no notes for Violin \(40\)") as error:
        engine.generate(programs=quartet_and_drums, bars=1, seed=3, controls=bare)
    assert error.value.programs == [40, 41, 42, 43]  # seed 3 plays only drums
    with pytest.raises(UnplayedProgramsError):
        list(engine.stream(programs=quartet_and_drums, bars=1, seed=3, controls=bare))
    # Seed 9 plays all five: no error.
    result = engine.generate(programs=quartet_and_drums, bars=1, seed=9, controls=bare)
    assert {note.program for note in result.notes} == set(quartet_and_drums)


def test_cli_generate_exits_2_for_a_program_the_model_cannot_play(tiny_learned, tmp_path):
    out = tmp_path / "out.mid"
    refused = cli("generate", "--model", tiny_learned, "--programs", "0", "--out", out)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "cannot play Acoustic grand piano (0)" in (
        refused.stderr
    )
    seeded = ("--programs", "40,41,42,43,-1", "--bars", 1, "--out", out, "--plays-after", 0)
    silent = cli("generate", "--model", tiny_learned, *seeded, "--seed", 3)
    assert silent.returncode == 2 and silent.stderr.count("\n") == 1
    assert "played no notes for Violin (40)" in silent.stderr
    assert not out.exists()  # nothing written for a generation that failed
    assert cli("generate", "--model", tiny_learned, *seeded, "--seed", 9).returncode == 0


def test_runner_refuses_unlearned_and_silent_programs(tiny_learned, runner):
    refused = run(runner, "--model", tiny_learned, "--programs", "0,-1", "--tokens", 20)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "this model cannot play program 0:" in refused.stderr
    assert "it learned -1 (drums) (10 notes), 40 (100 notes)" in refused.stderr
    silent = run(
        runner, "--model", tiny_learned, "--programs", "40,-1", "--tokens", 12, "--plays-after", 0
    )
    assert silent.returncode == 2 and silent.stderr.count("\n") == 1, silent.stderr
    assert "played no notes for program" in silent.stderr
    played = run(runner, "--model", tiny_learned, "--programs", "40", "--tokens", 200)
    assert played.returncode == 0, played.stderr


@pytest.fixture(scope="module")
def shipped() -> Engine:
    if not DEFAULT_MODEL.is_file():
        pytest.skip("no default model is packaged")
    return Engine()


def test_the_shipped_model_records_what_it_learned(shipped):
    learned = shipped.learned_programs
    assert learned is not None
    # every General MIDI family but the drums (program augmentation), never the piccolo
    assert {0, 8, 16, 24, 32, 40, 48, 56, 64, 73, 80, 88, 52, 53, 54, 110} <= set(learned)
    assert not {-1, 72, 47, 125} & set(learned)
    info = cli("info")
    assert info.returncode == 0
    assert "learned programs: " in info.stdout and "Choir aahs (52)" in info.stdout


@pytest.mark.parametrize("programs", UNLEARNED_REQUESTS)
def test_shipped_model_cli_refuses_programs_it_cannot_play(shipped, programs, tmp_path):
    result = cli("generate", "--programs", programs, "--out", tmp_path / "x.mid", "--seed", 1)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "this model cannot play" in result.stderr
    # 94 learned programs: the one line sums them up rather than naming each
    assert "it learned 94 programs in 13 of the 16 General MIDI families and no drums" in (
        result.stderr
    )
    assert not (tmp_path / "x.mid").exists()


def test_shipped_model_plays_the_programs_it_learned(shipped, tmp_path, runner):
    out = tmp_path / "x.mid"
    args = ("--programs", LEARNED_VOICES, "--seed", 1)
    result = cli("generate", *args, "--bars", 2, "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.exists()
    played = run(runner, "--model", DEFAULT_MODEL, *args, "--bars", 2)
    assert played.returncode == 0, played.stderr
    refused = run(runner, "--model", DEFAULT_MODEL, "--programs", "72", "--tokens", 10)
    assert refused.returncode == 2 and "this model cannot play program 72" in refused.stderr
    assert "learned programs -1" not in run(runner, "--model", DEFAULT_MODEL, "--info").stdout
