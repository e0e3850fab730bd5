"""The .sage file (sage_edge.format) against docs/format.md: round trips and every bad input."""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from sage_edge import ModelFormatError, quant, tokenizer
from sage_edge import format as sage_format

# A real tiny model with the project's tokenizer, one file per dtype.


@pytest.fixture(scope="module")
def real_models():
    torch = pytest.importorskip("torch")
    from training.export import model_file
    from training.model import ModelConfig, SageModel, two_scale

    tok = tokenizer.Tokenizer.default()
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=tok.vocab_size,
        n_layers=2,
        d_model=32,
        n_heads=4,
        n_kv_heads=2,
        d_ff=48,  # not a multiple of 32: w2's rows end in a padded block
        attention="askv",
        families=tok.families.tolist(),
        horizons=list(two_scale(2, 1, 64, 16).horizons),
    )
    model = SageModel(config).eval()
    return tok, model, {q: model_file(model, tok.to_json(), q, {"name": "t"}) for q in quant.DTYPES}


@pytest.mark.parametrize("dtype", quant.DTYPES)
def test_round_trip_of_a_real_model(real_models, tmp_path, dtype):
    tok, model, files = real_models
    written = files[dtype]
    path = tmp_path / f"tiny_{dtype}.sage"
    size = sage_format.write(path, written)
    assert size == path.stat().st_size
    read = sage_format.read(path)

    for field in ("vocab_size", "n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_ff"):
        assert getattr(read, field) == getattr(written, field)
    assert read.attention == "askv" and read.n_families == 6
    assert read.norm_eps == np.float32(1e-5)
    assert read.horizons == (64, 16)
    assert read.ticks_per_quarter == tok.ticks_per_quarter
    np.testing.assert_array_equal(read.vocabulary, tok.token_table())
    assert read.metadata == written.metadata
    assert read.matrix_dtype == dtype
    assert list(read.tensors) == list(written.expected_shapes())
    for name, tensor in written.tensors.items():
        got = read.tensors[name]
        assert (got.dtype, got.shape) == (tensor.dtype, tensor.shape)
        assert got.data.tobytes() == tensor.data.tobytes()
        assert read.dequantized(name).tobytes() == tensor.dequantize().tobytes()
    # The f32 file holds the model's weights exactly.
    if dtype == "f32":
        for name, weight in model.tensors().items():
            np.testing.assert_array_equal(read.dequantized(name), weight.numpy())
    # The tokenizer travels in the file.
    rebuilt = tokenizer.Tokenizer.from_json(read.tokenizer_json())
    np.testing.assert_array_equal(rebuilt.token_table(), tok.token_table())


def test_file_layout_follows_the_contract(real_models):
    _, _, files = real_models
    data = sage_format.to_bytes(files["q4"])
    magic, version, header_size, data_offset, file_size = struct.unpack_from("<8sIIQQ", data)
    assert magic == b"SAGEMDL\0" and version == 1
    assert data_offset % 64 == 0 and data_offset - 64 < header_size <= data_offset
    assert file_size == len(data)
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == zlib.crc32(data[:-4])
    rows = table_rows(data)
    assert rows[-1]["end"] == header_size
    used = np.zeros(len(data), bool)
    used[:header_size] = True
    used[-4:] = True
    for row in rows:
        assert row["offset"] % 64 == 0
        used[row["offset"] : row["offset"] + row["nbytes"]] = True
    assert not np.frombuffer(data, np.uint8)[~used].any(), "padding must be zero"


def test_read_returns_read_only_views_and_fresh_dequantized_arrays(real_models):
    _, _, files = real_models
    read = sage_format.from_bytes(sage_format.to_bytes(files["f32"]))
    assert not read.tensors["output"].data.flags.writeable
    values = read.dequantized("output")
    values[0, 0] = 42.0  # a copy: the file's buffer is untouched
    assert read.tensors["output"].data[0, 0] != 42.0


def test_kind_family_table_matches_the_tokenizer():
    assert sage_format.VOCABULARY_DTYPE == tokenizer.TOKEN_TABLE_DTYPE


# A small synthetic file (about 6 KB) for the exhaustive corruption tests.

SMALL_VOCABULARY = [  # family, kind, a, b
    (0, 0, 0, 0),
    (0, 1, 0, 0),
    (0, 2, 0, 0),
    (0, 3, 0, 0),
    (1, 4, 0, 0),
    (1, 5, 3, 4),
    (1, 6, 240, 0),
    (1, 7, 120000, 0),
    (2, 8, 52, 0),
    (3, 9, 60, 0),
    (3, 9, 62, 0),
    (3, 10, 36, 0),
    (4, 11, 64, 0),
    (5, 12, 480, 0),
    (5, 12, 240, 0),
    (0, 13, 0, 0),
]


def small_model(dtype="q4", attention="askv"):
    vocabulary = np.array(SMALL_VOCABULARY, dtype=sage_format.VOCABULARY_DTYPE)
    n_kv = 1 if attention != "mha" else 2
    model = sage_format.ModelFile(
        vocab_size=16,
        n_layers=1,
        d_model=32,
        n_heads=2,
        n_kv_heads=n_kv,
        d_head=8,
        d_ff=32,
        attention=attention,
        norm_eps=1e-5,
        ticks_per_quarter=480,
        horizons=(8,),
        vocabulary=vocabulary,
        metadata={"tokenizer": {"format": "test"}, "model": {"name": "small"}},
        tensors={},
    )
    rng = np.random.default_rng(0)
    for name, shape in model.expected_shapes().items():
        values = rng.standard_normal(shape).astype(np.float32)
        model.tensors[name] = sage_format.Tensor.from_array(
            values, "f32" if len(shape) == 1 else dtype
        )
    return model


@pytest.fixture(scope="module")
def small_file():
    data = sage_format.to_bytes(small_model())
    assert len(data) < 8000
    return data


def table_rows(data):
    """Positions of every field of the tensor table, walked independently of the reader."""
    v, n_layers = struct.unpack_from("<II", data, 32)
    n_tensors = struct.unpack_from("<I", data, 32 + 4 * 14)[0]
    pos = 96 + 4 * n_layers + 12 * v
    pos += 4 + struct.unpack_from("<I", data, pos)[0]
    rows = []
    for _ in range(n_tensors):
        row = {"start": pos}
        (length,) = struct.unpack_from("<H", data, pos)
        row["name"] = data[pos + 2 : pos + 2 + length].decode()
        pos += 2 + length
        row["dtype_pos"], row["ndim_pos"] = pos, pos + 1
        ndim = data[pos + 1]
        pos += 2
        row["shape_pos"] = pos
        row["shape"] = struct.unpack_from(f"<{ndim}Q", data, pos)
        pos += 8 * ndim
        row["offset_pos"], row["nbytes_pos"] = pos, pos + 8
        row["offset"], row["nbytes"] = struct.unpack_from("<QQ", data, pos)
        pos += 16
        row["end"] = pos
        rows.append(row)
    return rows


def row_named(data, name):
    return next(row for row in table_rows(data) if row["name"] == name)


def with_crc(data):
    data = bytearray(data)
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    return bytes(data)


def patched(data, pos, fmt, *values):
    """``data`` with ``values`` packed at ``pos`` and the checksum made valid again."""
    data = bytearray(data)
    struct.pack_into(fmt, data, pos, *values)
    return with_crc(data)


def assert_refused(data, match):
    with pytest.raises(ModelFormatError, match=match):
        sage_format.from_bytes(data, "bad.sage")


def test_small_file_reads(small_file):
    model = sage_format.from_bytes(small_file)
    assert model.matrix_dtype == "q4" and model.vocab_size == 16


def test_every_truncation_is_refused(small_file):
    for length in range(len(small_file)):
        with pytest.raises(ModelFormatError):
            sage_format.from_bytes(small_file[:length])
    assert_refused(small_file + b"\0", "extra bytes")


def test_every_flipped_byte_is_refused(small_file):
    buffer = bytearray(small_file)
    for pos in range(len(buffer)):
        buffer[pos] ^= 0x5A
        with pytest.raises(ModelFormatError):
            sage_format.from_bytes(bytes(buffer))
        buffer[pos] ^= 0x5A


def test_checksum_mismatch_names_the_problem(small_file):
    data = bytearray(small_file)
    data[len(data) // 2] ^= 1
    assert_refused(bytes(data), "checksum mismatch")


# Header fields corrupted with a valid checksum: the field checks must catch each one.

HYPERPARAMETER_NAMES = (
    "vocab_size",
    "n_layers",
    "d_model",
    "n_heads",
    "n_kv_heads",
    "d_head",
    "d_ff",
    "n_families",
    "attention",
    "position",
    "norm",
    "ffn",
    "norm_eps",
    "ticks_per_quarter",
    "n_tensors",
    "reserved",
)
HYPERPARAMETER = {name: 32 + 4 * i for i, name in enumerate(HYPERPARAMETER_NAMES)}


def test_preamble_fields(small_file):
    assert_refused(patched(small_file, 0, "8s", b"GGUF\0\0\0\0"), "not a sage-edge model file")
    assert_refused(patched(small_file, 8, "<I", 2), "version 2, written by a newer sage-edge")
    assert_refused(patched(small_file, 8, "<I", 99), "version 99, written by a newer sage-edge")
    assert_refused(patched(small_file, 8, "<I", 0), "corrupt file: format version field is 0")
    assert_refused(patched(small_file, 8, "<I", 100), "corrupt file: format version field is 100")
    header_size, data_offset = struct.unpack_from("<IQ", small_file, 12)
    assert_refused(patched(small_file, 12, "<I", 20), "header_size")
    assert_refused(patched(small_file, 12, "<I", header_size + 1), "tensor table ends")
    assert_refused(patched(small_file, 12, "<I", 2**31), "header_size")
    assert_refused(patched(small_file, 16, "<Q", data_offset + 8), "data_offset")
    assert_refused(patched(small_file, 16, "<Q", 2**60), "data_offset")
    assert_refused(patched(small_file, 24, "<Q", len(small_file) - 1), "file_size")
    assert_refused(patched(small_file, 24, "<Q", 2**63), "file_size")


def test_newer_version_is_refused_before_anything_else():
    future = b"SAGEMDL\0" + struct.pack("<IIQQ", 7, 0, 0, 0)  # a layout this reader can't know
    assert_refused(future, "format version 7, written by a newer sage-edge")


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("vocab_size", 0, "vocab_size"),
        ("vocab_size", 70_000, "vocab_size"),
        ("vocab_size", 17, "token 16|ends inside"),
        ("n_layers", 0, "n_layers"),
        ("n_layers", 2**32 - 1, "n_layers"),
        ("n_layers", 2, "horizon|ends inside|tensor"),
        ("d_model", 0, "d_model"),
        ("d_model", 2**20, "d_model"),
        ("d_model", 64, "shape"),
        ("n_heads", 300, "n_heads"),
        ("n_heads", 4, "shape"),
        ("n_kv_heads", 0, "n_kv_heads"),
        ("n_kv_heads", 4, "n_kv_heads"),
        ("d_head", 2000, "d_head"),
        ("d_ff", 0, "d_ff"),
        ("d_ff", 64, "shape"),
        ("n_families", 1, "n_families"),
        ("attention", 3, "unknown attention"),
        ("attention", 1, "n_families"),
        ("position", 1, "unknown position"),
        ("norm", 2, "unknown norm"),
        ("ffn", 1, "unknown ffn"),
        ("ticks_per_quarter", 0, "ticks_per_quarter"),
        ("ticks_per_quarter", 32_768, "ticks_per_quarter"),
        ("ticks_per_quarter", 2**30, "ticks_per_quarter"),
        ("n_tensors", 5000, "n_tensors"),
        ("n_tensors", 14, "ends inside"),
        ("n_tensors", 12, "tensor table ends"),
        ("reserved", 1, "reserved"),
    ],
)
def test_hyperparameter_fields(small_file, field, value, match):
    assert_refused(patched(small_file, HYPERPARAMETER[field], "<I", value), match)


def test_kv_heads_must_divide_heads(small_file):
    bad = patched(small_file, HYPERPARAMETER["n_heads"], "<I", 3)
    assert_refused(patched(bad, HYPERPARAMETER["n_kv_heads"], "<I", 2), "does not divide")


@pytest.mark.parametrize("eps", [0.0, -1e-5, float("nan"), float("inf")])
def test_norm_eps_must_be_positive_and_finite(small_file, eps):
    assert_refused(patched(small_file, HYPERPARAMETER["norm_eps"], "<f", eps), "norm_eps")


def test_horizons(small_file):
    assert_refused(patched(small_file, 96, "<I", 0), "horizon of layer 0")
    assert_refused(patched(small_file, 96, "<I", 2**20 + 1), "horizon of layer 0")


def test_vocabulary_entries(small_file):
    entry = 96 + 4 + 12 * 9  # token 9, a PITCH
    assert_refused(patched(small_file, entry, "<B", 6), "token 9 has family 6")
    assert_refused(patched(small_file, entry, "<B", 4), "token 9 has family 4 but kind 9")
    assert_refused(patched(small_file, entry + 1, "<B", 14), "token 9 has unknown kind 14")
    assert_refused(patched(small_file, entry + 2, "<H", 1), "entry 9 has a non-zero reserved")


def test_metadata(small_file):
    length_pos = 96 + 4 + 12 * 16
    (length,) = struct.unpack_from("<I", small_file, length_pos)
    assert_refused(patched(small_file, length_pos, "<I", 17 * 2**20), "metadata length")
    assert_refused(patched(small_file, length_pos, "<I", 2**32 - 1), "metadata length")
    assert_refused(patched(small_file, length_pos, "<I", length + 5000), "ends inside the metadata")
    text = small_file[length_pos + 4 : length_pos + 4 + length]

    def replaced(new_text):
        assert len(new_text) == len(text)
        data = bytearray(small_file)
        data[length_pos + 4 : length_pos + 4 + length] = new_text
        return with_crc(data)

    assert_refused(replaced(b"\xff" + text[1:]), "not UTF-8 JSON")
    assert_refused(replaced(text[:-1] + b","), "not UTF-8 JSON")
    assert_refused(replaced(b"[" + text[1:-1] + b"]"), "not UTF-8 JSON|not a JSON object")
    assert_refused(replaced(text.replace(b'"tokenizer"', b'"tokenizes"')), '"tokenizer"')
    assert_refused(replaced(text.replace(b'"model"', b'"MODEL"')), '"model"')


def test_tensor_table_rows(small_file):
    rows = table_rows(small_file)
    names = [row["name"] for row in rows]
    wq = row_named(small_file, "layers.0.wq")
    w1 = row_named(small_file, "layers.0.w1")
    w3 = row_named(small_file, "layers.0.w3")
    data_offset = struct.unpack_from("<Q", small_file, 16)[0]
    end_of_data = len(small_file) - 4

    # offsets and sizes
    assert_refused(patched(small_file, wq["offset_pos"], "<Q", wq["offset"] + 4), "multiple of 64")
    assert_refused(patched(small_file, wq["offset_pos"], "<Q", 2**63), "outside the tensor data")
    assert_refused(patched(small_file, wq["offset_pos"], "<Q", end_of_data // 64 * 64), "outside")
    assert_refused(patched(small_file, wq["offset_pos"], "<Q", data_offset - 64), "outside")
    assert_refused(patched(small_file, w3["offset_pos"], "<Q", w1["offset"]), "overlap")
    assert_refused(patched(small_file, wq["nbytes_pos"], "<Q", wq["nbytes"] - 20), "nbytes")
    assert_refused(patched(small_file, wq["nbytes_pos"], "<Q", 2**64 - 1), "nbytes")
    # shapes and dtypes
    assert_refused(patched(small_file, wq["shape_pos"], "<Q", 2**40), "each dimension")
    assert_refused(patched(small_file, wq["shape_pos"], "<Q", 0), "each dimension")
    assert_refused(patched(small_file, wq["shape_pos"], "<Q", 8), "nbytes")
    assert_refused(patched(small_file, wq["dtype_pos"], "<B", 4), "unknown dtype 4")
    assert_refused(patched(small_file, wq["dtype_pos"], "<B", 2), "nbytes")
    assert_refused(patched(small_file, wq["ndim_pos"], "<B", 0), "0 dimensions")
    assert_refused(patched(small_file, wq["ndim_pos"], "<B", 5), "5 dimensions")
    # names
    assert_refused(patched(small_file, w1["start"] + 2, "11s", b"layers.0.w3"), "more than once")
    assert_refused(patched(small_file, w1["start"] + 2, "11s", b"layers.0.w9"), "missing tensor")
    assert_refused(patched(small_file, w1["start"] + 2, "11s", b"Layers.0.w1"), "name")
    assert_refused(patched(small_file, w1["start"] + 2, "11s", b"layers.0/w1"), "name")
    assert_refused(patched(small_file, w1["start"], "<H", 0), "name")
    assert_refused(patched(small_file, w1["start"], "<H", 60000), "ends inside")
    assert len(set(names)) == len(names) == 13


def test_tensor_shapes_and_dtypes_must_match_the_model():
    data = sage_format.to_bytes(small_model("f32"))
    slopes = row_named(data, "alibi_slopes")
    wq = row_named(data, "layers.0.wq")
    # a vector stored as q4 (nbytes made consistent: one block): vectors are always f32
    bad = patched(data, slopes["dtype_pos"], "<B", quant.DTYPE_CODES["q4"])
    assert_refused(patched(bad, slopes["nbytes_pos"], "<Q", 20), "vectors are always f32")
    # one matrix of another dtype than the rest: wq [16, 32] as q4, 16 blocks
    bad = patched(data, wq["dtype_pos"], "<B", quant.DTYPE_CODES["q4"])
    assert_refused(patched(bad, wq["nbytes_pos"], "<Q", 16 * 20), "share one dtype")
    # f16 (code 1) is refused by name, however consistent its nbytes
    bad = patched(data, wq["dtype_pos"], "<B", 1)
    assert_refused(patched(bad, wq["nbytes_pos"], "<Q", wq["nbytes"] // 2), r"dtype 1 \(f16\)")
    # a consistent shape that is not the model's: wq as [32, 16] instead of [16, 32]
    assert_refused(patched(data, wq["shape_pos"], "<QQ", 32, 16), r"shape \(32, 16\)")


def test_tensor_values(small_file):
    data = sage_format.to_bytes(small_model("q8_0"))
    wq = row_named(data, "layers.0.wq")
    assert_refused(patched(data, wq["offset"] + 4, "<b", -128), "q8_0 value -128")
    assert_refused(patched(data, wq["offset"], "<f", float("nan")), "scale")
    norm = row_named(data, "layers.0.attn_norm")
    assert_refused(patched(data, norm["offset"], "<f", float("inf")), "NaN or infinity")


def test_read_names_the_file(tmp_path, small_file):
    with pytest.raises(ModelFormatError, match="no such file"):
        sage_format.read(tmp_path / "missing.sage")
    with pytest.raises(ModelFormatError, match="not a file"):
        sage_format.read(tmp_path)
    path = tmp_path / "cut.sage"
    path.write_bytes(small_file[:100])
    with pytest.raises(ModelFormatError, match=r"cut\.sage: file_size"):
        sage_format.read(path)


# The writer refuses models that break the format.


def test_writer_refuses_bad_models():
    model = small_model()
    del model.tensors["layers.0.w2"]
    with pytest.raises(ValueError, match="missing tensor 'layers.0.w2'"):
        sage_format.to_bytes(model)

    model = small_model()
    model.tensors["extra"] = sage_format.Tensor.from_array(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="unexpected tensor 'extra'"):
        sage_format.to_bytes(model)

    model = small_model()
    model.tensors["layers.0.wq"] = sage_format.Tensor.from_array(np.zeros((16, 32)), "q8_0")
    with pytest.raises(ValueError, match="share one dtype"):
        sage_format.to_bytes(model)

    model = small_model()
    model.tensors["final_norm"] = sage_format.Tensor.from_array(np.ones(32), "q8_0")
    with pytest.raises(ValueError, match="vectors are always f32"):
        sage_format.to_bytes(model)

    model = small_model()
    model.tensors["layers.0.wq"].shape = (16, 33)
    with pytest.raises(ValueError, match="shape"):
        sage_format.to_bytes(model)

    model = small_model()
    model.horizons = (8, 8)
    with pytest.raises(ValueError, match="2 horizons for 1 layers"):
        sage_format.to_bytes(model)

    model = small_model()
    model.vocabulary["family"][3] = 2
    with pytest.raises(ValueError, match="token 3 has family 2"):
        sage_format.to_bytes(model)

    model = small_model()
    model.metadata = {"model": {}}
    with pytest.raises(ValueError, match='"tokenizer"'):
        sage_format.to_bytes(model)


@pytest.mark.parametrize("attention", ["mha", "gqa"])
def test_single_family_attention_modes_round_trip(attention):
    model = small_model("q8_0", attention)
    read = sage_format.from_bytes(sage_format.to_bytes(model))
    assert read.attention == attention and read.n_families == 1
    assert read.tensors["layers.0.wk"].shape == (1, model.n_kv_heads * 8, 32)


def test_metadata_is_utf8_json(small_file):
    model = small_model()
    model.metadata["model"]["title"] = "Bourrée — für Elise ♪"
    read = sage_format.from_bytes(sage_format.to_bytes(model))
    assert read.metadata["model"]["title"] == "Bourrée — für Elise ♪"
    assert json.loads(read.tokenizer_json()) == {"format": "test"}


# The fixtures the C++ engine's tests load (tests/data/make_tiny_model.py makes them).

DATA = Path(__file__).resolve().parent / "data"


def test_engine_fixture_files_are_valid_and_agree():
    f32 = sage_format.read(DATA / "tiny_f32.sage")
    q8_0 = sage_format.read(DATA / "tiny_q8_0.sage")
    tok = tokenizer.Tokenizer.default()
    for model, dtype in ((f32, "f32"), (q8_0, "q8_0")):
        assert model.matrix_dtype == dtype
        assert (model.n_layers, model.d_model, model.attention, model.horizons) == (
            2,
            32,
            "askv",
            (32, 8),
        )
        np.testing.assert_array_equal(model.vocabulary, tok.token_table())
    for name, tensor in f32.tensors.items():
        expected = tensor.data if tensor.data.ndim == 1 else quant.quantize_q8_0(tensor.data)
        assert q8_0.tensors[name].data.tobytes() == expected.tobytes(), name


# The corpus of broken files the C++ loader's fuzz test replays (csrc/tests/corpus/make_corpus.py):
# both readers refuse each one, or accept it when its name starts with "valid_".

CORPUS = Path(__file__).resolve().parents[1] / "csrc" / "tests" / "corpus"
# A part of both readers' messages for the files whose cause must be named the same way.
CORPUS_MESSAGES = {
    "newer_version.sage": "written by a newer sage-edge",
    "version_zero.sage": "corrupt file",
    "version_huge.sage": "corrupt file",
    "flipped_data_byte_stale_checksum.sage": "checksum",
    "mha_kv_heads_differ.sage": "n_kv_heads",
    "ticks_per_quarter_zero.sage": "ticks_per_quarter",
    "ticks_per_quarter_huge.sage": "ticks_per_quarter",
    "tensor_dtype_f16.sage": "dtype 1 (f16), which sage-edge no longer reads",
}


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.sage")), ids=lambda p: p.name)
def test_both_readers_agree_on_the_corpus(path):
    from sage_edge import _engine

    def outcome(read) -> str:
        try:
            read(str(path))
        except ModelFormatError as exc:
            return str(exc)
        return "loads"

    python, engine = outcome(sage_format.read), outcome(_engine.Model)
    expected = "loads" if path.name.startswith("valid_") else "refused"
    assert (python == "loads", engine == "loads") == (expected == "loads",) * 2, (python, engine)
    for name, phrase in CORPUS_MESSAGES.items():
        if name in path.name:
            assert phrase in python and phrase in engine, (python, engine)
