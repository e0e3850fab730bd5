"""The MIDI ports a jam plays through (docs/jam.md, "Ports"): a device path (a raw MIDI device, a
serial port, a pty) or, with the ``ports`` extra (python-rtmidi), the name of a port of the ALSA
sequencer or of JACK.

Either way the jam's one loop (:meth:`sage_edge.live.Jam.serve`) reads bytes from a file
descriptor and sends each message whole: a named input's messages, delivered by rtmidi on a
thread of its own, are written to a pipe that the loop reads like a device.
"""

from __future__ import annotations

import contextlib
import os
from typing import NamedTuple

EXTRA_HINT = 'port names need python-rtmidi: pip install "sage-edge[ports]"'
CLIENT = "sage-edge"  # the client name other programs see our ports under


class Port(NamedTuple):
    """A named port: its MIDI system (``alsa``, ``jack``), its index there and its name."""

    system: str
    index: int
    name: str


def is_device_path(port: str) -> bool:
    """A PORT naming a file (an existing path, or anything with a ``/``) is a device path; any
    other is a port name."""
    return os.sep in port or os.path.exists(port)


def _rtmidi():
    try:
        import rtmidi
    except ModuleNotFoundError:
        raise ValueError(EXTRA_HINT) from None
    except ImportError as error:  # installed, but a library it links is missing (libasound2)
        raise ValueError(f"python-rtmidi cannot be loaded: {error}") from None
    return rtmidi


@contextlib.contextmanager
def _quiet_stderr():
    """The C libraries behind rtmidi print to file descriptor 2 when their system is absent (no
    ALSA sequencer, no JACK server); that is what a probe finds out, not an error to show."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _reach(direction: str) -> tuple[dict, list[Port], dict[str, str]]:
    """An rtmidi client (``MidiIn`` for ``"in"``, ``MidiOut`` for ``"out"``) for each MIDI system
    rtmidi was built with that can be reached, by system name; their ports (for ``"in"`` the
    sources, such as a keyboard; for ``"out"`` the destinations); and the systems that cannot be
    reached (no ALSA sequencer, no JACK server), with why."""
    rtmidi = _rtmidi()
    kind = rtmidi.MidiIn if direction == "in" else rtmidi.MidiOut
    clients, ports, unreachable = {}, [], {}
    for api in rtmidi.get_compiled_api():
        if api == rtmidi.API_RTMIDI_DUMMY:
            continue
        system = rtmidi.get_api_name(api)
        try:
            with _quiet_stderr():
                clients[system] = client = kind(api, name=CLIENT)
        except rtmidi.SystemError as error:
            unreachable[system] = str(error).rstrip(".")
            continue
        ports += [Port(system, i, name) for i, name in enumerate(client.get_ports())]
    return clients, ports, unreachable


def list_ports(direction: str) -> tuple[list[Port], dict[str, str]]:
    """The named ports a jam can read (``"in"``) or play to (``"out"``), and the MIDI systems
    that could not be reached, with why."""
    clients, ports, unreachable = _reach(direction)
    for client in clients.values():
        client.delete()
    return ports, unreachable


def resolve(
    name: str, ports: list[Port], direction: str, unreachable: dict[str, str] | None = None
) -> Port:
    """The port called ``name`` exactly, or else the one port whose name holds it (case aside);
    a ValueError listing the ports (and the systems not reached) when none or several do."""
    exact = [p for p in ports if p.name == name]
    found = exact or [p for p in ports if name.lower() in p.name.lower()]
    if len(found) == 1:
        return found[0]
    what = "MIDI input" if direction == "in" else "MIDI output"
    if found:
        raise ValueError(f"{name!r} matches several {what} ports: {describe(found)}")
    listed = describe(ports) if ports else "none"
    if unreachable:
        listed += f" ({describe_unreachable(unreachable)})"
    raise ValueError(f"no {what} port matches {name!r}; available: {listed}")


def describe(ports: list[Port]) -> str:
    return "; ".join(f"{p.name} ({p.system})" for p in ports)


def describe_unreachable(unreachable: dict[str, str]) -> str:
    return "not reached: " + "; ".join(f"{s}: {why}" for s, why in unreachable.items())


class DeviceInput:
    """A device path opened for reading, non-blocking, raw if it is a terminal."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        _raw_if_terminal(self.fd)
        self.name = path

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        os.close(self.fd)


class DeviceOutput:
    """A device path opened for writing, raw if it is a terminal (or a file, created or emptied
    as sage-edge-run's --midi-out does: the bytes a jam plays, kept)."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CREAT | os.O_TRUNC, 0o644)
        _raw_if_terminal(self.fd)
        self.name = path

    def send(self, message: bytes) -> None:
        os.write(self.fd, message)

    def close(self) -> None:
        os.close(self.fd)


def _raw_if_terminal(fd: int) -> None:
    if os.isatty(fd):  # a serial port or a pty: no line discipline between MIDI bytes
        import tty

        tty.setraw(fd)


class PortInput:
    """A named input port: every message it delivers (SysEx, clock and active sensing included,
    as a device gives them) is written whole to a pipe, whose read end is :meth:`fileno`."""

    def __init__(self, port: Port, client):
        self._client = client
        self._read, self._write = os.pipe()
        client.ignore_types(sysex=False, timing=False, active_sense=False)
        client.set_callback(self._deliver)
        client.open_port(port.index, "in")
        self.name = port.name

    def _deliver(self, event, _data=None) -> None:
        message, _delta = event
        os.write(self._write, bytes(message))

    def fileno(self) -> int:
        return self._read

    def close(self) -> None:
        self._client.close_port()
        self._client.delete()
        os.close(self._write)
        os.close(self._read)


class PortOutput:
    """A named output port: each message goes out whole."""

    def __init__(self, port: Port, client):
        self._client = client
        client.open_port(port.index, "out")
        self.name = port.name

    def send(self, message: bytes) -> None:
        self._client.send_message(message)

    def close(self) -> None:
        self._client.close_port()
        self._client.delete()


def open_port(port: str, direction: str) -> DeviceInput | DeviceOutput | PortInput | PortOutput:
    """Opens PORT for ``"in"`` or ``"out"``: a device path, or a port name resolved by
    :func:`resolve` among the ports of every MIDI system rtmidi reaches. Raises OSError for a
    device that cannot be opened and ValueError for a name that names no one port."""
    if is_device_path(port):
        return DeviceInput(port) if direction == "in" else DeviceOutput(port)
    clients, ports, unreachable = _reach(direction)
    found = None
    try:
        found = resolve(port, ports, direction, unreachable)
    finally:
        for system, client in clients.items():
            if found is None or system != found.system:
                client.delete()
    client = clients[found.system]
    return PortInput(found, client) if direction == "in" else PortOutput(found, client)
