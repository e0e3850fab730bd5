"""Writes the corpus of broken .sage files that fuzz_loader replays under ctest.

    python csrc/tests/corpus/make_corpus.py

Each file is a minimal valid model (one layer, d 8, a 14-token vocabulary) written with
sage_edge.format, then broken in one way docs/format.md forbids. Unless the name says the checksum
is stale, the CRC-32 is recomputed so that the loader's field checks, not the checksum, catch it.
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from sage_edge import format as sage_format  # noqa: E402

HERE = Path(__file__).resolve().parent
KIND_FAMILY = sage_format.KIND_FAMILY


def minimal_model(quant: str, metadata: dict | None = None) -> bytes:
    V, L, d, H, G, d_h, d_ff = len(KIND_FAMILY), 1, 8, 2, 1, 4, 8
    vocabulary = np.zeros(V, sage_format.VOCABULARY_DTYPE)
    vocabulary["kind"] = np.arange(V)
    vocabulary["family"] = KIND_FAMILY
    vocabulary["a"][9] = 60  # a Pitch
    rng = np.random.default_rng(0)

    def matrix(*shape):
        return sage_format.Tensor.from_array(rng.normal(size=shape).astype(np.float32), quant)

    def vector(n, value=1.0):
        return sage_format.Tensor.from_array(np.full(n, value, np.float32))

    tensors = {
        "tok_embedding": matrix(V, d),
        "alibi_slopes": vector(H, 0.5),
        "final_norm": vector(d),
        "output": matrix(V, d),
        "layers.0.attn_norm": vector(d),
        "layers.0.wq": matrix(H * d_h, d),
        "layers.0.wk": matrix(1, G * d_h, d),
        "layers.0.wv": matrix(1, G * d_h, d),
        "layers.0.wo": matrix(d, H * d_h),
        "layers.0.ffn_norm": vector(d),
        "layers.0.w1": matrix(d_ff, d),
        "layers.0.w3": matrix(d_ff, d),
        "layers.0.w2": matrix(d, d_ff),
    }
    model = sage_format.ModelFile(
        vocab_size=V,
        n_layers=L,
        d_model=d,
        n_heads=H,
        n_kv_heads=G,
        d_head=d_h,
        d_ff=d_ff,
        attention="gqa",
        norm_eps=1e-5,
        ticks_per_quarter=8,
        horizons=(4,),
        vocabulary=vocabulary,
        metadata=metadata or {"tokenizer": {}, "model": {}},
        tensors=tensors,
    )
    return sage_format.to_bytes(model)


# A model whose metadata leaves room for any broken text below to be written over it, padded with
# spaces (white space JSON allows after the value).
PADDED_METADATA = {"tokenizer": {}, "model": {"padding": "." * 200}}


def with_metadata_text(padded: bytes, text: str | bytes) -> bytes:
    """``padded`` (written with PADDED_METADATA) with ``text`` as its metadata."""
    V, L = struct.unpack_from("<II", padded, 32)
    at = 96 + 4 * L + 12 * V
    (n,) = struct.unpack_from("<I", padded, at)
    raw = text.encode() if isinstance(text, str) else text
    assert len(raw) <= n, text
    data = bytearray(padded)
    data[at + 4 : at + 4 + n] = raw.ljust(n, b" ")
    return with_crc(data)


def metadata_corpus() -> dict[str, bytes]:
    """Metadata JSON that breaks one rule of docs/format.md each, and texts at the limits."""
    padded = minimal_model("f32", PADDED_METADATA)
    base = '"tokenizer": {}, "model": {}'

    def learned(pairs: str) -> bytes:
        return with_metadata_text(padded, "{" + base + ', "learned_programs": ' + pairs + "}")

    return {
        "valid_learned_programs.sage": minimal_model(
            "f32", {"tokenizer": {}, "model": {}, "learned_programs": [[-1, 5], [40, 2**53 - 1]]}
        ),
        # A surrogate pair, a lone surrogate, a raw and an escaped é (distinct names only once
        # unescaped would be duplicates: these are not).
        "valid_metadata_escapes.sage": with_metadata_text(
            padded,
            '{"tokenizer": {"\\ud83d\\ude00 \\ud800": 1, "\u00e9": 2, "\\u00e8\\n": 3}, '
            '"model": {}}',
        ),
        "valid_metadata_nested_32_deep.sage": with_metadata_text(
            padded, "{" + base + ', "x": ' + "[" * 31 + "]" * 31 + "}"
        ),
        "metadata_nested_33_deep.sage": with_metadata_text(
            padded, "{" + base + ', "x": ' + "[" * 32 + "]" * 32 + "}"
        ),
        "metadata_not_utf8.sage": with_metadata_text(padded, b'{"tokenizer": {"s": "\xc0\xaf"}}'),
        "metadata_trailing_comma.sage": with_metadata_text(padded, "{" + base + ",}"),
        "metadata_nan.sage": with_metadata_text(padded, "{" + base + ', "x": NaN}'),
        "metadata_control_character.sage": with_metadata_text(
            padded, "{" + base + ', "x": "\x01"}'
        ),
        "metadata_not_an_object.sage": with_metadata_text(padded, "[{" + base + "}]"),
        "metadata_without_tokenizer.sage": with_metadata_text(padded, '{"model": {}}'),
        "metadata_model_not_an_object.sage": with_metadata_text(
            padded, '{"tokenizer": {}, "model": []}'
        ),
        "metadata_duplicate_member.sage": with_metadata_text(
            padded, "{" + base + ', "mod\\u0065l": {}}'
        ),
        "metadata_text_after_the_object.sage": with_metadata_text(padded, "{" + base + "} {}"),
        "learned_programs_not_pairs.sage": learned("[40, 41]"),
        "learned_programs_empty.sage": learned("[]"),
        "learned_programs_program_128.sage": learned("[[128, 5]]"),
        "learned_programs_zero_notes.sage": learned("[[40, 0]]"),
        "learned_programs_notes_above_2_53.sage": learned("[[40, 9007199254740992]]"),
        "learned_programs_float.sage": learned("[[40, 5.0]]"),
        "learned_programs_bool.sage": learned("[[40, true]]"),
        "learned_programs_not_ascending.sage": learned("[[41, 5], [40, 5]]"),
        "learned_programs_program_twice.sage": learned("[[40, 5], [40, 6]]"),
    }


def with_crc(data: bytearray) -> bytes:
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    return bytes(data)


def put(data: bytearray, offset: int, fmt: str, value) -> bytearray:
    struct.pack_into(fmt, data, offset, value)
    return data


def table_rows(data: bytes) -> dict[str, dict[str, int]]:
    """Byte offsets of each tensor-table row's fields, by tensor name."""
    V, L = struct.unpack_from("<II", data, 32)
    pos = 96 + 4 * L + 12 * V
    pos += 4 + struct.unpack_from("<I", data, pos)[0]
    (n_tensors,) = struct.unpack_from("<I", data, 32 + 14 * 4)
    rows = {}
    for _ in range(n_tensors):
        (n,) = struct.unpack_from("<H", data, pos)
        name = data[pos + 2 : pos + 2 + n].decode()
        row = {"name": pos + 2, "dtype": pos + 2 + n, "ndim": pos + 3 + n, "shape": pos + 4 + n}
        ndim = data[row["ndim"]]
        row["offset"] = row["shape"] + 8 * ndim
        row["nbytes"] = row["offset"] + 8
        rows[name] = row
        pos = row["nbytes"] + 8
    return rows


def main() -> None:
    good = minimal_model("f32")
    q8 = minimal_model("q8_0")
    q4 = minimal_model("q4")
    rows = table_rows(good)
    hp = 32  # hyperparameters
    vocab = 96 + 4  # one layer

    def edit(fmt_offsets, source=good):
        data = bytearray(source)
        for offset, fmt, value in fmt_offsets:
            put(data, offset, fmt, value)
        return with_crc(data)

    wq = rows["layers.0.wq"]
    first = min(rows.values(), key=lambda r: struct.unpack_from("<Q", good, r["offset"])[0])
    (first_offset,) = struct.unpack_from("<Q", good, first["offset"])

    def wq_data(source: bytes) -> int:
        """Where layers.0.wq's data (its first block's scale, when quantized) starts."""
        return struct.unpack_from("<Q", source, table_rows(source)["layers.0.wq"]["offset"])[0]

    corpus = {
        "valid_minimal_f32.sage": good,
        "valid_minimal_q8_0.sage": q8,
        "valid_minimal_q4.sage": q4,
        "empty.sage": b"",
        "short_preamble.sage": good[:20],
        "bad_magic.sage": with_crc(bytearray(b"GGUF" + good[4:])),
        "newer_version.sage": edit([(8, "<I", 2)]),
        "version_zero.sage": edit([(8, "<I", 0)]),
        "version_huge.sage": edit([(8, "<I", 0x01000001)]),  # a flipped high bit: corrupt
        "truncated_stale_checksum.sage": good[: len(good) // 2],
        "flipped_data_byte_stale_checksum.sage": good[:-40] + bytes([good[-40] ^ 4]) + good[-39:],
        "file_size_lies.sage": edit([(24, "<Q", len(good) + 64)]),
        "header_size_past_end.sage": edit([(12, "<I", len(good) + 1)]),
        "data_offset_unaligned.sage": edit([(16, "<Q", struct.unpack_from("<Q", good, 16)[0] + 4)]),
        "vocab_too_large.sage": edit([(hp, "<I", 70000)]),
        "zero_layers.sage": edit([(hp + 4, "<I", 0)]),
        "heads_not_divisible.sage": edit([(hp + 12, "<I", 3), (hp + 16, "<I", 2)]),
        "unknown_attention.sage": edit([(hp + 32, "<I", 3)]),
        "askv_with_one_family.sage": edit([(hp + 32, "<I", 2)]),
        "mha_kv_heads_differ.sage": edit([(hp + 32, "<I", 0)]),  # mha with H 2, G 1
        "eps_zero.sage": edit([(hp + 48, "<f", 0.0)]),
        "eps_nan.sage": edit([(hp + 48, "<f", float("nan"))]),
        "ticks_per_quarter_zero.sage": edit([(hp + 52, "<I", 0)]),
        "ticks_per_quarter_huge.sage": edit([(hp + 52, "<I", 1 << 30)]),
        "too_many_tensors.sage": edit([(hp + 56, "<I", 4097)]),
        "horizon_zero.sage": edit([(96, "<I", 0)]),
        "horizon_too_long.sage": edit([(96, "<I", 1 << 21)]),
        "bad_family.sage": edit([(vocab + 12 * 9, "<B", 7)]),
        "kind_family_mismatch.sage": edit([(vocab + 12 * 9, "<B", 1)]),
        "metadata_too_long.sage": edit([(vocab + 12 * 14, "<I", (16 << 20) + 1)]),
        "tensor_name_bad_chars.sage": edit([(wq["name"], "<B", ord("Q"))]),
        "tensor_name_unknown.sage": edit([(wq["name"], "<B", ord("x"))]),
        "tensor_dtype_unknown.sage": edit([(wq["dtype"], "<B", 9)]),
        "tensor_ndim_zero.sage": edit([(wq["ndim"], "<B", 0)]),
        "tensor_shape_wrong.sage": edit([(wq["shape"], "<Q", 9)]),
        "tensor_shape_huge.sage": edit([(wq["shape"], "<Q", 1 << 40)]),
        "tensor_nbytes_wrong.sage": edit([(wq["nbytes"], "<Q", 4)]),
        "tensor_offset_unaligned.sage": edit([(wq["offset"], "<Q", first_offset + 4)]),
        "tensor_offset_past_end.sage": edit([(wq["offset"], "<Q", 1 << 60)]),
        "tensors_overlap.sage": edit([(wq["offset"], "<Q", first_offset)]),
        "vector_quantized.sage": edit([(rows["final_norm"]["dtype"], "<B", 2)]),
        "matrix_dtype_mixed.sage": edit([(wq["dtype"], "<B", 3), (wq["nbytes"], "<Q", 20 * 8)]),
        "tensor_dtype_f16.sage": edit([(wq["dtype"], "<B", 1), (wq["nbytes"], "<Q", 2 * 8 * 8)]),
        "weight_nan.sage": edit(
            [(struct.unpack_from("<Q", good, wq["offset"])[0], "<f", float("nan"))]
        ),
        "q8_0_value_minus_128.sage": edit([(wq_data(q8) + 4, "<b", -128)], q8),
        "q8_0_scale_nan.sage": edit([(wq_data(q8), "<f", float("nan"))], q8),
        "q4_scale_inf.sage": edit([(wq_data(q4), "<f", float("inf"))], q4),
        **metadata_corpus(),
    }
    for old in HERE.glob("*.sage"):
        old.unlink()
    for name, data in corpus.items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(corpus)} files to {HERE}")


if __name__ == "__main__":
    main()
