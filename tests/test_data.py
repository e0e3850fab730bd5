"""The corpus pipeline: splits, manifest, cache, loading and transposition."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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


def test_a_small_folder_gets_one_valid_piece(tmp_path, chorale_paths):
    """Three works hash to train; the one hashed nearest the valid range is moved to valid, so
    training (which needs a valid piece) runs on a small folder; a one-work folder stays train."""
    src = tmp_path / "src"
    src.mkdir()
    names = ["bwv269", "bwv277", "bwv250"]
    for name in names:
        shutil.copy(next(p for p in chorale_paths if p.stem == name), src / f"{name}.mid")
    assert {data.split_of(f"midi/{n}") for n in names} == {"train"}  # the hash alone: no valid
    m = data.prepare(tmp_path / "corpus", [], midi_dir=src, workers=1, progress=False)
    nearest = max(names, key=lambda n: data.split_bucket(f"midi/{n}"))
    assert m["splits"]["valid"] == [f"midi/{nearest}"]
    assert sorted(m["splits"]["train"]) == sorted(f"midi/{n}" for n in names if n != nearest)
    assert data.main(["prepare", "--out", str(tmp_path / "again"), "--collections", "",
                      "--midi-dir", str(src), "--no-progress"]) == 0  # fmt: skip
    again = json.loads((tmp_path / "again" / data.MANIFEST).read_text())
    assert again["splits"] == m["splits"]  # deterministic

    (src / "bwv277.mid").unlink()
    (src / "bwv250.mid").unlink()
    one = data.prepare(tmp_path / "one", [], midi_dir=src, workers=1, progress=False)
    assert one["splits"] == {"train": ["midi/bwv269"], "valid": [], "test": []}


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


# ---------------------------------------------------------------------------------------------
# The music21 collections beyond the chorales and quartets: terms, folk tunes, dynamics


def _corpus_file(relative: str):
    return data._music21_corpus_dir() / relative


def test_every_music21_collection_has_recorded_terms():
    folders = {p.name for p in data._music21_corpus_dir().iterdir() if p.is_dir()} - {
        "__pycache__",
        "_metadataCache",
    }
    taken = {c.folder for c in data.COLLECTIONS.values()}
    assert folders == taken | set(data.EXCLUDED_COLLECTIONS), folders ^ (
        taken | set(data.EXCLUDED_COLLECTIONS)
    )
    assert not taken & set(data.EXCLUDED_COLLECTIONS)
    for c in data.COLLECTIONS.values():
        assert c.terms and c.source and c.kind in ("vocal", "quartet", "scored", "folk")


def test_rights_lines_decide_per_file():
    lead, skipped = data.collection_pieces("leadsheet")
    assert [p.id for p in lead] == ["leadsheet/fosterBrownHair"]  # "Public Domain" is no bar
    assert any("All Rights Reserved" in s["reason"] for s in skipped)
    weber, _ = data.collection_pieces("weber")  # "Released to Public Domain in 1998"
    assert len(weber) == 1


def test_a_file_of_abc_tunes_gives_one_piece_per_tune():
    pieces, _ = data.collection_pieces("oneills_1850")
    first = [p for p in pieces if p.source.endswith("0001-0050.abc")]
    assert [p.tune for p in first] == list(range(1, 51))
    assert first[1].id == "oneills_1850/0001-0050/2" and first[1].kind == "folk"
    assert len({p.identity for p in pieces}) == len(pieces) > 1900


def _tracks(path) -> dict[int, list]:
    score = symusic.Score(str(path))
    return {t.program: sorted((n.time, n.pitch) for n in t.notes) for t in score.tracks}


def test_folk_tune_with_chord_symbols_is_realised_from_them(tmp_path):
    # Nottingham "Little Czech Number" (X: 81): bar 1 is "Am", the pickup has no chord
    out = tmp_path / "tune.mid"
    data.tune_to_midi(str(_corpus_file("nottingham-dataset/reelsa-c.abc")), 81, "n/81", out)
    melody_program, chord_program, bass_program = data.folk_programs("n/81")
    tracks = _tracks(out)
    assert set(tracks) == {melody_program, chord_program, bass_program}
    tpq = symusic.Score(str(out)).ticks_per_quarter
    bar_one = 4 * tpq  # the one-beat pickup is padded to a whole 4/4 bar
    first_chord = {p % 12 for t, p in tracks[chord_program] if t == bar_one}
    assert first_chord == {9, 0, 4}  # A minor
    bass_time, bass_pitch = tracks[bass_program][0]
    assert bass_time == bar_one and bass_pitch == 45  # A2, in the bass register
    low, high = data.CHORD_REGISTER
    assert all(low - 3 <= p < high + 3 for _, p in tracks[chord_program])
    assert len(tracks[melody_program]) > 40


def test_folk_tune_without_symbols_is_harmonised_diatonically(tmp_path):
    import music21

    source = _corpus_file("oneills1850/0001-0050.abc")
    melody = music21.converter.parse(source, number=2).parts[0]  # "Fare You Well", D major
    key = data.tune_key(melody)
    assert (key.tonic.name, key.mode) == ("D", "major")
    spans = data.harmonised_spans(melody, key)
    d_major = {2, 4, 6, 7, 9, 11, 1}
    assert all(set(s.pitch_classes) <= d_major for s in spans)
    assert spans[-1].pitch_classes[0] == 2  # ends on the tonic
    # the chord holds the melody's note on the span's first beat most of the time
    notes = melody.stripTies().flatten().notes
    held = [
        any(p.pitchClass in s.pitch_classes for p in n.pitches)
        for s in spans
        for n in notes
        if abs(float(n.offset) - s.start) < 1e-6
    ]
    assert len(held) > 10 and sum(held) / len(held) > 0.8
    out = tmp_path / "tune.mid"
    data.tune_to_midi(str(source), 2, "oneills_1850/0001-0050/2", out)
    assert len(_tracks(out)) == 3


def test_dynamics_marks_become_velocities(tmp_path):
    import music21

    source = _corpus_file("handel/rinaldo/Lascia_chio_pianga.mxl")
    score = music21.converter.parse(source)
    piano = data.Dynamics(score, score.parts[1])  # marks f (20), f (27), fp (28), p (48), ...
    assert piano.level(0.0) == data.DEFAULT_VELOCITY
    assert piano.level(21.0) == data.DYNAMIC_VELOCITY["f"]
    assert piano.level(30.0) == data.DYNAMIC_VELOCITY["p"]  # fp: the level after it is p
    at_fp = next(n for n in score.parts[1].flatten().notes if float(n.offset) == 28.0)
    assert piano.velocity(at_fp) == data.DYNAMIC_VELOCITY["p"] + 2 * data.ACCENT_STEP
    # a diminuendo in the left hand (88 .. 89) ramps down from the level where it starts
    left = data.Dynamics(score, score.parts[2])
    ramp = next(r for r in left.ramps if r[0] == 88.0)
    assert ramp[3] < ramp[2] and left.level(88.0) == ramp[2] > left.level(88.5) > ramp[3]
    out = tmp_path / "lascia.mid"
    data.score_to_midi(str(source), "scored", out)
    velocities = {n.velocity for t in symusic.Score(str(out)).tracks for n in t.notes}
    assert {47, 79, 95} <= velocities


def test_scored_programs_follow_the_instruments():
    import music21

    quartet = music21.converter.parse(_corpus_file("schumann_robert/opus41no1/movement1.mxl"))
    assert data.scored_programs(list(quartet.parts)) == [40, 110, 41, 42]
    song = music21.converter.parse(_corpus_file("handel/rinaldo/Lascia_chio_pianga.mxl"))
    assert data.scored_programs(list(song.parts)) == [52, 0, 0]  # both staves: one piano


def test_the_held_out_pieces_stay_in_the_test_split(tmp_path):
    split_file = Path(__file__).parent / "data" / "corpus_test_split.npz"
    with np.load(split_file) as z:
        held_out = set(z.files)
    found = {}
    for name in data.DEFAULT_COLLECTIONS:
        pieces, _ = data.collection_pieces(name)
        found |= {p.id: p for p in pieces if p.id in held_out}
    assert set(found) == held_out
    by_content = [p for p in found.values() if data.split_of(p.identity) != "test"]
    # only a copy whose notes equal another held-out piece's (it joins that identity's split)
    assert [p.id for p in by_content] == ["trecento/PMFC_12_4-Gloria Rvat 1419_bak"]
    twin = found["trecento/PMFC_12_4-Gloria Rvat 1419"]
    records = [data.convert_piece(p, str(tmp_path)) for p in (by_content[0], twin)]
    data.assign_splits(records, tmp_path)
    assert [r["split"] for r in records] == ["test", "test"]


# ---------------------------------------------------------------------------------------------
# Program augmentation


def _notes(score: symusic.Score) -> list[tuple]:
    return sorted(
        (n.time, n.pitch, n.duration, n.velocity, t.program) for t in score.tracks for n in t.notes
    )


def test_redrawn_programs_decode_to_the_same_notes(tokenizer, chorale_paths):
    ids = np.asarray(tokenizer.encode(chorale_paths[0]), np.int32)
    original = _notes(tokenizer.decode(ids))
    voices = data.voice_ranges(ids, tokenizer)
    assert set(voices) == {n[4] for n in original}
    ensembles = set()
    for seed in range(30):
        rng = np.random.default_rng(seed)
        mapping = data.draw_programs(voices, np.random.default_rng(seed))
        augmented = data.redraw_programs(ids, rng, tokenizer)
        assert augmented.dtype == ids.dtype and len(augmented) == len(ids)
        notes = _notes(tokenizer.decode(augmented))
        # the same notes, each voice under its new program (a keyboard merges them all)
        assert notes == sorted((*n[:4], mapping[n[4]]) for n in original)
        for old, new in mapping.items():
            low, high, _ = voices[old]
            assert data._plays(new, low, high), (old, new)
        merged = len(set(mapping.values())) == 1
        assert merged or len(set(mapping.values())) == len(voices)  # merged only on a keyboard
        if merged:
            assert next(iter(mapping.values())) in data.KEYBOARDS
        ensembles.add(merged)
    assert ensembles == {True, False}


def test_program_augmentation_reaches_every_family(tokenizer, chorale_paths):
    """Every General MIDI family of the issue's list is drawn for the chorales' voices."""
    families = set()
    for path in chorale_paths[:4]:
        ids = np.asarray(tokenizer.encode(path), np.int32)
        voices = data.voice_ranges(ids, tokenizer)
        for seed in range(100):
            mapping = data.draw_programs(voices, np.random.default_rng(seed))
            families |= {p // 8 for p in mapping.values()}
    assert set(range(12)) <= families  # piano .. synth pad


def test_drums_keep_their_program(tokenizer):
    ids = np.array(
        [
            tokenizer.id_of(t)
            for t in (
                "Bar_None",
                "TimeSig_4/4",
                "Position_0",
                "Program_-1",
                "PitchDrum_36",
                "Velocity_79",
                "Duration_1.0.12",
                "Program_0",
                "Pitch_60",
                "Velocity_79",
                "Duration_1.0.12",
            )
        ],  # fmt: skip
        np.int32,
    )
    assert set(data.voice_ranges(ids, tokenizer)) == {0}
    out = data.redraw_programs(ids, np.random.default_rng(1), tokenizer)
    assert out[3] == ids[3] and (np.delete(out, 7) == np.delete(ids, 7)).all()


def test_folk_accompaniment_avoids_parallels(tmp_path, tokenizer):
    """Measured with training.music_theory on ten O'Neill tunes: no parallel fifths or octaves
    (without the voice-leading check in tune_to_midi: 1 fifth and 29 octaves)."""
    from training import metrics, music_theory

    fifths = octaves = 0
    source = str(_corpus_file("oneills1850/0001-0050.abc"))
    for tune in range(1, 11):
        out = tmp_path / f"{tune}.mid"
        data.tune_to_midi(source, tune, f"t/{tune}", out)
        notes = metrics.notes_from_score(tokenizer.decode(tokenizer.encode(out)))
        f, o, _ = music_theory.parallels(notes)
        fifths, octaves = fifths + f, octaves + o
    assert fifths == 0 and octaves <= 2


def test_tune_number_zero_is_a_tune(tmp_path):
    pieces, _ = data.collection_pieces("oneills_1850")
    (zero,) = [p for p in pieces if p.id == "oneills_1850/1625-1700/0"]
    record = data.convert_piece(zero, str(tmp_path))
    assert record["ok"], record.get("error")  # X: 0, not the whole file of tunes


def test_a_hairpin_across_a_pianos_staves_is_read(tmp_path):
    import music21

    source = _corpus_file("weber/concertino_clarinet.mxl")
    score = music21.converter.parse(source)
    ramps = [r for part in score.parts for r in data.Dynamics(score, part).ramps]
    assert ramps and all(end > start for start, end, _, _ in ramps)
    data.score_to_midi(str(source), "scored", tmp_path / "weber.mid")
