"""training.export: a checkpoint becomes a .sage file that holds exactly its (quantized) weights."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sage_edge import format as sage_format  # noqa: E402
from sage_edge import quant  # noqa: E402
from sage_edge.tokenizer import Tokenizer  # noqa: E402
from training import data, export  # noqa: E402
from training.model import ModelConfig, SageModel, two_scale  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.default()


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    torch.manual_seed(1)
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        n_layers=2,
        d_model=32,
        n_heads=4,
        n_kv_heads=2,
        d_ff=64,
        attention="askv",
        families=tokenizer.families.tolist(),
        horizons=list(two_scale(2, 1, 48, 16).horizons),
    )
    model = SageModel(config).eval()
    with torch.no_grad():  # trained gains are not all ones; make sure they survive the trip
        for block in model.layers:
            block.attn_norm.uniform_(0.5, 1.5)
            block.ffn_norm.uniform_(0.5, 1.5)
        model.final_norm.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model, tokenizer):
    """A checkpoint with the keys training.train writes and training.model.load_checkpoint reads."""
    path = tmp_path_factory.mktemp("run") / "best.pt"
    torch.save(
        {
            "model": tiny_model.state_dict(),
            "step": 8,
            "best_valid_loss": 5.5,
            "model_config": tiny_model.config.to_dict(),
            "train_config_json": json.dumps({"name": "tiny", "segment": 32}),
            "tokenizer_json": tokenizer.to_json(),
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, chorale_dir) -> Path:
    """The chorale fixtures prepared as a corpus: the checkpoint's training data for the CLI."""
    out = tmp_path_factory.mktemp("corpus")
    data.prepare(out, [], midi_dir=chorale_dir, workers=1, progress=False)
    return out


def token_ids(tokenizer, n=120):
    """A token stream that walks through every family (grammar does not matter to the network)."""
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, tokenizer.vocab_size, size=(1, n)))


def reloaded(model, path):
    weights = sage_format.read(path).dequantized_tensors()
    copy = SageModel(model.config).eval()
    copy.load_tensors({name: torch.from_numpy(w) for name, w in weights.items()})
    return copy


def test_f32_export_reproduces_the_model_exactly(tmp_path, tiny_model, tokenizer):
    path = tmp_path / "tiny_f32.sage"
    result = export.export(tiny_model, tokenizer.to_json(), "f32", path, {"name": "test"})
    assert result.file_size == path.stat().st_size
    assert all(e.max_abs == 0 and e.relative_rms == 0 for e in result.errors.values())
    ids = token_ids(tokenizer)
    with torch.no_grad():
        assert torch.equal(reloaded(tiny_model, path)(ids), tiny_model(ids))


@pytest.mark.parametrize(("dtype", "max_relative_rms"), [("q8_0", 0.01), ("q4", 0.12)])
def test_quantized_export_holds_the_quantized_weights(
    tmp_path, tiny_model, tokenizer, dtype, max_relative_rms
):
    path = tmp_path / f"tiny_{dtype}.sage"
    result = export.export(tiny_model, tokenizer.to_json(), dtype, path)
    read = sage_format.read(path)
    for name, weight in tiny_model.tensors().items():
        values = weight.numpy()
        stored = read.tensors[name]
        if values.ndim == 1:  # norms and ALiBi slopes stay f32
            assert stored.dtype == "f32"
            np.testing.assert_array_equal(stored.data, values)
            continue
        assert stored.dtype == dtype
        assert stored.data.tobytes() == quant.quantize(values, dtype).tobytes()
        error = result.errors[name]
        assert error.dtype == dtype
        assert 0 < error.relative_rms < max_relative_rms
        assert error.max_abs == pytest.approx(
            np.abs(read.dequantized(name).astype(np.float64) - values).max()
        )
    # The network built from the file stays close to the original.
    ids = token_ids(tokenizer)
    with torch.no_grad():
        reference = tiny_model(ids)
        logits = reloaded(tiny_model, path)(ids)
    relative = ((logits - reference).norm() / reference.norm()).item()
    assert relative < 3 * max_relative_rms


def test_export_records_tokenizer_and_provenance(tmp_path, tiny_model, tokenizer):
    path = tmp_path / "tiny.sage"
    export.export(tiny_model, tokenizer.to_json(), "q8_0", path, {"name": "tiny", "step": 8})
    read = sage_format.read(path)
    assert read.metadata["model"]["name"] == "tiny"
    assert read.metadata["model"]["step"] == 8
    assert read.metadata["model"]["quantization"] == "q8_0"
    assert read.metadata["model"]["config"]["horizons"] == [48, 16]
    assert read.ticks_per_quarter == tokenizer.ticks_per_quarter
    np.testing.assert_array_equal(read.vocabulary, tokenizer.token_table())
    assert Tokenizer.from_json(read.tokenizer_json()).vocab == tokenizer.vocab


def test_export_refuses_a_tokenizer_of_another_vocabulary(tmp_path, tokenizer):
    config = ModelConfig(
        vocab_size=10,
        n_layers=1,
        d_model=32,
        n_heads=2,
        n_kv_heads=1,
        d_ff=32,
        attention="gqa",
        families=[0] * 10,
        horizons=[8],
    )
    with pytest.raises(ValueError, match="not trained together"):
        export.export(SageModel(config), tokenizer.to_json(), "q8_0", tmp_path / "x.sage")
    with pytest.raises(ValueError, match="quant must be one of"):
        export.model_file(SageModel(config), tokenizer.to_json(), "q3")


def test_cli_exports_a_checkpoint(tmp_path, checkpoint, corpus, tokenizer, capsys):
    out = tmp_path / "tiny_q4.sage"
    args = [str(checkpoint), "--data", str(corpus), "--quant", "q4", "--out", str(out)]
    assert export.main(args) == 0
    printed = capsys.readouterr().out
    assert f"{out}: {out.stat().st_size:,} bytes" in printed
    assert "layers.1.w2" in printed and "q4" in printed
    read = sage_format.read(out)
    assert read.matrix_dtype == "q4"
    provenance = read.metadata["model"]
    assert provenance["checkpoint"] == "best.pt"
    assert provenance["step"] == 8 and provenance["name"] == "tiny"
    assert provenance["train_config"]["segment"] == 32
    # The programs of the corpus's train split are the ones the model learned.
    train = data.load_split(corpus, "train", tokenizer)
    assert read.learned_programs == export.learned_programs(train, tokenizer)
    assert {42, 52, 53, 54} <= set(read.learned_programs)


def test_export_records_no_learned_programs_unless_given(tmp_path, tiny_model, tokenizer):
    path = tmp_path / "tiny.sage"
    export.export(tiny_model, tokenizer.to_json(), "f32", path)
    assert sage_format.read(path).learned_programs is None
    export.record_learned_programs(path, {52: 7, -1: 3})
    rewritten = sage_format.read(path)
    assert rewritten.learned_programs == {-1: 3, 52: 7}
    assert rewritten.metadata["learned_programs"] == [[-1, 3], [52, 7]]


def test_cli_as_a_module(tmp_path, checkpoint, corpus):
    out = tmp_path / "tiny_q8_0.sage"
    args = [str(checkpoint), "--data", str(corpus), "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "training.export", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert sage_format.read(out).matrix_dtype == "q8_0"  # the default
    assert "layers.1.w2" in done.stdout


def test_cli_refuses_an_unknown_quantization(checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export.main([str(checkpoint), "--data", "x", "--quant", "q3", "--out", "x.sage"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_learned_programs_of_a_program_augmented_run(corpus, tokenizer):
    # A run that redrew programs learned the drawn ones: the counts are one epoch of the stream
    # as re-orchestrated (data.redraw_programs), the same notes under other programs.
    train = data.load_split(corpus, "train", tokenizer)
    plain = export.corpus_learned_programs(corpus, tokenizer)
    assert plain == export.learned_programs(train, tokenizer)
    augmented = export.corpus_learned_programs(corpus, tokenizer, program_augment=1.0, seed=0)
    assert sum(augmented.values()) == sum(plain.values())
    assert set(augmented) - set(plain)  # instruments the chorales never had
    assert set(augmented) <= set(data.INSTRUMENT_RANGES)
    again = export.corpus_learned_programs(corpus, tokenizer, program_augment=1.0, seed=0)
    assert again == augmented
