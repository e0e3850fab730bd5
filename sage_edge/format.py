"""Read and write ``.sage`` model files, exactly as ``docs/format.md`` (version 1) lays them out.

numpy only. :func:`write` stores a :class:`ModelFile`; :func:`read` returns one after checking
every field of the file, raising :class:`sage_edge.ModelFormatError` that names the file and what
is wrong before anything is returned.

The reader reads the whole file into one ``bytes`` object (its size is known from ``stat``, so it
never allocates more than the file holds) and verifies the checksum over it; the tensors it returns
are read-only numpy views into that buffer, so no weight is copied, and the file is closed on
return. Quantized tensors come back as arrays of blocks (``sage_edge.quant``);
:meth:`ModelFile.dequantized` gives the f32 values.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sage_edge import quant
from sage_edge.errors import ModelFormatError
from sage_edge.vocab import KIND_FAMILY, N_FAMILIES, Kind

MAGIC = b"SAGEMDL\0"
VERSION = 1
# A version above VERSION and below this was written by a newer sage-edge; 0 or anything from here
# on is a corrupt field (docs/format.md, "Preamble").
FIRST_IMPLAUSIBLE_VERSION = 100

PREAMBLE = struct.Struct("<8sIIQQ")  # magic, version, header_size, data_offset, file_size
HYPERPARAMETERS = struct.Struct("<12If3I")  # sixteen 4-byte fields, ε is the f32 at index 12
CHECKSUM_SIZE = 4
ALIGNMENT = 64
assert PREAMBLE.size == 32 and HYPERPARAMETERS.size == 64

ATTENTION_MODES = ("mha", "gqa", "askv")
N_ATTRIBUTE_FAMILIES = N_FAMILIES  # key/value projections per layer with askv attention

# One vocabulary entry in the file (12 bytes) and as returned (the tokenizer's token table layout).
VOCAB_ENTRY = np.dtype(
    [("family", "u1"), ("kind", "u1"), ("reserved", "<u2"), ("a", "<i4"), ("b", "<i4")]
)
VOCABULARY_DTYPE = np.dtype([("family", "u1"), ("kind", "u1"), ("a", "<i4"), ("b", "<i4")])
assert VOCAB_ENTRY.itemsize == 12
# The family of each token kind, indexed by kind (docs/format.md, Vocabulary).
_FAMILY_OF_KIND = np.array([KIND_FAMILY[kind] for kind in Kind], dtype=np.int64)

# Limits a reader enforces before allocating anything (docs/format.md).
MAX_VOCAB = 65_536
MAX_LAYERS = 256
MAX_WIDTH = 65_536
MAX_HEAD_WIDTH = 1_024
MAX_HEADS = 256
MAX_HORIZON = 1_048_576
MAX_METADATA = 16 * 1024 * 1024
MAX_METADATA_DEPTH = 32  # nested arrays and objects
MAX_LEARNED_NOTES = 2**53 - 1
MAX_TENSORS = 4_096
MAX_TICKS_PER_QUARTER = 32_767  # the most a MIDI file header can state (docs/format.md)
MAX_DIM = 2**32
_NAME = re.compile(rb"[a-z0-9_.]{1,255}")
_DTYPE_BY_CODE = {code: name for name, code in quant.DTYPE_CODES.items()}


def align64(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


@dataclass
class Tensor:
    """One tensor of a model file: its dtype, its logical shape and the stored array.

    ``data`` is a float array of ``shape`` for ``f32`` and an array of blocks of shape
    ``(…, ⌈n/32⌉)`` for ``q8_0``/``q4`` (``sage_edge.quant``).
    """

    dtype: str
    shape: tuple[int, ...]
    data: np.ndarray = field(repr=False)

    @classmethod
    def from_array(cls, values: np.ndarray, dtype: str = "f32") -> Tensor:
        """Store ``values`` as ``dtype`` (one of ``quant.DTYPES``), quantizing if asked."""
        values = np.asarray(values)
        return cls(dtype, tuple(int(n) for n in values.shape), quant.quantize(values, dtype))

    def dequantize(self) -> np.ndarray:
        """The f32 values, shape ``shape`` (a new, writable array)."""
        return quant.dequantize(self.data, self.dtype, self.shape[-1])

    @property
    def nbytes(self) -> int:
        return quant.nbytes(self.shape, self.dtype)


@dataclass
class ModelFile:
    """Everything a ``.sage`` file holds (docs/format.md)."""

    vocab_size: int
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_ff: int
    attention: str  # "mha", "gqa" or "askv"
    norm_eps: float
    ticks_per_quarter: int
    horizons: tuple[int, ...]
    vocabulary: np.ndarray = field(repr=False)  # V entries of family, kind, a, b
    metadata: dict = field(repr=False)  # {"tokenizer": {...}, "model": {...}}
    tensors: dict[str, Tensor] = field(repr=False)

    @property
    def n_families(self) -> int:
        return N_ATTRIBUTE_FAMILIES if self.attention == "askv" else 1

    @property
    def matrix_dtype(self) -> str:
        """The dtype every matrix of the file shares."""
        return self.tensors["tok_embedding"].dtype

    def dequantized(self, name: str) -> np.ndarray:
        """f32 values of tensor ``name``."""
        return self.tensors[name].dequantize()

    def dequantized_tensors(self) -> dict[str, np.ndarray]:
        """f32 values of every tensor, by name (what ``SageModel.load_tensors`` takes)."""
        return {name: tensor.dequantize() for name, tensor in self.tensors.items()}

    @property
    def learned_programs(self) -> dict[int, int] | None:
        """Notes per General MIDI program (-1 = drums) in the training data, ascending by program;
        None when the file does not record them (docs/format.md, "learned_programs")."""
        pairs = self.metadata.get("learned_programs")
        return None if pairs is None else {int(p): int(n) for p, n in pairs}

    @learned_programs.setter
    def learned_programs(self, programs: dict[int, int] | None) -> None:
        self.metadata = {k: v for k, v in self.metadata.items() if k != "learned_programs"}
        if programs is not None:
            pairs = [[int(p), int(n)] for p, n in sorted(programs.items())]
            self.metadata["learned_programs"] = pairs

    def tokenizer_json(self) -> str:
        """The tokenizer configuration, as ``sage_edge.tokenizer.Tokenizer.from_json`` takes it."""
        return json.dumps(self.metadata["tokenizer"], sort_keys=True)

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name → shape of every tensor the file must hold, in the order the writer stores them."""
        d, f, v = self.d_model, self.n_families, self.vocab_size
        qkv = self.n_heads * self.d_head
        kv = self.n_kv_heads * self.d_head
        shapes: dict[str, tuple[int, ...]] = {
            "tok_embedding": (v, d),
            "alibi_slopes": (self.n_heads,),
        }
        for layer in range(self.n_layers):
            p = f"layers.{layer}."
            shapes[p + "attn_norm"] = (d,)
            shapes[p + "wq"] = (qkv, d)
            shapes[p + "wk"] = (f, kv, d)
            shapes[p + "wv"] = (f, kv, d)
            shapes[p + "wo"] = (d, qkv)
            shapes[p + "ffn_norm"] = (d,)
            shapes[p + "w1"] = (self.d_ff, d)
            shapes[p + "w3"] = (self.d_ff, d)
            shapes[p + "w2"] = (d, self.d_ff)
        shapes["final_norm"] = (d,)
        shapes["output"] = (v, d)
        return shapes


# checks shared by the reader and the writer (they raise ModelFormatError without the file name)


def _check_hyperparameters(m: ModelFile, with_horizons: bool = True) -> None:
    def within(name: str, value: int, lo: int, hi: int) -> None:
        if not lo <= value <= hi:
            raise ModelFormatError(f"{name} = {value} is outside [{lo}, {hi}]")

    within("vocab_size", m.vocab_size, 1, MAX_VOCAB)
    within("n_layers", m.n_layers, 1, MAX_LAYERS)
    within("d_model", m.d_model, 1, MAX_WIDTH)
    within("d_ff", m.d_ff, 1, MAX_WIDTH)
    within("d_head", m.d_head, 1, MAX_HEAD_WIDTH)
    within("n_heads", m.n_heads, 1, MAX_HEADS)
    within("n_kv_heads", m.n_kv_heads, 1, m.n_heads)
    if m.n_heads % m.n_kv_heads:
        raise ModelFormatError(f"n_kv_heads = {m.n_kv_heads} does not divide n_heads = {m.n_heads}")
    if m.attention == "mha" and m.n_kv_heads != m.n_heads:
        raise ModelFormatError(
            f"mha attention needs n_kv_heads == n_heads, got {m.n_kv_heads} and {m.n_heads}"
        )
    if m.attention not in ATTENTION_MODES:
        raise ModelFormatError(f"unknown attention mode {m.attention!r}")
    if not (math.isfinite(m.norm_eps) and m.norm_eps > 0):
        raise ModelFormatError(f"norm_eps = {m.norm_eps} must be positive and finite")
    within("ticks_per_quarter", m.ticks_per_quarter, 1, MAX_TICKS_PER_QUARTER)
    if not with_horizons:
        return
    if len(m.horizons) != m.n_layers:
        raise ModelFormatError(f"{len(m.horizons)} horizons for {m.n_layers} layers")
    for layer, h in enumerate(m.horizons):
        within(f"horizon of layer {layer}", int(h), 1, MAX_HORIZON)


def _check_vocabulary(table: np.ndarray, vocab_size: int) -> None:
    if table.shape != (vocab_size,):
        raise ModelFormatError(f"vocabulary has shape {table.shape}, expected ({vocab_size},)")
    family = table["family"].astype(np.int64)
    kind = table["kind"].astype(np.int64)
    bad = np.flatnonzero((kind < 0) | (kind >= len(_FAMILY_OF_KIND)))
    if bad.size:
        raise ModelFormatError(f"token {bad[0]} has unknown kind {kind[bad[0]]}")
    bad = np.flatnonzero(family != _FAMILY_OF_KIND[kind])
    if bad.size:
        i = bad[0]
        raise ModelFormatError(
            f"token {i} has family {family[i]} but kind {kind[i]} belongs to family "
            f"{_FAMILY_OF_KIND[kind[i]]}"
        )


def _check_metadata(metadata: object) -> None:
    if not isinstance(metadata, dict):
        raise ModelFormatError("metadata is not a JSON object")
    if _json_depth(metadata) > MAX_METADATA_DEPTH:
        raise ModelFormatError(f"metadata nests more than {MAX_METADATA_DEPTH} deep")
    for key in ("tokenizer", "model"):
        if not isinstance(metadata.get(key), dict):
            raise ModelFormatError(f'metadata has no "{key}" object')
    if "learned_programs" in metadata:
        _check_learned_programs(metadata["learned_programs"])


def _check_learned_programs(pairs: object) -> None:
    """[[program, notes], ...]: programs ascending in -1..127, notes in 1..2^53-1."""

    def integer(value: object, lo: int, hi: int) -> bool:
        exact = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        return exact and lo <= value <= hi

    if not isinstance(pairs, (list, tuple)) or not all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in pairs
    ):
        raise ModelFormatError("learned_programs must be a list of [program, notes] pairs")
    if not pairs:
        raise ModelFormatError("learned_programs is empty")
    for program, notes in pairs:
        if not integer(program, -1, 127):
            raise ModelFormatError(
                f"learned_programs holds the program {program!r}, not an integer in -1..127"
            )
        if not integer(notes, 1, MAX_LEARNED_NOTES):
            raise ModelFormatError(
                f"learned_programs holds the note count {notes!r}, not an integer in 1..2^53-1"
            )
    programs = [program for program, _ in pairs]
    if any(a >= b for a, b in zip(programs, programs[1:], strict=False)):
        raise ModelFormatError("learned_programs is not in strictly ascending program order")


def _unique_members(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object's members as a dict, refusing two members of one name."""
    members = dict(pairs)
    if len(members) != len(pairs):
        names = [name for name, _ in pairs]
        twice = next(name for name in names if names.count(name) > 1)
        raise ValueError(f'two members named "{twice}" in one object')
    return members


def _json_depth(value: object) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (a scalar is 0)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list, tuple)):  # a writer's tuples become arrays
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return deepest


def _check_tensor_set(m: ModelFile) -> None:
    expected = m.expected_shapes()
    missing = [name for name in expected if name not in m.tensors]
    if missing:
        raise ModelFormatError(f"missing tensor {missing[0]!r}" + _more(missing))
    unexpected = [name for name in m.tensors if name not in expected]
    if unexpected:
        raise ModelFormatError(f"unexpected tensor {unexpected[0]!r}" + _more(unexpected))
    matrix_dtype = m.tensors["tok_embedding"].dtype
    for name, shape in expected.items():
        tensor = m.tensors[name]
        if tuple(tensor.shape) != shape:
            raise ModelFormatError(f"tensor {name!r} has shape {tensor.shape}, expected {shape}")
        if len(shape) == 1 and tensor.dtype != "f32":
            raise ModelFormatError(f"vector {name!r} is {tensor.dtype}; vectors are always f32")
        if len(shape) > 1 and tensor.dtype != matrix_dtype:
            raise ModelFormatError(
                f"matrix {name!r} is {tensor.dtype} but tok_embedding is {matrix_dtype}; "
                "the matrices of a file share one dtype"
            )


def _check_values(name: str, tensor: Tensor) -> None:
    """No NaN or infinity, and no q8_0 value −128 (the kernels require q ∈ [−127, 127])."""
    if tensor.dtype in quant.QUANTIZED:
        if not np.isfinite(tensor.data["scale"]).all():
            raise ModelFormatError(f"tensor {name!r} has a scale that is NaN or infinite")
        if tensor.dtype == "q8_0" and (tensor.data["q"] == -128).any():
            raise ModelFormatError(f"tensor {name!r} holds the q8_0 value -128")
    elif not np.isfinite(tensor.data).all():
        raise ModelFormatError(f"tensor {name!r} holds NaN or infinity")


def _more(names: list[str]) -> str:
    return f" (and {len(names) - 1} more)" if len(names) > 1 else ""


# writing


def write(path: str | os.PathLike, model: ModelFile) -> int:
    """Write ``model`` to ``path`` (atomically: a temporary file renamed); return the file size.

    Raises ``ValueError`` when ``model`` breaks the format (the message says what).
    """
    data = to_bytes(model)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data)


def to_bytes(model: ModelFile) -> bytes:
    """The whole ``.sage`` file of ``model``."""
    try:
        _check_hyperparameters(model)
        _check_vocabulary(np.asarray(model.vocabulary), model.vocab_size)
        _check_metadata(model.metadata)
        _check_tensor_set(model)
        for name, tensor in model.tensors.items():
            want = (
                quant.storage_dtype(tensor.dtype),
                quant.storage_shape(tensor.shape, tensor.dtype),
            )
            if (tensor.data.dtype, tensor.data.shape) != want:
                raise ModelFormatError(
                    f"tensor {name!r}: data is {tensor.data.dtype} {tensor.data.shape}, "
                    f"expected {want[0]} {want[1]} for {tensor.dtype} {tensor.shape}"
                )
            _check_values(name, tensor)
    except ModelFormatError as exc:
        raise ValueError(f"cannot write the model: {exc}") from None

    order = list(model.expected_shapes())
    metadata = json.dumps(model.metadata, sort_keys=True, ensure_ascii=False, allow_nan=False)
    metadata_bytes = metadata.encode("utf-8")
    if len(metadata_bytes) > MAX_METADATA:
        raise ValueError(f"metadata is {len(metadata_bytes)} bytes, more than {MAX_METADATA}")

    vocabulary = np.zeros(model.vocab_size, VOCAB_ENTRY)
    for key in ("family", "kind", "a", "b"):
        vocabulary[key] = model.vocabulary[key]

    # The header's size depends only on names and ranks, so offsets can be laid out first.
    table_size = sum(2 + len(name) + 2 + 8 * len(model.tensors[name].shape) + 16 for name in order)
    header_size = (
        PREAMBLE.size
        + HYPERPARAMETERS.size
        + 4 * model.n_layers
        + vocabulary.nbytes
        + 4
        + len(metadata_bytes)
        + table_size
    )
    data_offset = align64(header_size)
    offsets = {}
    end = data_offset
    for name in order:
        offsets[name] = align64(end)
        end = offsets[name] + model.tensors[name].nbytes
    file_size = end + CHECKSUM_SIZE

    header = bytearray()
    header += PREAMBLE.pack(MAGIC, VERSION, header_size, data_offset, file_size)
    header += HYPERPARAMETERS.pack(
        model.vocab_size,
        model.n_layers,
        model.d_model,
        model.n_heads,
        model.n_kv_heads,
        model.d_head,
        model.d_ff,
        model.n_families,
        ATTENTION_MODES.index(model.attention),
        0,  # position: ALiBi
        0,  # norm: RMSNorm with a gain
        0,  # ffn: SwiGLU
        model.norm_eps,
        model.ticks_per_quarter,
        len(order),
        0,  # reserved
    )
    header += np.asarray(model.horizons, "<u4").tobytes()
    header += vocabulary.tobytes()
    header += struct.pack("<I", len(metadata_bytes)) + metadata_bytes
    for name in order:
        tensor = model.tensors[name]
        encoded = name.encode("ascii")
        if not _NAME.fullmatch(encoded):
            raise ValueError(f"tensor name {name!r} is not 1-255 characters of [a-z0-9_.]")
        header += struct.pack("<H", len(encoded)) + encoded
        header += struct.pack("<BB", quant.DTYPE_CODES[tensor.dtype], len(tensor.shape))
        header += struct.pack(f"<{len(tensor.shape)}Q", *tensor.shape)
        header += struct.pack("<QQ", offsets[name], tensor.nbytes)
    assert len(header) == header_size

    out = bytearray(file_size)  # zero-filled: every gap is zero padding
    out[:header_size] = header
    for name in order:
        raw = np.ascontiguousarray(model.tensors[name].data).tobytes()
        out[offsets[name] : offsets[name] + len(raw)] = raw
    out[-CHECKSUM_SIZE:] = struct.pack("<I", zlib.crc32(memoryview(out)[:-CHECKSUM_SIZE]))
    return bytes(out)


# reading


def read(path: str | os.PathLike) -> ModelFile:
    """Read and check a ``.sage`` file; raise ``ModelFormatError`` naming what is wrong."""
    path = Path(path)
    try:
        if not path.is_file():
            raise ModelFormatError(
                f"{path}: no such file" if not path.exists() else f"{path}: not a file"
            )
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(size)
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return from_bytes(data, str(path))


def from_bytes(data: bytes, source: str = "<bytes>") -> ModelFile:
    """Parse a whole ``.sage`` file held in ``data``; ``source`` names it in error messages."""
    try:
        return _parse(data)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{source}: {exc}") from None


class _Header:
    """Reads consecutive fields of the header, never past ``header_size``."""

    def __init__(self, data: bytes, start: int, end: int):
        self.data, self.pos, self.end = data, start, end

    def take(self, n: int, what: str) -> bytes:
        if n > self.end - self.pos:
            raise ModelFormatError(
                f"the header (header_size {self.end}) ends inside {what} at byte {self.pos}"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))


def _parse(data: bytes) -> ModelFile:
    size = len(data)
    if size < PREAMBLE.size:
        raise ModelFormatError(
            f"truncated: {size} bytes, shorter than the {PREAMBLE.size}-byte preamble"
        )
    magic, version, header_size, data_offset, file_size = PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise ModelFormatError(f"not a sage-edge model file (magic {magic!r}, expected {MAGIC!r})")
    if version == 0 or version >= FIRST_IMPLAUSIBLE_VERSION:
        raise ModelFormatError(
            f"corrupt file: format version field is {version}, which no sage-edge writes "
            f"(this one reads version {VERSION})"
        )
    if version > VERSION:
        raise ModelFormatError(
            f"the file is format version {version}, written by a newer sage-edge (this one reads "
            f"version {VERSION}); update sage-edge to load it"
        )
    if file_size != size:
        raise ModelFormatError(
            f"file_size field says {file_size} bytes but the file has {size} "
            f"({'truncated' if size < file_size else 'extra bytes at the end'})"
        )
    minimum_header = PREAMBLE.size + HYPERPARAMETERS.size
    if not minimum_header <= header_size <= size - CHECKSUM_SIZE:
        raise ModelFormatError(
            f"header_size {header_size} is outside [{minimum_header}, {size - 4}]"
        )
    if data_offset != align64(header_size):
        raise ModelFormatError(
            f"data_offset {data_offset} is not align64(header_size {header_size})"
        )
    if data_offset > size - CHECKSUM_SIZE:
        raise ModelFormatError(f"data_offset {data_offset} is past the end of the file")
    (stored_crc,) = struct.unpack_from("<I", data, size - CHECKSUM_SIZE)
    crc = zlib.crc32(memoryview(data)[: size - CHECKSUM_SIZE])
    if crc != stored_crc:
        raise ModelFormatError(
            f"checksum mismatch (stored {stored_crc:#010x}, computed {crc:#010x}): "
            "the file is corrupted"
        )

    header = _Header(data, PREAMBLE.size, header_size)
    fields = header.unpack(HYPERPARAMETERS.format, "the hyperparameters")
    (v, n_layers, d, n_heads, n_kv_heads, d_head, d_ff, n_families, attention) = fields[:9]
    position, norm, ffn, norm_eps, ticks_per_quarter, n_tensors, reserved = fields[9:]
    if attention >= len(ATTENTION_MODES):
        raise ModelFormatError(f"unknown attention mode {attention}")
    for what, value in (("position scheme", position), ("norm", norm), ("ffn", ffn)):
        if value != 0:
            raise ModelFormatError(f"unknown {what} {value} (version 1 knows only 0)")
    if reserved != 0:
        raise ModelFormatError(f"reserved hyperparameter is {reserved}, must be 0")
    if n_tensors > MAX_TENSORS:
        raise ModelFormatError(f"n_tensors = {n_tensors} is more than {MAX_TENSORS}")
    mode = ATTENTION_MODES[attention]
    expected_families = N_ATTRIBUTE_FAMILIES if mode == "askv" else 1
    if n_families != expected_families:
        raise ModelFormatError(
            f"n_families = {n_families}, but {mode} attention has {expected_families}"
        )
    # Check every count before it sizes a read.
    shell = ModelFile(
        v, n_layers, d, n_heads, n_kv_heads, d_head, d_ff, mode, norm_eps, ticks_per_quarter,
        (), np.zeros(0, VOCABULARY_DTYPE), {}, {},
    )  # fmt: skip
    _check_hyperparameters(shell, with_horizons=False)
    horizons = np.frombuffer(header.take(4 * n_layers, "the horizons"), "<u4")
    shell.horizons = tuple(int(h) for h in horizons)
    _check_hyperparameters(shell)

    entries = np.frombuffer(header.take(VOCAB_ENTRY.itemsize * v, "the vocabulary"), VOCAB_ENTRY)
    vocabulary = np.empty(v, VOCABULARY_DTYPE)
    for key in VOCABULARY_DTYPE.names:
        vocabulary[key] = entries[key]
    _check_vocabulary(vocabulary, v)
    if (entries["reserved"] != 0).any():
        bad = int(np.flatnonzero(entries["reserved"])[0])
        raise ModelFormatError(f"vocabulary entry {bad} has a non-zero reserved field")
    shell.vocabulary = vocabulary

    (n_json,) = header.unpack("<I", "the metadata length")
    if n_json > MAX_METADATA:
        raise ModelFormatError(f"metadata length {n_json} is more than {MAX_METADATA}")
    raw_json = header.take(n_json, "the metadata")
    try:
        metadata = json.loads(
            raw_json.decode("utf-8"),
            parse_constant=_refuse_constant,
            object_pairs_hook=_unique_members,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelFormatError(f"metadata is not UTF-8 JSON ({exc})") from None
    except RecursionError:  # nested far deeper than the limit _check_metadata enforces
        raise ModelFormatError(f"metadata nests more than {MAX_METADATA_DEPTH} deep") from None
    _check_metadata(metadata)
    shell.metadata = metadata

    rows = []  # (name, dtype, shape, offset, nbytes)
    for i in range(n_tensors):
        what = f"tensor table row {i}"
        (name_length,) = header.unpack("<H", what)
        name_bytes = header.take(name_length, what)
        if not _NAME.fullmatch(name_bytes):
            raise ModelFormatError(f"{what}: name {name_bytes[:80]!r} is not 1-255 of [a-z0-9_.]")
        name = name_bytes.decode("ascii")
        what = f"tensor {name!r}"
        dtype_code, ndim = header.unpack("<BB", what)
        if dtype_code in quant.RETIRED_DTYPE_CODES:
            retired = quant.RETIRED_DTYPE_CODES[dtype_code]
            raise ModelFormatError(
                f"{what} has dtype {dtype_code} ({retired}), which sage-edge no longer reads; "
                f"export the model again as one of {', '.join(quant.DTYPES)}"
            )
        if dtype_code not in _DTYPE_BY_CODE:
            raise ModelFormatError(f"{what} has unknown dtype {dtype_code}")
        if not 1 <= ndim <= 4:
            raise ModelFormatError(f"{what} has {ndim} dimensions, expected 1 to 4")
        shape = header.unpack(f"<{ndim}Q", what)
        if not all(1 <= n <= MAX_DIM for n in shape):
            raise ModelFormatError(f"{what} has shape {shape}; each dimension must be 1 to 2^32")
        offset, nbytes = header.unpack("<QQ", what)
        dtype = _DTYPE_BY_CODE[dtype_code]
        expected_nbytes = quant.nbytes(shape, dtype)  # Python integers: no overflow
        if nbytes != expected_nbytes:
            raise ModelFormatError(
                f"{what} has nbytes {nbytes}, but {dtype} {list(shape)} takes {expected_nbytes}"
            )
        if offset % ALIGNMENT:
            raise ModelFormatError(f"{what} offset {offset} is not a multiple of {ALIGNMENT}")
        if offset < data_offset or offset + nbytes > size - CHECKSUM_SIZE:
            raise ModelFormatError(
                f"{what} at [{offset}, {offset + nbytes}) lies outside the tensor data "
                f"[{data_offset}, {size - CHECKSUM_SIZE})"
            )
        rows.append((name, dtype, shape, offset, nbytes))
    if header.pos != header_size:
        raise ModelFormatError(
            f"header_size is {header_size} but the tensor table ends at byte {header.pos}"
        )

    names = [row[0] for row in rows]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ModelFormatError(f"tensor {duplicates[0]!r} appears more than once")
    by_offset = sorted(rows, key=lambda row: row[3])
    for before, after in zip(by_offset, by_offset[1:], strict=False):
        if before[3] + before[4] > after[3]:
            raise ModelFormatError(f"tensors {before[0]!r} and {after[0]!r} overlap")

    tensors = {}
    for name, dtype, shape, offset, _nbytes in rows:
        stored_shape = quant.storage_shape(shape, dtype)
        count = math.prod(stored_shape)
        array = np.frombuffer(data, quant.storage_dtype(dtype), count=count, offset=offset)
        tensors[name] = Tensor(dtype, tuple(shape), array.reshape(stored_shape))
    shell.tensors = tensors
    _check_tensor_set(shell)
    for name, tensor in tensors.items():
        _check_values(name, tensor)
    return shell


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


__all__ = [
    "MAGIC",
    "VERSION",
    "ModelFile",
    "Tensor",
    "from_bytes",
    "read",
    "to_bytes",
    "write",
]
