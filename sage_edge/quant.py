"""Block quantization of weight matrices, exactly as ``docs/format.md`` (Dtypes) defines it.

numpy only. Every step is done in f32 arithmetic in the order the format gives, so the C++
engine (``csrc/kernels``) produces the same bits: the same scales, the same integers, and the
same dequantized values ``scale · q``.

A tensor of shape ``(…, n)`` is quantized row by row (a row is the last axis; for a PyTorch
``Linear.weight`` that is one output's weights along the input dimension). Each row is cut into
``⌈n/32⌉`` blocks; the last one is zero-padded. Quantized tensors are structured arrays of shape
``(…, ⌈n/32⌉)`` with the dtypes ``Q8_0_BLOCK`` and ``Q4_BLOCK``, whose memory layout is the file's.
"""

from __future__ import annotations

import numpy as np

BLOCK_SIZE = 32

# One block of each format; itemsize and field order are the file layout (docs/format.md).
Q8_0_BLOCK = np.dtype([("scale", "<f4"), ("q", "i1", (BLOCK_SIZE,))])
Q4_BLOCK = np.dtype([("scale", "<f4"), ("q", "u1", (BLOCK_SIZE // 2,))])
assert Q8_0_BLOCK.itemsize == 36 and Q4_BLOCK.itemsize == 20

# The dtypes of a .sage tensor and their codes in the file (docs/format.md, Tensor table).
DTYPE_CODES = {"f32": 0, "q8_0": 2, "q4": 3}
DTYPES = tuple(DTYPE_CODES)
QUANTIZED = ("q8_0", "q4")
# Codes that once meant a dtype and are now refused by name: f16 was widened to f32 at load, so it
# took more memory than q8_0 and saved nothing.
RETIRED_DTYPE_CODES = {1: "f16"}


def blocks_per_row(n: int) -> int:
    return (n + BLOCK_SIZE - 1) // BLOCK_SIZE


def _blocked_rows(x: np.ndarray) -> np.ndarray:
    """``x`` as f32 of shape ``(…, ⌈n/32⌉, 32)``, each row zero-padded to whole blocks."""
    x = np.asarray(x)
    if x.ndim < 1 or x.shape[-1] == 0:
        raise ValueError(f"cannot quantize an array of shape {x.shape}: rows must be non-empty")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"cannot quantize an array of dtype {x.dtype}: expected floats")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError("cannot quantize an array holding NaN or infinity")
    n = x.shape[-1]
    pad = blocks_per_row(n) * BLOCK_SIZE - n
    if pad:
        x = np.concatenate([x, np.zeros((*x.shape[:-1], pad), np.float32)], axis=-1)
    return x.reshape(*x.shape[:-1], -1, BLOCK_SIZE)


def _inverse(scale: np.ndarray) -> np.ndarray:
    """``1 / scale`` in f32; 0 where ``scale = 0`` or where ``1 / scale`` overflows to ±∞.

    The overflow happens only for blocks whose largest value is below about 2^-121; they quantize
    to all zeros, and ``x · inv`` stays finite (within ±127.0…) for every block.
    """
    inv = np.zeros_like(scale)
    with np.errstate(over="ignore", divide="ignore"):
        np.divide(np.float32(1.0), scale, out=inv, where=scale != 0)
    inv[~np.isfinite(inv)] = 0
    return inv


def _rounded(blocks: np.ndarray, inv: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``clamp(round_half_even(x · inv), lo, hi)`` as int8, in f32 arithmetic."""
    return np.clip(np.rint(blocks * inv[..., None]), lo, hi).astype(np.int8)


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """Q8_0 blocks of ``x`` (shape ``(…, n)`` → ``(…, ⌈n/32⌉)`` of ``Q8_0_BLOCK``).

    Per block: ``amax = max |x|``, ``scale = amax / 127``, ``inv = 1 / scale`` (0 when the scale
    is 0 or its inverse overflows), ``q = round_half_even(x · inv)`` clamped to [−127, 127]; all
    in f32.
    """
    blocks = _blocked_rows(x)
    amax = np.abs(blocks).max(axis=-1)
    scale = amax / np.float32(127.0)
    inv = _inverse(scale)
    q = _rounded(blocks, inv, -127, 127)
    out = np.empty(blocks.shape[:-1], Q8_0_BLOCK)
    out["scale"] = scale
    out["q"] = q
    return out


def quantize_q4(x: np.ndarray) -> np.ndarray:
    """Q4 blocks of ``x`` (shape ``(…, n)`` → ``(…, ⌈n/32⌉)`` of ``Q4_BLOCK``).

    Per block: ``m`` = the value of largest magnitude (the first on a tie), ``scale = m / −8``,
    ``inv = 1 / scale`` (0 when the scale is 0 or its inverse overflows),
    ``q = round_half_even(x · inv)`` clamped to
    [−8, 7]; all in f32. Byte ``i`` stores ``q[2i] + 8`` in its low nibble and ``q[2i+1] + 8`` in
    its high nibble.

    Dividing by −8 maps the extreme value exactly onto q = −8, the end of the range with one more
    level, so the largest weight of every block is reproduced exactly.
    """
    blocks = _blocked_rows(x)
    first_largest = np.abs(blocks).argmax(axis=-1)  # argmax returns the first maximum
    m = np.take_along_axis(blocks, first_largest[..., None], axis=-1)[..., 0]
    scale = m / np.float32(-8.0)
    inv = _inverse(scale)
    q = _rounded(blocks, inv, -8, 7)
    nibbles = (q + 8).astype(np.uint8)
    out = np.empty(blocks.shape[:-1], Q4_BLOCK)
    out["scale"] = scale
    out["q"] = nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)
    return out


def q4_values(blocks: np.ndarray) -> np.ndarray:
    """The signed integers q ∈ [−8, 7] of Q4 blocks, shape ``(…, 32)`` of int8."""
    packed = blocks["q"]
    low = (packed & 0x0F).astype(np.int8) - 8
    high = (packed >> 4).astype(np.int8) - 8
    return np.stack([low, high], axis=-1).reshape(*packed.shape[:-1], BLOCK_SIZE)


def dequantize_q8_0(blocks: np.ndarray, n: int) -> np.ndarray:
    """f32 values ``scale · q`` of Q8_0 blocks, each row cut back to its ``n`` values."""
    values = blocks["scale"][..., None] * blocks["q"].astype(np.float32)
    return _unblocked_rows(values, n)


def dequantize_q4(blocks: np.ndarray, n: int) -> np.ndarray:
    """f32 values ``scale · q`` of Q4 blocks, each row cut back to its ``n`` values."""
    values = blocks["scale"][..., None] * q4_values(blocks).astype(np.float32)
    return _unblocked_rows(values, n)


def _unblocked_rows(values: np.ndarray, n: int) -> np.ndarray:
    if not 0 < n <= values.shape[-2] * BLOCK_SIZE:
        raise ValueError(f"row length {n} does not fit {values.shape[-2]} blocks")
    rows = values.reshape(*values.shape[:-2], -1)
    return np.ascontiguousarray(rows[..., :n], dtype=np.float32)


def quantize(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` stored as ``dtype`` (one of ``DTYPES``): a float array or an array of blocks."""
    if dtype == "f32":
        x = np.asarray(x, dtype="<f4")
        if not np.isfinite(x).all():
            raise ValueError("cannot store NaN or infinity")
        return x
    if dtype == "q8_0":
        return quantize_q8_0(x)
    if dtype == "q4":
        return quantize_q4(x)
    raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")


def dequantize(data: np.ndarray, dtype: str, n: int) -> np.ndarray:
    """f32 values of ``data`` stored as ``dtype``; ``n`` is the row length (the last dimension)."""
    if dtype == "f32":
        return np.array(data, dtype=np.float32)
    if dtype == "q8_0":
        return dequantize_q8_0(data, n)
    if dtype == "q4":
        return dequantize_q4(data, n)
    raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")


def storage_shape(shape: tuple[int, ...], dtype: str) -> tuple[int, ...]:
    """Shape of the stored array: the tensor's own, or ``(…, ⌈n/32⌉)`` blocks when quantized."""
    if dtype in QUANTIZED:
        return (*shape[:-1], blocks_per_row(shape[-1]))
    return tuple(shape)


def storage_dtype(dtype: str) -> np.dtype:
    return {"f32": np.dtype("<f4"), "q8_0": Q8_0_BLOCK, "q4": Q4_BLOCK}[dtype]


def nbytes(shape: tuple[int, ...], dtype: str) -> int:
    """Bytes a tensor of ``shape`` takes as ``dtype`` (docs/format.md, Dtypes)."""
    count = 1
    for dim in storage_shape(shape, dtype):
        count *= dim
    return count * storage_dtype(dtype).itemsize


__all__ = [
    "BLOCK_SIZE",
    "DTYPES",
    "DTYPE_CODES",
    "Q4_BLOCK",
    "Q8_0_BLOCK",
    "QUANTIZED",
    "RETIRED_DTYPE_CODES",
    "blocks_per_row",
    "dequantize",
    "dequantize_q4",
    "dequantize_q8_0",
    "nbytes",
    "q4_values",
    "quantize",
    "quantize_q4",
    "quantize_q8_0",
    "storage_dtype",
    "storage_shape",
]
