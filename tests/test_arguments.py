"""Every public argument of Engine and Session is checked, with a message that names it."""

from __future__ import annotations

import numpy as np
import pytest
import symusic

from sage_edge import MidiInputError
from sage_edge.engine import Engine, SamplingParams


@pytest.fixture(scope="module")
def engine(tiny_models) -> Engine:
    return Engine(tiny_models["q8_0"])


def test_a_prompt_of_midi_bytes_is_read_as_a_midi_file(engine, chorale_paths) -> None:
    path = chorale_paths[0]
    from_path = engine.generate(prompt=path, bars=1, seed=4)
    from_bytes = engine.generate(prompt=path.read_bytes(), bars=1, seed=4)
    assert from_bytes.tokens == from_path.tokens
    assert from_bytes.prompt_length > 100  # the chorale's tokens, not 14 000 byte values
    assert from_bytes.score.note_num() == from_path.score.note_num()
    assert engine.generate(prompt=bytearray(path.read_bytes()), bars=1, seed=4).tokens == (
        from_path.tokens
    )


def test_bytes_that_are_not_midi_are_refused(engine) -> None:
    with pytest.raises(MidiInputError, match="the prompt's MIDI bytes"):
        engine.generate(prompt=b"\x01\x02\x03 not a MIDI file", bars=1, seed=0)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (123, "a prompt is None, a MIDI file path"),
        (1.5, "a prompt is None"),
        ([1, "2"], "prompt token ids must be integers"),
        ([1.0, 2.0], "prompt token ids must be integers"),
        ([True], "prompt token ids must be integers"),
        (np.zeros((2, 2), dtype=np.int32), "shape"),
        (np.array([0.5]), "float64"),
        ([10**9], "prompt token ids must be in 0.."),
    ],
)
def test_a_bad_prompt_names_what_a_prompt_may_be(engine, prompt, message) -> None:
    with pytest.raises(ValueError, match=message):
        engine.generate(prompt=prompt, bars=1, seed=0)


def test_a_prompt_of_token_ids_may_be_a_list_tuple_or_array(engine) -> None:
    bos = engine.tokenizer.id_of("BOS_None")
    expected = engine.generate(prompt=[bos], bars=1, seed=2).tokens
    assert engine.generate(prompt=(bos,), bars=1, seed=2).tokens == expected
    assert engine.generate(prompt=np.array([bos]), bars=1, seed=2).tokens == expected


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.generate(2**63), r"n_tokens must be in 0\.\.2147483647"),
        (lambda s: s.generate(-1), r"n_tokens must be in 0\.\."),
        (lambda s: s.generate(2.0), "n_tokens must be an integer"),
        (lambda s: s.generate("8"), "n_tokens must be an integer"),
        (lambda s: s.sample({"temperature": 0.5}), "sampling must be a SamplingParams"),
        (lambda s: s.generate(1, 0.9), "sampling must be a SamplingParams"),
    ],
)
def test_session_arguments_are_checked_by_name(engine, call, message) -> None:
    session = engine.session(seed=0)
    with pytest.raises(ValueError, match=message):
        call(session)
    assert session.position == 0  # a refused call changes nothing


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"sampling": {"top_p": 0.9}}, "sampling must be a SamplingParams"),
        ({"tempo": "fast"}, "tempo must be a number"),
        ({"tempo": 3.5}, r"tempo must be in 3\.57628\.\.1000 BPM"),
        ({"bars": 2.0}, "bars must be a positive integer"),
        ({"bars": 0}, "bars must be a positive integer"),
        ({"programs": [0.5]}, "programs must be integers"),
    ],
)
def test_generation_arguments_are_checked_by_name(engine, arguments, message) -> None:
    with pytest.raises(ValueError, match=message):
        engine.generate(**{"bars": 1, "seed": 0, **arguments})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"temperature": "1"}, "temperature must be a number"),
        ({"top_k": 2.5}, "top_k must be an integer"),
        ({"top_p": [0.9]}, "top_p must be a number"),
        ({"min_p": None}, "min_p must be a number"),
        ({"temperature": -1.0}, "temperature must be a finite number >= 0"),
        ({"temperature": float("inf")}, "temperature must be a finite number >= 0"),
        ({"top_k": -1}, "top_k must be >= 0"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"min_p": 1.0}, r"min_p must be in \[0, 1\)"),
    ],
)
def test_sampling_params_are_checked_by_the_engines_rules(values, message) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingParams(**values)


def test_a_prompt_score_with_a_tempo_of_zero_is_refused(engine) -> None:
    score = symusic.Score(480)
    track = symusic.Track("melody", program=0)
    track.notes.append(symusic.Note(0, 480, 60, 80))
    score.tracks.append(track)
    score.tempos.append(symusic.Tempo(0, 0.0))
    with pytest.raises(ValueError, match="tempo"):
        engine.generate(prompt=score, bars=1, seed=0)
