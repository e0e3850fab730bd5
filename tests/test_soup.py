"""training.soup: the mean of model files, written as a model file the engine runs."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

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


def test_a_greedy_soup_keeps_only_files_that_lower_the_validation_loss(
    chorale_dir, tokenizer, tmp_path, capsys
):
    if not DEFAULT_MODEL.is_file():
        pytest.skip("no default model is packaged")
    from training import data
    from training.train import Dist, TrainConfig, evaluate

    corpus = tmp_path / "corpus"
    data.prepare(corpus, [], midi_dir=chorale_dir, workers=1, progress=False)
    # the default model at three temperatures (its output matrix scaled): on these chorales its
    # best lies between 1 and 1.5, so the mean of those two (1.25) beats both, and 4 is far off
    default = sage_format.read(DEFAULT_MODEL)
    paths = []
    for scale in (1.5, 4.0, 1.0):
        scaled = copy.deepcopy(default)
        output = default.tensors["output"].dequantize() * scale
        scaled.tensors["output"] = sage_format.Tensor.from_array(output, "q8_0")
        paths.append(tmp_path / f"x{scale}.sage")
        sage_format.write(paths[-1], scaled)

    kept, rows = soup.greedy_choice(paths, corpus, ["midi"])

    pieces = data.load_split(corpus, "valid", tokenizer)

    def loss(files):
        read = [sage_format.read(f) for f in files]
        model = soup.mean_model(read[0], [f.dequantized_tensors() for f in read])
        with torch.no_grad():
            return evaluate(model, pieces, tokenizer, TrainConfig(1), Dist(), "cpu")[0]

    assert [Path(r["file"]).name for r in rows] == ["x1.0.sage", "x1.5.sage", "x4.0.sage"]
    assert [r["kept"] for r in rows] == [True, True, False]
    assert kept == [paths[2], paths[0]]
    means = ([paths[2]], [paths[2], paths[0]], [paths[2], paths[0], paths[1]])
    for row, files in zip(rows, means, strict=True):
        assert row["own"] == pytest.approx(loss([row["file"]]), rel=1e-6)
        assert row["mean"] == pytest.approx(loss(files), rel=1e-6)
    assert rows[1]["mean"] < rows[0]["mean"] < rows[1]["own"]

    out = tmp_path / "greedy.sage"
    args = [*map(str, paths), "--greedy", str(corpus), "--valid-collections", "midi"]
    assert soup.main([*args, "--out", str(out)]) == 0
    assert "x4.0.sage: own" in capsys.readouterr().out
    made = sage_format.read(out).metadata["model"]["soup_of"]
    assert [s["file"] for s in made] == ["x1.0.sage", "x1.5.sage"]
    # one file alone, a collection the valid split lacks: refused with a message
    assert soup.main([str(paths[2]), str(paths[1]), *args[3:], "--out", str(out)]) == 2
    assert "no soup lowers it" in capsys.readouterr().err
    assert soup.main([*args[:-1], "nowhere", "--out", str(out)]) == 2
    assert "no valid pieces of collections ['nowhere']" in capsys.readouterr().err
