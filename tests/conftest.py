"""Shared fixtures. Keep each fixture small and documented; heavy ones are session-scoped."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent


def require(ok: bool, reason: str) -> None:
    """Skips a test whose piece is missing on a developer's machine; in CI (the environment
    variable CI is set, as .ci/run has it) a missing piece is a failure, never a silent skip."""
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is an error)")
        pytest.skip(reason)


def built_binary(relative: str, build: str = "native") -> Path:
    """A binary of one of the CMake preset builds (CMakePresets.json: native, asan, aarch64),
    e.g. ``built_binary("csrc/runner/sage-edge-run")``; tests/run_all.sh builds them before
    pytest. ``$SAGE_EDGE_BUILD_<BUILD>`` names another build folder for that preset."""
    folder = Path(os.environ.get(f"SAGE_EDGE_BUILD_{build.upper()}", ROOT / "build" / build))
    path = folder / relative
    require(
        path.is_file() and os.access(path, os.X_OK),
        f"{path} is not built (cmake --preset {build} && cmake --build --preset {build})",
    )
    return path


@pytest.fixture(scope="session")
def chorale_dir() -> Path:
    """Twelve Bach chorales as multi-track MIDI (S 52, A 53, T 54, B 42), produced by
    ``training.data.score_to_midi``; includes two pairs of versions of one chorale
    (bwv18.5-lz/-w, bwv248.23-2/-s)."""
    return DATA_DIR / "chorales"


@pytest.fixture(scope="session")
def chorale_paths(chorale_dir: Path) -> list[Path]:
    return sorted(chorale_dir.glob("*.mid"))


@pytest.fixture(scope="session")
def tokenizer():
    """The project's tokenizer (``Tokenizer.default()``), built once."""
    from sage_edge.tokenizer import Tokenizer

    return Tokenizer.default()


@pytest.fixture(scope="module", params=["shipped", "fixture"])
def shipped_and_tiny_engine(request, tiny_models):
    """An Engine of the shipped default model (skipped when the package has none), then one of
    the tiny q8_0 fixture model: tests of generation run on both."""
    from sage_edge.engine import DEFAULT_MODEL, Engine

    if request.param == "shipped":
        if not DEFAULT_MODEL.is_file():
            pytest.skip("no default model is packaged")
        return Engine()
    return Engine(tiny_models["q8_0"])


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    """A tiny random-weight askv model with the project's tokenizer (d 32, 2 layers, horizons 32
    and 8), exported as f32 and q8_0 by ``tests/data/make_tiny_model.py``: the real file format
    and vocabulary in a few hundred KB, for tests of everything downstream of training."""
    return {quant: DATA_DIR / f"tiny_{quant}.sage" for quant in ("f32", "q8_0")}


@pytest.fixture(scope="session")
def jack_server(jack_server_process):
    """A JACK server of this test run's own (``jackd -d dummy``: no sound card, no ALSA), for the
    tests of named MIDI ports (sage_edge.ports), its name in ``$JACK_DEFAULT_SERVER`` for this
    process and the front ends it starts. Needs python-rtmidi built with JACK (the ``ports``
    extra: PyPI's Linux wheels are) and jackd (Debian's jackd2, which .ci/run installs); yields
    the rtmidi module (``jack_server_process``: the server's process)."""
    import rtmidi

    return rtmidi


@pytest.fixture(scope="session")
def jack_server_process(tmp_path_factory):
    """The process of ``jack_server``'s JACK server (subprocess.Popen), started as it says."""
    try:
        import rtmidi
    except ImportError as error:
        require(False, f'python-rtmidi cannot be imported (pip install ".[ports]"): {error}')
    require(
        rtmidi.API_UNIX_JACK in rtmidi.get_compiled_api(), "python-rtmidi was built without JACK"
    )
    jackd = shutil.which("jackd")
    require(jackd is not None, "jackd is not installed (apt-get install jackd2)")
    name = f"sage-edge-test-{os.getpid()}"
    saved = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ["JACK_DEFAULT_SERVER"] = name
    # 64 frames at 48 kHz: JACK moves MIDI once a period, so a message waits up to 1.3 ms.
    command = [
        jackd,
        "--no-realtime",
        "--sync",
        "--name",
        name,
        "-d",
        "dummy",
        "-r",
        "48000",
        "-p",
        "64",
    ]
    log = tmp_path_factory.mktemp("jack") / "jackd.log"
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="probe").delete()
                break
            except rtmidi.SystemError:
                if server.poll() is not None or time.monotonic() > deadline:
                    said = " / ".join(log.read_text().strip().splitlines()[-3:])
                    require(False, f"jackd -d dummy did not start: {said}")
                time.sleep(0.2)
        yield server
    finally:
        if saved is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = saved
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
