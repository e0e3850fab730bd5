"""Block quantization (sage_edge.quant) against the arithmetic of docs/format.md."""

import numpy as np
import pytest

from sage_edge import quant

F32_MAX = np.finfo(np.float32).max


def row(*values):
    return np.array([values], dtype=np.float32)


# q8_0


def test_q8_0_known_block_rounds_half_to_even():
    # amax 127 gives scale 1, so q is x rounded half to even.
    x = row(127, -63.5, 0.5, 1.5, 2.5, -2.5, 0.49, -127, *([0] * 24))
    blocks = quant.quantize_q8_0(x)
    assert blocks.shape == (1, 1)
    assert blocks["scale"][0, 0] == np.float32(1.0)
    assert blocks["q"][0, 0, :8].tolist() == [127, -64, 0, 2, 2, -2, 0, -127]
    assert (blocks["q"][0, 0, 8:] == 0).all()


def test_q8_0_scale_and_q_follow_the_f32_formula():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((7, 96)) * 0.05).astype(np.float32)
    blocks = quant.quantize_q8_0(x)
    for r in range(7):
        for b in range(3):
            chunk = x[r, 32 * b : 32 * b + 32]
            scale = np.float32(np.abs(chunk).max()) / np.float32(127)
            inv = np.float32(1) / scale
            q = np.clip(np.rint(chunk * inv), -127, 127)
            assert blocks["scale"][r, b].tobytes() == scale.tobytes()
            assert blocks["q"][r, b].tolist() == q.astype(int).tolist()


def test_q8_0_block_memory_layout_is_the_file_layout():
    x = row(*np.linspace(-1, 1, 32))
    raw = quant.quantize_q8_0(x).tobytes()
    assert len(raw) == 36
    assert np.frombuffer(raw[:4], "<f4")[0] == np.float32(1) / np.float32(127)
    assert np.frombuffer(raw[4:], np.int8)[[0, -1]].tolist() == [-127, 127]


def test_q8_0_pads_each_row_to_whole_blocks():
    x = np.full((3, 33), 2.0, np.float32)
    blocks = quant.quantize_q8_0(x)
    assert blocks.shape == (3, 2)
    assert (blocks["q"][:, 1, 0] == 127).all()
    assert (blocks["q"][:, 1, 1:] == 0).all()
    assert quant.dequantize_q8_0(blocks, 33).shape == (3, 33)


def test_q8_0_zero_block_has_zero_scale():
    blocks = quant.quantize_q8_0(np.zeros((2, 40), np.float32))
    assert (blocks["scale"] == 0).all() and (blocks["q"] == 0).all()
    assert (quant.dequantize_q8_0(blocks, 40) == 0).all()


def test_q8_0_error_is_at_most_half_a_step():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 200)).astype(np.float32)
    blocks = quant.quantize_q8_0(x)
    y = quant.dequantize_q8_0(blocks, 200)
    step = np.repeat(blocks["scale"], 32, axis=-1)[:, :200]
    assert (np.abs(y - x) <= step * np.float32(0.5 + 1e-5)).all()
    # The block maximum is reproduced to within one rounding of scale * 127.
    amax_index = np.abs(x[:, :32]).argmax(axis=1)
    rows = np.arange(64)
    np.testing.assert_allclose(y[rows, amax_index], x[rows, amax_index], rtol=1e-6)


def test_q8_0_extremes_do_not_overflow():
    x = row(F32_MAX, -F32_MAX, F32_MAX / 2, 1.0)
    blocks = quant.quantize_q8_0(x)
    assert blocks["q"][0, 0, [0, 1, 3]].tolist() == [127, -127, 0]
    assert blocks["q"][0, 0, 2] in (63, 64)  # 63.5 up to f32 rounding
    large = row(1e38, -1e38, 1.0)
    np.testing.assert_allclose(
        quant.dequantize_q8_0(quant.quantize_q8_0(large), 3), row(1e38, -1e38, 0), rtol=1e-6
    )


def test_tiny_scale_whose_inverse_overflows_quantizes_to_zeros():
    # amax/127 is subnormal and 1/scale overflows to inf: inv is then 0 (docs/format.md).
    x = row(0.0, 1e-38, -2e-38, 0.0)
    blocks = quant.quantize_q8_0(x)
    assert blocks["scale"][0, 0] == np.float32(2e-38) / np.float32(127)
    assert (blocks["q"] == 0).all()
    assert (quant.q4_values(quant.quantize_q4(x)) == 0).all()
    # Just above the overflow, the inverse is finite and the values are kept.
    x = row(1e-36, -2.4e-37)
    assert quant.quantize_q8_0(x)["q"][0, 0, :2].tolist() == [127, -30]


def test_quantizing_rejects_non_finite_and_non_float_input():
    with pytest.raises(ValueError, match="NaN"):
        quant.quantize_q8_0(row(1.0, np.nan))
    with pytest.raises(ValueError, match="NaN"):
        quant.quantize_q4(row(np.inf))
    with pytest.raises(ValueError, match="dtype"):
        quant.quantize_q8_0(np.ones((2, 2), np.int32))
    with pytest.raises(ValueError, match="empty"):
        quant.quantize_q8_0(np.zeros((2, 0), np.float32))


# q4


def test_q4_known_block():
    # m = -8 (largest magnitude) gives scale 1; 3.5 and 4.5 round half to even to 4.
    x = row(-8, 7, 3.5, 4.5, -0.5, 1.5, *([0] * 26))
    blocks = quant.quantize_q4(x)
    assert blocks["scale"][0, 0] == np.float32(1.0)
    assert quant.q4_values(blocks)[0, 0, :6].tolist() == [-8, 7, 4, 4, 0, 2]
    # byte i: element 2i in the low nibble, 2i+1 in the high one, each stored as q + 8
    assert blocks["q"][0, 0, :3].tolist() == [0xF0, 0xCC, 0xA8]
    assert (blocks["q"][0, 0, 3:] == 0x88).all()


def test_q4_largest_magnitude_maps_exactly_to_minus_eight():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 64)).astype(np.float32)
    blocks = quant.quantize_q4(x)
    y = quant.dequantize_q4(blocks, 64)
    q = quant.q4_values(blocks)
    for r in range(16):
        for b in range(2):
            chunk = x[r, 32 * b : 32 * b + 32]
            i = np.abs(chunk).argmax()
            assert q[r, b, i] == -8
            assert y[r, 32 * b + i] == chunk[i]  # exact: scale = m / -8 is exact


def test_q4_tie_takes_the_first_largest_value():
    first_positive = quant.quantize_q4(row(4.0, -4.0))
    first_negative = quant.quantize_q4(row(-4.0, 4.0))
    assert first_positive["scale"][0, 0] == np.float32(-0.5)
    assert quant.q4_values(first_positive)[0, 0, :2].tolist() == [-8, 7]  # -4 clamps to 7
    assert first_negative["scale"][0, 0] == np.float32(0.5)
    assert quant.q4_values(first_negative)[0, 0, :2].tolist() == [-8, 7]


def test_q4_error_is_at_most_one_step_and_half_a_step_inside_the_range():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 100)).astype(np.float32)
    blocks = quant.quantize_q4(x)
    y = quant.dequantize_q4(blocks, 100)
    step = np.abs(np.repeat(blocks["scale"], 32, axis=-1)[:, :100])
    err = np.abs(y - x)
    assert (err <= step * np.float32(1 + 1e-5)).all()  # +8 steps clamps to +7
    q = quant.q4_values(blocks).reshape(64, -1)[:, :100]
    inside = q < 7
    assert (err[inside] <= step[inside] * np.float32(0.5 + 1e-5)).all()


def test_q4_padding_is_stored_as_nibble_eight():
    blocks = quant.quantize_q4(np.ones((2, 3), np.float32))
    assert blocks.shape == (2, 1)
    assert blocks["q"][:, 0, 0].tolist() == [0x00, 0x00]  # 1, 1 → q = -8, -8
    assert blocks["q"][:, 0, 1].tolist() == [0x80, 0x80]  # 1 → -8 (low), pad 0 → 8 (high)
    assert (blocks["q"][:, 0, 2:] == 0x88).all()


def test_q4_zero_block():
    blocks = quant.quantize_q4(np.zeros((1, 32), np.float32))
    assert blocks["scale"][0, 0] == 0 and (blocks["q"] == 0x88).all()


# sizes, dispatch


def test_f16_is_no_longer_a_dtype():
    assert quant.DTYPES == ("f32", "q8_0", "q4")
    with pytest.raises(ValueError, match="unknown dtype 'f16'"):
        quant.quantize(np.ones(4, np.float32), "f16")


def test_nbytes_and_storage_shapes():
    assert quant.nbytes((3, 33), "f32") == 4 * 99
    assert quant.nbytes((3, 33), "q8_0") == 36 * 3 * 2
    assert quant.nbytes((6, 8, 32), "q4") == 20 * 48
    assert quant.nbytes((5,), "q8_0") == 36
    assert quant.storage_shape((6, 8, 40), "q4") == (6, 8, 2)


@pytest.mark.parametrize("dtype", quant.DTYPES)
def test_quantize_dequantize_dispatch_keeps_shapes(dtype):
    x = np.random.default_rng(5).standard_normal((2, 3, 45)).astype(np.float32)
    stored = quant.quantize(x, dtype)
    assert stored.shape == quant.storage_shape(x.shape, dtype)
    assert stored.dtype == quant.storage_dtype(dtype)
    y = quant.dequantize(stored, dtype, 45)
    assert y.shape == x.shape and y.dtype == np.float32
    tolerance = {"f32": 0, "q8_0": 0.03, "q4": 0.5}[dtype]
    assert np.abs(y - x).max() <= tolerance


# the C++ kernel quantizes activations with the same arithmetic


def _cpp_rows():
    rng = np.random.default_rng(6)
    rows = [
        (rng.standard_normal(n) * 10.0 ** rng.integers(-6, 6)).astype(np.float32)
        for n in (1, 5, 31, 32, 33, 64, 100, 257, 1000)
    ]
    rows += [
        np.zeros(40, np.float32),
        np.array([F32_MAX, -F32_MAX, 1.0, -1.0, 0.0], np.float32),
        np.arange(-127, 128, dtype=np.float32) / 2,  # exact halves: ties round to even
        np.array([1e-30, -1e-30, 3e-31, 0.0], np.float32),
        np.array([0.0, 1e-38, -2e-38, 0.0], np.float32),  # subnormal scale, inf inverse
        np.finfo(np.float32).tiny * np.arange(-3, 4, dtype=np.float32),
    ]
    return rows


def test_cpp_quantize_row_q8_0_matches_numpy_bit_for_bit():
    engine = pytest.importorskip("sage_edge._engine", reason="the C++ extension is not built")
    assert hasattr(engine, "quantize_row_q8_0"), "sage_edge._engine lacks quantize_row_q8_0"
    for kernel in engine.available_kernels():  # every instruction set this CPU runs
        for x in _cpp_rows():
            expected = quant.quantize_q8_0(x[None, :]).tobytes()
            got = bytes(engine.quantize_row_q8_0(x, kernel=kernel))
            assert got == expected, f"{kernel}: row of {len(x)} values starting {x[:4]}"
