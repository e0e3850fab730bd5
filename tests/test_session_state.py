"""A Session's behaviour at its edges: shared between threads, fed nothing, sampled when new."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sage_edge.engine import Engine


@pytest.fixture(scope="module")
def engine(tiny_models) -> Engine:
    return Engine(tiny_models["q8_0"])


def test_one_session_hammered_by_many_threads_stays_consistent(engine) -> None:
    # The binding releases the GIL while it computes; without the per-session lock two threads
    # inside one session corrupt its ring memories and event queue (and crash the interpreter).
    session = engine.session(seed=3)
    bos = engine.tokenizer.id_of("BOS_None")
    session.feed([bos])
    threads, rounds, per_generate = 8, 12, 16
    fed = [0] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def hammer(index: int) -> None:
        try:
            start.wait()
            for round_ in range(rounds):
                tokens = session.generate(per_generate)
                fed[index] += len(tokens)
                logits = session.feed(tokens[-1:])
                fed[index] += 1
                assert np.isfinite(logits).all()
                session.pop_events()
                if round_ % 3 == 0:
                    session.allowed_next()
                    assert session.memory["total_bytes"] > 0
                    assert session.position > 0
        except BaseException as error:  # surfaced below with its thread
            errors.append(error)

    workers = [threading.Thread(target=hammer, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors, errors
    # Every call ran whole, one after another: the position counts every token exactly once.
    assert session.position == 1 + sum(fed)


def test_feeding_nothing_returns_the_last_logits(engine) -> None:
    session = engine.session(seed=1)
    bos = engine.tokenizer.id_of("BOS_None")
    after_bos = session.feed([bos])
    again = session.feed([])
    assert np.array_equal(after_bos, again)
    assert np.array_equal(session.feed(np.array([], dtype=np.int32)), after_bos)
    assert session.position == 1
    assert session.feed([], all_logits=True).shape == (0, engine.info["vocab_size"])


def test_feeding_nothing_to_a_new_session_is_an_error_not_garbage(engine) -> None:
    session = engine.session(seed=1)
    with pytest.raises(RuntimeError, match="nothing has been fed"):
        session.feed([])
    assert session.position == 0


def test_a_new_session_starts_a_piece_from_bos(engine) -> None:
    bos = engine.tokenizer.id_of("BOS_None")
    by_hand = engine.session(seed=5)
    by_hand.feed([bos])
    expected = by_hand.generate(40)

    fresh = engine.session(seed=5)
    assert fresh.generate(40) == expected
    assert fresh.position == 41  # BOS and the 40 tokens

    first = engine.session(seed=5).sample()
    assert first == expected[0]

    fresh.reset()  # a reset session is new again
    assert fresh.generate(40) == expected
