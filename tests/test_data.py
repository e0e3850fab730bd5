"""The corpus pipeline: splits, manifest, cache, loading and transposition."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import symusic

from training import data


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, chorale_paths):
    """A --midi-dir run over six chorales, an exact duplicate and a corrupt file, then a rerun."""
    src = tmp_path_factory.mktemp("src")
    for p in chorale_paths[:6]:
        shutil.copy(p, src / p.name)
    shutil.copy(chorale_paths[0], src / "copy_of_first.mid")
    (src / "sub").mkdir()
    (src / "sub" / "corrupt.mid").write_bytes(chorale_paths[1].read_bytes()[:300])
    out = tmp_path_factory.mktemp("corpus")
    first = data.prepare(out, [], midi_dir=src, workers=1, progress=False)
    second = data.prepare(out, [], midi_dir=src, workers=1, progress=False)
    return out, first, second, chorale_paths


def test_manifest_counts_failures(prepared):
    out, first, _, _ = prepared
    manifest = json.loads((out / data.MANIFEST).read_text())
    assert manifest["n_pieces"] == 7
    assert manifest["n_failures"] == 1
    (failure,) = manifest["failures"]
    assert failure["id"] == "midi/sub/corrupt" and "truncated" in failure["error"]
    assert manifest["collections"]["midi"]["terms"]
    assert "palestrina" in manifest["excluded_collections"]
    assert first["n_converted"] == 8


def test_second_run_uses_cache(prepared):
    _, first, second, _ = prepared
    assert second["n_cached"] == 7 and second["n_converted"] == 1  # only the failure retried
    assert second["splits"] == first["splits"]


def test_splits_are_disjoint_and_duplicates_share_one(prepared):
    _, manifest, _, _ = prepared
    seen = [i for s in data.SPLITS for i in manifest["splits"][s]]
    assert len(seen) == len(set(seen)) == manifest["n_pieces"]
    by_id = {r["id"]: r for r in manifest["pieces"] if r.get("ok")}
    copy = by_id["midi/copy_of_first"]
    twin = next(
        r for r in by_id.values() if r["content_sha1"] == copy["content_sha1"] and r is not copy
    )
    assert twin["split"] == copy["split"]


def test_split_is_a_stable_hash():
    # pinned: sha1 of the identity, so every machine and run agrees; a change reshuffles corpora
    assert data.split_of("bach/bwv269") == "train"
    assert data.split_of("bach/bwv278") == "valid"
    assert data.split_of("bach/bwv274") == "test"
    counts = {s: 0 for s in data.SPLITS}
    for n in range(2000):
        counts[data.split_of(f"piece{n}")] += 1
    assert 1700 < counts["train"] < 1900 and counts["valid"] > 60 and counts["test"] > 60


def test_chorale_versions_share_identity_and_split():
    for a, b in [("bwv18.5-lz", "bwv18.5-w"), ("bwv248.23-2", "bwv248.23-s"), ("bwv269", "bwv269")]:
        assert data.identity_of("bach", a) == data.identity_of("bach", b)
        assert data.split_of(data.identity_of("bach", a)) == data.split_of(
            data.identity_of("bach", b)
        )
    assert data.identity_of("bach", "bwv18.5-w") != data.identity_of("bach", "bwv18.6")


def test_collection_listing_respects_terms():
    pieces, skipped = data.collection_pieces("bach")
    ids = {p.id for p in pieces}
    assert "bach/bwv269" in ids and "bach/bwv846" not in ids
    assert len(pieces) > 350
    assert any("duplicate encoding" in s["reason"] for s in skipped)
    mont, mont_skipped = data.collection_pieces("monteverdi")
    assert len(mont) > 40 and any("rights" in s["reason"] for s in mont_skipped)
    assert "palestrina" not in data.COLLECTIONS and "essenFolksong" not in data.COLLECTIONS


def test_score_to_midi_gives_each_voice_a_program(tmp_path, tokenizer):
    source = data._music21_corpus_dir() / "bach" / "bwv269.mxl"
    out = tmp_path / "bwv269.mid"
    data.score_to_midi(str(source), "vocal", out)
    score = symusic.Score(str(out))
    assert [t.program for t in score.tracks] == [52, 53, 54, 42]
    strings = tokenizer.token_strings()
    programs = {strings[i] for i in tokenizer.encode(out) if strings[i].startswith("Program")}
    assert programs == {"Program_52", "Program_53", "Program_54", "Program_42"}


def test_programs_for():
    assert data.programs_for("vocal", 4) == [52, 53, 54, 42]
    assert data.programs_for("quartet", 4) == [40, 110, 41, 42]
    assert len(set(data.programs_for("vocal", 6))) == 6


def test_load_split_matches_encode_and_caches(prepared, tokenizer):
    out, manifest, _, _ = prepared
    recs = {r["id"]: r for r in manifest["pieces"] if r.get("ok")}
    total = 0
    for split in data.SPLITS:
        seqs = data.load_split(out, split, tokenizer)
        assert len(seqs) == len(manifest["splits"][split])
        for piece_id, seq in zip(manifest["splits"][split], seqs, strict=True):
            assert seq.dtype == np.int32
            assert seq.tolist() == tokenizer.encode(out / recs[piece_id]["midi"])
        total += len(seqs)
    assert total == 7
    cache = out / "tokens" / "train.npz"
    stamp = cache.stat().st_mtime_ns
    again = data.load_split(out, "train", tokenizer)
    assert cache.stat().st_mtime_ns == stamp
    assert [s.tolist() for s in again] == [s.tolist() for s in data.load_split(out, "train")]


def test_transpose_keeps_range(tokenizer, chorale_paths):
    table = tokenizer.token_table()
    ids = np.asarray(tokenizer.encode(chorale_paths[0]), np.int32)
    is_pitch = table["kind"][ids] == 9
    for s in range(data.TRANSPOSE_RANGE[0], data.TRANSPOSE_RANGE[1] + 1):
        moved = data.transpose(ids, s, tokenizer)
        assert moved is not None and moved.dtype == ids.dtype
        np.testing.assert_array_equal(table["a"][moved[is_pitch]], table["a"][ids[is_pitch]] + s)
        np.testing.assert_array_equal(moved[~is_pitch], ids[~is_pitch])
    low = np.array([tokenizer.id_of("Program_0"), tokenizer.id_of("Pitch_21")], np.int32)
    assert data.transpose(low, -1, tokenizer) is None
    assert data.transpose(low, 1, tokenizer) is not None
    drums = np.array([tokenizer.id_of("Program_-1"), tokenizer.id_of("PitchDrum_36")], np.int32)
    np.testing.assert_array_equal(data.transpose(drums, 5, tokenizer), drums)


def test_stats(prepared, capsys):
    out, *_ = prepared
    s = data.stats(out)
    assert sum(s[x]["pieces"] for x in data.SPLITS) == 7 and s["failures"] == 1
    assert 3.5 < s["train"]["tokens_per_note"] < 6
    assert data.main(["stats", "--data", str(out)]) == 0
    assert "train" in capsys.readouterr().out
