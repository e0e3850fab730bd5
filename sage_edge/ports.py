"""The MIDI ports a jam plays through (docs/jam.md, "Ports"): a device path (a raw MIDI device, a
serial port, a pty) or, with the ``ports`` extra (python-rtmidi), the name of a port of the ALSA
sequencer or of JACK.

Either way the jam's one loop (:meth:`sage_edge.live.Jam.serve`) reads bytes from a file
descriptor and sends each message whole: a named input's messages, read from rtmidi's queue on
a thread of their own, are written to a pipe that the loop reads like a device.

A port that goes away mid-jam (docs/jam.md, "When a port goes away") is looked for again by name
every :data:`WATCH_S` on a thread of its own and reconnected when it is back: a named port always,
a device path with ``reconnect`` (the ``--reconnect`` of both front ends; without it the end of a
device's input is the musician's end). A lost input sends the jam All Notes Off on every channel,
so the keys held then are released; a lost output drops what is sent until it is back, then gets
the channels' programs again and note-offs for the notes it was sounding.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import select
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

EXTRA_HINT = 'port names need python-rtmidi: pip install "sage-edge[ports]"'
CLIENT = "sage-edge"  # the client name other programs see our ports under
WATCH_S = 0.1  # how often a named port is looked for, and a lost one reopened
READ_S = 0.0005  # how often a named input's queue is read when it was found empty
SETTLE_S = 0.1  # how long after a change to the ports' graph a named port is closed (_GraphChanges)
CLOSE_LIMIT_S = 30.0  # how long the end of a program may spend closing its ports (close_or_exit)
# What a lost input says to the jam: All Notes Off (controller 123) on each of the 16 channels.
ALL_NOTES_OFF = bytes(b for channel in range(16) for b in (0xB0 | channel, 123, 0))


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


class _GraphChanges:
    """The changes this process makes to its MIDI systems' graphs (an rtmidi client created or
    deleted, a port opened or closed), made one at a time, and when the last one was made or seen.

    Closing a JACK port (rtmidi's ``close_port``, or ``delete`` with a port open: both
    jack_port_unregister) removes it from its client's list of ports, which libjack's thread that
    takes the server's notifications walks with no lock when the graph has changed (the latency
    notification the server sends every client after each change): a port closed while that
    notification ran killed the process (SIGSEGV in JackClient::HandleLatencyCallback; jack2 issue
    216, python-rtmidi 1.5.8's libjack). A change of ours a moment before, such as the probe of
    :class:`_Watched` deleted just before its port was closed, was what sent it. So a port is closed
    only :data:`SETTLE_S` after the last change this process made or saw, and no change of ours is
    made meanwhile; a change by another program at that very moment is not ours to prevent."""

    def __init__(self):
        self._lock = threading.Lock()
        self._at = float("-inf")

    @contextlib.contextmanager
    def change(self, closing_port: bool = False):
        with self._lock:
            if closing_port:
                time.sleep(max(0.0, self._at + SETTLE_S - time.monotonic()))
            try:
                yield
            finally:
                self._at = time.monotonic()

    def seen(self) -> None:
        """Another program changed the graph (a port went away or came back)."""
        with self.change():
            pass


_GRAPH = _GraphChanges()


def close_or_exit(*ports, limit_s: float | None = None) -> None:
    """Closes ``ports`` (each one's ``close``, in this order, all of them even if one raises) at
    the end of a program (``sage-edge jam``); if that takes more than ``limit_s`` (default
    :data:`CLOSE_LIMIT_S`), the process ends there, with exit status 1 and every thread's stack on
    stderr, instead of hanging.

    Closing a JACK port or client waits for the server's answer with no time limit (libjack's
    request socket), and python-rtmidi holds Python's interpreter lock meanwhile, so no Python
    thread could end that wait: with a server that stopped answering (stopped, or stalled), the
    end of a jam hung in ``close_port`` (docs/jam.md, "Ports"). faulthandler's watchdog is a thread
    of C that needs no lock; it replaces any ``dump_traceback_later`` armed before."""
    faulthandler.dump_traceback_later(CLOSE_LIMIT_S if limit_s is None else limit_s, exit=True)
    try:
        with contextlib.ExitStack() as closing:
            for port in reversed(ports):
                closing.callback(port.close)
    finally:
        faulthandler.cancel_dump_traceback_later()


def delete_clients(*clients) -> None:
    """Deletes rtmidi clients one by one, each as a port is closed (:class:`_GraphChanges`):
    deleting a client whose port is open closes that port. For ports opened outside this module
    in a process that uses it (a test's musician)."""
    for client in clients:
        with _GRAPH.change(closing_port=True):
            client.delete()


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
            with _quiet_stderr(), _GRAPH.change():
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
    with _GRAPH.change():
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


class Losses:
    """How often a port went away (``lost``) and came back (``back``); ``report`` (a callable
    taking one line, or None) hears of each, as it happens."""

    def __init__(self, name: str, direction: str, report: Callable[[str], None] | None):
        self.name, self.lost, self.back = name, 0, 0
        self._what = "MIDI input" if direction == "in" else "MIDI output"
        self._report = report

    def _went(self) -> None:
        self.lost += 1
        self._say(f"{self._what} {self.name} lost: waiting for it to come back")

    def _came_back(self, name: str) -> None:
        self.back += 1
        self._say(f"{self._what} {self.name} back" + (f" as {name}" if name != self.name else ""))
        self.name = name

    def _say(self, line: str) -> None:
        if self._report is not None:
            self._report(line)


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


class _PipedInput(Losses):
    """An input whose messages a thread other than the jam's writes whole to a pipe, whose read
    end is :meth:`fileno`; losing it writes :data:`ALL_NOTES_OFF` there."""

    def __init__(self, name: str, report):
        super().__init__(name, "in", report)
        self._read, self._write = os.pipe()

    def _pass(self, data: bytes) -> None:
        os.write(self._write, data)

    def _went(self) -> None:
        self._pass(ALL_NOTES_OFF)
        super()._went()

    def fileno(self) -> int:
        return self._read

    def close(self) -> None:
        os.close(self._write)
        os.close(self._read)


class ReopenedDeviceInput(_PipedInput):
    """A character device read on a thread of its own (``--reconnect``): its end or removal (EOF,
    EIO, ENODEV, ENXIO) is a loss, and the path is opened again every :data:`WATCH_S` until it
    opens (the same device plugged in again, or a udev symlink pointing at a new one)."""

    def __init__(self, path: str, report=None):
        self._device: DeviceInput | None = DeviceInput(path)
        super().__init__(path, report)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closing.is_set():
            if self._device is None:
                if self._closing.wait(WATCH_S):
                    return
                with contextlib.suppress(OSError):
                    self._device = DeviceInput(self.name)
                    self._came_back(self.name)
                continue
            if not select.select([self._device.fd], [], [], WATCH_S)[0]:
                continue
            try:
                data = os.read(self._device.fd, 1024)
            except BlockingIOError:
                continue
            except OSError:  # EIO: a pty whose other side closed; ENODEV, ENXIO: removed
                data = b""
            if data:
                self._pass(data)
                continue
            self._device.close()
            self._device = None
            self._went()

    def close(self) -> None:
        self._closing.set()
        self._thread.join()
        if self._device is not None:
            self._device.close()
        super().close()


def is_character_device(path: str) -> bool:
    """Whether ``path`` is a character device (a raw MIDI device, a serial port, a pty), the
    inputs ``--reconnect`` reopens; a regular file or a FIFO ends as it always does."""
    import stat

    with contextlib.suppress(OSError):
        return stat.S_ISCHR(os.stat(path).st_mode)
    return False


class _Watched(Losses):
    """A named port, looked for among its system's ports every :data:`WATCH_S` on a thread of
    its own (with a client of its own, so that the port's client is only touched to reconnect):
    gone, it is lost (sent nothing); lost, the port that ``given`` names (:func:`resolve`, as
    when it was opened) is connected again, through a new client (:meth:`_prepare`, then
    :meth:`_reconnect`): an rtmidi client whose port was closed and opened again is connected
    but delivers nothing (python-rtmidi 1.5.8, JACK)."""

    def __init__(self, port: Port, client, given: str, direction: str, report):
        Losses.__init__(self, port.name, direction, report)
        rtmidi = _rtmidi()
        self._api = next(
            a for a in rtmidi.get_compiled_api() if rtmidi.get_api_name(a) == port.system
        )
        self._kind = rtmidi.MidiIn if direction == "in" else rtmidi.MidiOut
        with _quiet_stderr(), _GRAPH.change():
            self._probe = self._kind(self._api, name=CLIENT)
        self._client, self._port, self._given, self._direction = client, port, given, direction
        self._lock = threading.Lock()  # the client, between the jam's thread and the watch
        self.connected = True
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._closing.wait(WATCH_S):
            names = self._probe.get_ports()
            if self.connected and self._port.name not in names:
                _GRAPH.seen()
                with self._lock:
                    self.connected = False
                self._went()
            elif not self.connected and any(self._given.lower() in n.lower() for n in names):
                _GRAPH.seen()
                if self._closing.wait(SETTLE_S):  # settled here, not holding the lock (sends)
                    return
                with self._lock:
                    with _GRAPH.change(closing_port=True):
                        self._client.delete()  # its port, still open, is closed
                    with _GRAPH.change():
                        self._client = client = self._kind(self._api, name=CLIENT)
                    names = client.get_ports()
                    ports = [Port(self._port.system, i, n) for i, n in enumerate(names)]
                    try:
                        self._port = resolve(self._given, ports, self._direction)
                    except ValueError:  # gone again, or several: looked for again
                        continue
                    self._prepare(client)
                    with _GRAPH.change():
                        client.open_port(self._port.index, self._direction)
                    self.connected = True
                    self._reconnect()
                self._came_back(self._port.name)

    def _prepare(self, client) -> None:
        """Readies a client before its port is opened."""

    def _reconnect(self) -> None:
        """The port is connected again (called with the lock held)."""

    def close(self) -> None:
        self._closing.set()
        self._thread.join()
        with _GRAPH.change(closing_port=True), contextlib.suppress(Exception):
            self._client.close_port()  # rtmidi raises closing a port not open
        with _GRAPH.change():
            self._client.delete()
            self._probe.delete()


class PortInput(_Watched, _PipedInput):
    """A named input port: every message it delivers (SysEx, clock and active sensing included,
    as a device gives them) is written whole to a pipe, whose read end is :meth:`fileno`.

    The messages are read from rtmidi's queue on a thread of ours, every :data:`READ_S` while it
    is empty, not delivered by a callback: a callback runs on the MIDI system's thread and waits
    there for the interpreter lock, and python-rtmidi holds that lock while it opens a client or
    closes a port, which wait for that thread (JACK): with a musician playing, opening the output
    port or closing the input hung."""

    def __init__(self, port: Port, client, given: str | None = None, report=None):
        _PipedInput.__init__(self, port.name, report)
        self._prepare(client)
        with _GRAPH.change():
            client.open_port(port.index, "in")
        _Watched.__init__(self, port, client, given or port.name, "in", report)
        self._reader = threading.Thread(target=self._read_queue, daemon=True)
        self._reader.start()

    def _prepare(self, client) -> None:
        client.ignore_types(sysex=False, timing=False, active_sense=False)

    def _read_queue(self) -> None:
        while not self._closing.is_set():
            with self._lock:  # the client, which a reconnect replaces
                event = self._client.get_message()
            if event is None:
                time.sleep(READ_S)
            else:
                self._pass(bytes(event[0]))

    def close(self) -> None:
        self._closing.set()
        self._reader.join()
        _Watched.close(self)
        _PipedInput.close(self)


class PortOutput(_Watched):
    """A named output port: each message goes out whole. Lost, what is sent is dropped (a
    program change remembered); back, it gets each channel's last program change again and a
    note-off for each note it was sounding (sent before the loss, not ended since), whose own
    note-off is then not sent: no note started before the loss is left sounding on it."""

    def __init__(self, port: Port, client, given: str | None = None, report=None):
        with _GRAPH.change():
            client.open_port(port.index, "out")
        self._sounding: dict[tuple[int, int], int] = {}  # (channel, key): notes on it sounds
        self._programs: dict[int, bytes] = {}  # channel: its last program change
        _Watched.__init__(self, port, client, given or port.name, "out", report)

    def send(self, message: bytes) -> None:
        kind, channel = message[0] & 0xF0, message[0] & 0x0F
        with self._lock:
            if kind == 0xC0:
                self._programs[channel] = message
            elif kind in (0x80, 0x90):
                key = (channel, message[1])
                if kind == 0x90 and message[2] > 0:
                    if not self.connected:
                        return  # dropped: so will its note-off be
                    self._sounding[key] = self._sounding.get(key, 0) + 1
                elif self._sounding.get(key, 0) == 0 or not self.connected:
                    return  # its note-on was dropped, or the note-off waits for the return
                else:
                    self._sounding[key] -= 1
            if self.connected:
                self._client.send_message(message)

    def _reconnect(self) -> None:
        for message in self._programs.values():
            self._client.send_message(message)
        for (channel, key), count in self._sounding.items():
            if count:
                self._client.send_message(bytes([0x80 | channel, key, 64]))
        self._sounding.clear()


def open_port(
    port: str,
    direction: str,
    *,
    reconnect: bool = False,
    report: Callable[[str], None] | None = None,
):
    """Opens PORT for ``"in"`` or ``"out"``: a device path, or a port name resolved by
    :func:`resolve` among the ports of every MIDI system rtmidi reaches. A named port that goes
    away is reconnected when a port of that name is back; an input device path that is a
    character device too with ``reconnect`` (:class:`ReopenedDeviceInput`). ``report`` hears of
    each loss and return, a line each. Raises OSError for a device that cannot be opened and
    ValueError for a name that names no one port."""
    if is_device_path(port):
        if direction == "out":
            return DeviceOutput(port)
        if reconnect and is_character_device(port):
            return ReopenedDeviceInput(port, report)
        return DeviceInput(port)
    clients, ports, unreachable = _reach(direction)
    found = None
    try:
        found = resolve(port, ports, direction, unreachable)
    finally:
        with _GRAPH.change():
            for system, client in clients.items():
                if found is None or system != found.system:
                    client.delete()
    client = clients[found.system]
    kind = PortInput if direction == "in" else PortOutput
    return kind(found, client, port, report)
