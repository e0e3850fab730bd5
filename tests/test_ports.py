"""The ports a jam plays through (sage_edge.ports): device paths, and port names (the ``ports``
extra, python-rtmidi) resolved among the ports of a real JACK server (the ``jack_server`` fixture:
``jackd -d dummy``); sage-edge jam's port errors and --list-ports. The jam itself over JACK MIDI
is tests/test_jam.py::test_cli_jam_answers_over_jack_ports."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from sage_edge.ports import (
    Port,
    delete_clients,
    is_device_path,
    list_ports,
    open_port,
    resolve,
)

PORTS = [
    Port("alsa", 0, "Midi Through:Midi Through Port-0 14:0"),
    Port("alsa", 1, "Keystation 49:Keystation 49 MIDI 1 20:0"),
    Port("jack", 0, "a2j:Keystation 49 [20] (capture): Keystation 49 MIDI 1"),
    Port("jack", 1, "fluidsynth:midi"),
]


def jam_cli(*args: str, blocked: bool = False) -> subprocess.CompletedProcess:
    """``sage-edge jam ARGS``; ``blocked``: as where python-rtmidi is not installed."""
    run = "import sys; from sage_edge.cli import main; sys.exit(main(sys.argv[1:]))"
    if blocked:
        run = "import sys; sys.modules['rtmidi'] = None; " + run
    return subprocess.run(
        [sys.executable, "-c", run, "jam", *args], capture_output=True, text=True, timeout=120
    )


def test_a_name_resolves_exactly_then_by_a_unique_part():
    assert resolve("fluidsynth:midi", PORTS, "out") == PORTS[3]
    assert resolve("FLUID", PORTS, "out") == PORTS[3]
    assert resolve("Midi Through", PORTS, "in") == PORTS[0]
    # The exact name wins over the names that hold it.
    ports = [Port("jack", 0, "synth"), Port("jack", 1, "synth 2")]
    assert resolve("synth", ports, "out") == ports[0]


def test_a_name_matching_none_or_several_lists_the_ports():
    with pytest.raises(ValueError, match="several MIDI input ports") as several:
        resolve("keystation", PORTS, "in")
    assert f"{PORTS[1].name} (alsa); {PORTS[2].name} (jack)" in str(several.value)
    with pytest.raises(ValueError, match="no MIDI output port matches 'piano'") as none:
        resolve("piano", PORTS, "out", {"jack": "JACK server not running?"})
    message = str(none.value)
    assert all(p.name in message for p in PORTS) and "jack: JACK server not running?" in message
    assert "\n" not in message


def test_device_paths_are_told_from_names(tmp_path):
    assert is_device_path("/dev/snd/midiC1D0") and is_device_path("./take.raw")
    assert not is_device_path("Keystation 49")
    (tmp_path / "raw").write_bytes(b"\x90\x3c\x40")
    port = open_port(str(tmp_path / "raw"), "in")
    try:
        assert port.name == str(tmp_path / "raw")
    finally:
        port.close()


def test_without_the_extra_a_name_is_a_one_line_error_and_paths_still_work(tmp_path):
    """With python-rtmidi missing, sage_edge and the CLI import, a port name is refused with the
    extra to install (exit 2), and a device path still plays (an empty input ends the jam)."""
    result = jam_cli("--in", "Keystation", "--out", "/dev/null", "--programs", "53", blocked=True)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        'sage-edge: port names need python-rtmidi: pip install "sage-edge[ports]"'
    )
    (tmp_path / "empty").write_bytes(b"")
    args = ["--in", str(tmp_path / "empty"), "--out", "/dev/null", "--programs", "53"]
    result = jam_cli(*args, "--bars", "1", "--tempo", "600", blocked=True)
    assert result.returncode == 0, result.stderr
    assert "heard 0 notes, played 0" in result.stderr
    imported = subprocess.run(
        [sys.executable, "-c", "import sage_edge, sage_edge.ports, sage_edge.cli, sys; "
         "print('rtmidi' in sys.modules)"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert imported.stdout.strip() == "False", imported.stderr


def test_jam_needs_in_and_out_unless_listing():
    result = jam_cli("--in", "/dev/null", "--programs", "53")
    assert result.returncode == 2
    assert result.stderr.strip() == "sage-edge: --in and --out are required (or --list-ports)"


def test_jack_ports_are_listed_and_resolved(jack_server):
    rtmidi = jack_server
    source = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="keys")
    source.open_virtual_port("keystation")
    sinks = [rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=n) for n in ("synth", "synth2")]
    for sink in sinks:
        sink.open_virtual_port("midi in")
    try:
        ins, _ = list_ports("in")
        outs, _ = list_ports("out")
        assert ("jack", "keys:keystation") in {(p.system, p.name) for p in ins}
        assert {"synth:midi in", "synth2:midi in"} <= {p.name for p in outs}

        listed = jam_cli("--list-ports")
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        outputs = lines.index("MIDI outputs (--out):")
        assert "  keys:keystation  (jack)" in lines[:outputs]
        assert "  synth2:midi in  (jack)" in lines[outputs:]

        # Exact: synth:midi in; a part of several: "midi in"; a part of none.
        port = open_port("synth:midi in", "out")
        port.close()
        common = ["--programs", "53", "--in", "keystation"]
        several = jam_cli(*common, "--out", "midi in")
        assert several.returncode == 2
        assert several.stderr.count("\n") == 1 and "matches several MIDI output ports" in (
            several.stderr
        )
        assert "synth:midi in (jack); synth2:midi in (jack)" in several.stderr
        none = jam_cli(*common, "--out", "piano")
        assert none.returncode == 2 and none.stderr.count("\n") == 1
        assert "no MIDI output port matches 'piano'; available: " in none.stderr
        assert "synth:midi in (jack)" in none.stderr
    finally:
        delete_clients(source, *sinks)  # a port closed just after a client went crashed libjack


def test_a_named_input_closes_while_the_musician_plays(jack_server):
    """Closing a named input (the end of a jam, Ctrl-C, a reconnect) while a musician plays into
    it returns and does not crash, with a named output opened after it and closed before it, as
    a jam does.

    Hang: rtmidi's thread delivering a message to a callback waits for the interpreter lock, which
    closing the port held while it waited for that thread (python-rtmidi 1.5.8, JACK); the callback
    hung in the 1st to 4th cycle. Crash: closing a port while libjack's notification thread walks
    the client's ports after a change to the graph (the port's probe deleted just before) ended the
    process with SIGSEGV, in 3 of 79 runs and in a fresh-clone CI run
    (sage_edge.ports._GraphChanges). A musician in a process of its own plays 200 messages a
    second; the port is opened, read and closed 20 times in a process of its own, so that a hang
    fails the test instead of stopping it, and a crash or a hang prints every thread's Python stack
    (faulthandler: a crash on a thread of libjack's shows no "Current thread"). The input is read
    without blocking, as Jam.serve reads it: a blocking read waits for good once the musician's
    messages stop coming."""
    rtmidi = jack_server
    ears = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="listener")  # the output's destination
    ears.open_virtual_port("ears")
    musician = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import rtmidi, time\n"
            "out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name='player')\n"
            "out.open_virtual_port('keys')\n"
            "while True:\n"
            "    out.send_message([0x90, 60, 90]); out.send_message([0x80, 60, 0])\n"
            "    time.sleep(0.01)\n",
        ]
    )
    timeout = 120
    cycles = (
        "import faulthandler, os, time\n"
        f"faulthandler.dump_traceback_later({timeout - 10}, exit=True)\n"
        "from sage_edge.ports import open_port\n"
        "heard = 0\n"
        "for _ in range(20):\n"
        "    port = open_port('player:keys', 'in')\n"
        "    out = open_port('listener:ears', 'out')\n"
        "    os.set_blocking(port.fileno(), False)\n"
        "    start = time.monotonic()\n"
        "    while time.monotonic() - start < 0.05:\n"
        "        try:\n"
        "            heard += len(os.read(port.fileno(), 4096))\n"
        "        except BlockingIOError:\n"
        "            time.sleep(0.001)\n"
        "    out.close()\n"
        "    port.close()\n"
        "print(heard)\n"
    )
    try:
        deadline = time.monotonic() + 10
        while "player:keys" not in {p.name for p in list_ports("in")[0]}:
            assert time.monotonic() < deadline, "the musician's port did not appear"
            time.sleep(0.1)
        jam = subprocess.run(
            [sys.executable, "-X", "faulthandler", "-c", cycles],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        musician.kill()
        musician.wait()
        delete_clients(ears)
    assert jam.returncode == 0, f"return code {jam.returncode}: {jam.stderr}"
    assert int(jam.stdout) > 0  # the musician was heard: the deliveries were under way
