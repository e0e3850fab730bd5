"""training.soup: the mean of model files, written as a model file the engine runs."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from sage_edge import format as sage_format
from sage_edge.engine import DEFAULT_MODEL, Engine
from training import soup


def test_the_soup_is_the_mean_of_its_files(tiny_models, tmp_path):
    tiny = sage_format.read(tiny_models["f32"])
    tiny.learned_programs = {0: 10, 40: 4}
    first, zeros = tmp_path / "first.sage", tmp_path / "zeros.sage"
    sage_format.write(first, tiny)
    other = copy.deepcopy(tiny)
    for name, tensor in tiny.tensors.items():
        zero = np.zeros_like(tensor.dequantize())
        other.tensors[name] = sage_format.Tensor.from_array(zero, "f32")
    other.learned_programs = {0: 20, 73: 6}
    sage_format.write(zeros, other)

    out = tmp_path / "soup.sage"
    assert soup.main([str(first), str(zeros), "--quant", "f32", "--out", str(out)]) == 0
    mean = sage_format.read(out)
    for name, tensor in tiny.tensors.items():  # (x + 0) / 2, exact in f32
        assert np.array_equal(mean.tensors[name].dequantize(), tensor.dequantize() / 2), name
    # every program either file learned, with the mean of the note counts
    assert mean.learned_programs == {0: 15, 40: 2, 73: 3}
    assert [s["file"] for s in mean.metadata["model"]["soup_of"]] == ["first.sage", "zeros.sage"]
    Engine(out).generate(bars=1, seed=0)  # the engine loads and runs it


def test_a_soup_needs_one_architecture(tiny_models, tmp_path, capsys):
    if not DEFAULT_MODEL.is_file():
        pytest.skip("no default model is packaged")
    out = tmp_path / "soup.sage"
    args = [str(tiny_models["q8_0"]), str(DEFAULT_MODEL), "--out", str(out)]
    assert soup.main(args) == 2
    assert "architecture differs" in capsys.readouterr().err
    assert soup.main([str(tiny_models["q8_0"]), "--out", str(out)]) == 2
    assert not out.exists()
