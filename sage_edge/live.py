"""Live input: a musician's timed MIDI events become the model's tokens bar by bar (docs/jam.md).

The encoding itself is the engine's (``sage_live_*`` in the C API); this module wraps it and turns
scores into the timed events a musician would play, for tests, benchmarks and scripted musicians.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import symusic

from sage_edge import _engine
from sage_edge.tokenizer import normalize_time_signatures

DRUM_CHANNEL = 9


class MidiEvent(NamedTuple):
    """A note on (velocity > 0) or off (velocity 0) at ``time_us`` microseconds."""

    time_us: int
    channel: int
    pitch: int
    velocity: int


def channel_programs(programs: list[int]) -> list[int]:
    """The 16 channel programs for parts played on channels 0, 1, ... in order (drums, -1, on
    channel 10; melodic parts skip it); unused channels play program 0, channel 10 drums."""
    table = [0] * 16
    table[DRUM_CHANNEL] = -1
    for channel, program in zip(part_channels(programs), programs, strict=True):
        table[channel] = program
    return table


def part_channels(programs: list[int]) -> list[int]:
    """The channel of each part: drums on channel 10 (index 9), the others 0, 1, ... skipping it."""
    channels, free = [], (c for c in range(16) if c != DRUM_CHANNEL)
    for program in programs:
        channels.append(DRUM_CHANNEL if program < 0 else next(free))
    if len(channels) > 16 or channels.count(DRUM_CHANNEL) > 1:
        raise ValueError("at most 15 melodic parts and one drum part fit 16 MIDI channels")
    return channels


def score_events(score: symusic.Score, us_per_tick: int) -> tuple[list[MidiEvent], list[int]]:
    """The note ons and offs of a score as a musician would play them, track ``i`` on the
    ``i``-th channel of :func:`part_channels`, each tick lasting ``us_per_tick`` microseconds;
    ordered by time, note-offs first at one time (a key released and struck again). Also returns
    the programs of the tracks, in order."""
    programs = [-1 if t.is_drum else int(t.program) for t in score.tracks]
    events = []
    for track, channel in zip(score.tracks, part_channels(programs), strict=True):
        for note in track.notes:
            start, end = int(note.time), int(note.time + note.duration)
            events.append(MidiEvent(start * us_per_tick, channel, int(note.pitch), note.velocity))
            events.append(MidiEvent(end * us_per_tick, channel, int(note.pitch), 0))
    events.sort(key=lambda e: (e.time_us, e.velocity > 0))
    return events, programs


def midi_bytes(events: list[MidiEvent]) -> list[tuple[int, bytes]]:
    """Each event's MIDI bytes with running status (a note-off is a note-on of velocity 0, the
    status byte left out while it repeats), as a keyboard sends them."""
    out, status = [], None
    for e in events:
        s = 0x90 | e.channel
        data = bytes([e.pitch, e.velocity])
        out.append((e.time_us, data if s == status else bytes([s]) + data))
        status = s
    return out


def play_score(
    encoder: LiveEncoder,
    events: list[MidiEvent],
    raw: bool = False,
    parts: bool = False,
    meters: list[tuple[int, int]] = (),
    meters_ahead: bool = False,
) -> list[int]:
    """The tokens ``encoder`` writes while ``events`` are played into it, a bar taken as soon as
    it is complete (before each event, as a live driver does), up to the bar of the last onset.
    ``raw`` sends each event as MIDI bytes with running status instead of a note call; ``parts``
    also takes the open bar's final part ahead, halfway between two events and before each.
    ``meters``: time signatures ``(time_us, quarters)``, each given to ``encoder.meter`` at the
    first moment the driver looks at the clock at or after its time (before taking bars there),
    or all before the first event (``meters_ahead``)."""
    tokens = []
    stream = midi_bytes(events) if raw else events
    previous = stream[0][0] if stream else 0
    taken = 0
    changes = sorted(meters)
    change_bars = [encoder.meter(*change) for change in changes] if meters_ahead else []
    if meters_ahead:
        changes = []
    for item in stream:
        for t in ((previous + item[0]) // 2, item[0]) if parts else (item[0],):
            while changes and changes[0][0] <= t:
                change_bars.append(encoder.meter(*changes.pop(0)))
            while (bar := encoder.take_bar(t)) or encoder.counts["bars_taken"] > taken:
                tokens += bar
                taken = encoder.counts["bars_taken"]
            if parts:
                tokens += encoder.take_final(t)
        previous = item[0]
        if raw:
            encoder.midi(*item)
        else:
            encoder.note(*item)
    onsets = [e.time_us for e in events if e.velocity]
    if not onsets:
        return tokens
    last_onset = encoder.tick_at(max(onsets))
    for change in changes:
        change_bars.append(encoder.meter(*change))
    # A meter change after the last note opens its bar (miditok writes its Bar and TimeSig), so
    # the bars up to the last bar whose meter differs from the one before are taken too.
    last_change = max(
        (b for b in change_bars if b > 0 and encoder.bar(b)[1] != encoder.bar(b - 1)[1]), default=0
    )
    while (bar := encoder.bar(encoder.counts["bars_taken"]))[0] <= last_onset or (
        encoder.counts["bars_taken"] <= last_change
    ):
        end = bar[0] + bar[1] * encoder.ticks_per_quarter
        tokens += encoder.take_bar(max(events[-1].time_us, encoder.time_of(end)))
    return tokens


def _overlaps(track: symusic.Track) -> bool:
    """Whether a note of the track starts while another of its pitch sounds."""
    sounding_until: dict[int, int] = {}
    for note in sorted(track.notes, key=lambda n: (n.time, n.duration)):
        if sounding_until.get(note.pitch, -1) > note.time:
            return True
        sounding_until[note.pitch] = max(sounding_until.get(note.pitch, -1), note.end)
    return False


def played_and_encoded(engine, tokenizer, score: symusic.Score):
    """The parity check of the live encoder: ``score`` played as timed note events (track i on
    channel i, at a tempo whose microsecond grid is exact) through the engine's live encoder by
    note calls, as raw running-status bytes, and as raw bytes with the bars taken in final parts
    ahead (``take_final``), beside ``Tokenizer.encode`` of the same score:
    ``({"calls": ..., "bytes": ..., "parts": ...}, encoded)`` token lists, or the reason the live
    encoder cannot take it (at most 16 parts; no two notes of one track and pitch overlapping: a
    MIDI key struck again ends its note, docs/jam.md). The score's time signatures, in the
    ``n/4`` form the tokenizer writes them (:func:`normalize_time_signatures`), go to the encoder
    as meter changes at their times: ahead of the notes for "parts", as they come for the other
    two."""
    if len(score.tracks) > 16:
        return "more than 16 parts"
    if any(_overlaps(track) for track in score.tracks):
        return "two notes of one key overlap"
    tpq = score.ticks_per_quarter
    us_per_tick = max(1, round(500000 / tpq))
    score = score.copy()
    score.tempos = [symusic.Tempo(0, 60e6 / (us_per_tick * tpq))]
    events, programs = score_events(score, us_per_tick)
    meters = [
        (int(ts.time) * us_per_tick, int(ts.numerator))
        for ts in normalize_time_signatures(score).time_signatures
    ]
    played = {}
    for way, raw, parts in (("calls", False, False), ("bytes", True, False), ("parts", True, True)):
        encoder = LiveEncoder(
            engine, us_per_quarter=us_per_tick * tpq, channel_programs=channel_programs(programs)
        )
        played[way] = play_score(encoder, events, raw, parts, meters, meters_ahead=parts)
    return played, tokenizer.encode(score)


class JamNote(NamedTuple):
    """A note the engine plays: from ``time_us`` to ``end_us`` on the caller's clock (grid ticks
    ``tick`` to ``end_tick`` from bar 0), on ``channel`` (the place of ``program`` in the
    engine's programs, channel 10 for drums)."""

    time_us: int
    end_us: int
    pitch: int
    velocity: int
    program: int
    channel: int
    tick: int
    end_tick: int


MODES = {"call-response": 0, "accompany": 1}
CLOCKS = (None, "in", "out")  # the jam's own clock, follow the input's, lead on the output


def now_us() -> int:
    """The clock a jam runs on by default: monotonic microseconds."""
    return time.monotonic_ns() // 1000


def sleep_until(t_us: int, slice_us: int = 1000) -> None:
    """Sleeps until `now_us()` reaches `t_us`, waking at least every `slice_us` to look at the
    clock again (a scripted musician's timing: the tests' and benchmarks' players)."""
    while (left := t_us - now_us()) > 0:
        time.sleep(min(left, slice_us) / 1e6)


@contextlib.contextmanager
def real_time(priority: int):
    """Real-time priority for playing (``--rt-priority``): the calling thread runs at SCHED_FIFO
    ``priority`` (1-99; 0: as it is) until the block ends, so that a busy host does not keep it
    from a pulse or a due note (docs/jam.md, "Following the pulses in time"). Without the right to
    it (CAP_SYS_NICE or an rtprio limit) a RuntimeWarning says so and the block runs at normal
    priority, as ``sage-edge-run`` does."""
    if not 0 <= priority <= 99:
        raise ValueError(f"real-time priority must be 0-99, got {priority}")
    if priority == 0:
        yield
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as error:
        warnings.warn(
            f"real-time priority {priority} refused ({error.strerror}): playing at normal priority",
            RuntimeWarning,
            stacklevel=3,
        )
        yield
        return
    try:
        yield
    finally:
        os.sched_setscheduler(0, policy, param)


class ByteRecorder:
    """Reads a file descriptor (a MIDI device, a serial port, a pty) in a thread until it ends,
    keeping each read with the time it arrived (:func:`now_us`): what a front end sent and when,
    for the tests and latency benchmarks that listen to it."""

    def __init__(self, fd: int):
        self.fd = fd
        self.chunks: list[tuple[int, bytes]] = []  # (arrival, bytes)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 4096)
            except OSError:  # EIO: a pty whose other side closed
                return
            if not data:
                return
            self.chunks.append((now_us(), data))


class Jam:
    """Play with a musician (docs/jam.md): their notes in, the engine's notes out, with times.

    ``mode`` is ``"call-response"`` (the engine answers each phrase of ``bars`` bars, or one ended
    by a rest of ``rest`` quarters, with ``bars`` bars) or ``"accompany"`` (the engine plays its
    ``programs`` under the musician's part, ``lookahead`` bars behind). ``lookahead=0`` plays each
    bar in time, decided from the bars before and, every ``listen_ticks`` grid ticks, from the bar
    so far; with ``react`` the engine waits at each of those points for the musician's note there;
    ``predict`` has the model write the musician's part ahead too, unplayed (docs/jam.md, "What
    the engine knows"). ``lookahead``, ``listen_ticks`` and ``react`` left None take the engine's
    defaults (``sage_jam_options_default``): in time, listening every beat, reacting, which is what
    the musician hears as consonant (docs/jam.md, "Accompaniment quality"); ``lookahead=1`` alone
    plays one bar behind, without the reaction latency. Left None, they do nothing in call and
    response. The musician's channels
    play ``channel_programs`` (16 programs; default: every channel ``musician_program``, channel 10
    drums). Bar 0 starts at ``start_us`` (default: now, on :func:`now_us`'s clock) at ``tempo``
    quarter notes per minute in ``meter``/4 (until :meth:`set_meter` or a time signature SysEx
    from the musician changes it). ``controls`` (a :class:`sage_edge.Controls` or a
    dict of its keywords) constrain the engine's parts. ``clock="in"`` follows the MIDI clock the
    musician's input carries (24 ppqn: Start makes a downbeat, each pulse on a grid tick re-anchors
    the grid, a note is due when the pulse of its tick comes; Stop stands the music still, its
    notes released, until Continue, which a Song Position Pointer may move; a pointer while it
    runs is a Stop, the pointer and a Continue at once); ``clock="out"`` leads,
    :meth:`serve` sending Start and the pulses (docs/jam.md, "Clock"); None (the default) plays
    on the jam's own clock.
    """

    def __init__(
        self,
        engine,
        mode: str = "call-response",
        *,
        programs: list[int],
        bars: int = 4,
        rest: float = 0.0,
        lookahead: int | None = None,
        listen_ticks: int | None = None,
        predict: bool = False,
        react: bool | None = None,
        tempo: float = 120.0,
        meter: int = 4,
        musician_program: int = 0,
        channel_programs: list[int] | None = None,
        start_us: int | None = None,
        sampling=None,
        seed: int = 0,
        controls=None,
        clock: str | None = None,
    ):
        from sage_edge.engine import _controls_or_none, _sampling_or_default

        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of in, out or None, got {clock!r}")
        _engine.check_tempo(tempo)
        if channel_programs is None:
            channel_programs = [musician_program] * 16
            channel_programs[DRUM_CHANNEL] = -1
        self.start_us = now_us() if start_us is None else int(start_us)
        self.clock = clock
        self._jam = _engine.Jam(
            engine._model,
            MODES[mode],
            bars,
            rest,
            lookahead,
            listen_ticks,
            predict,
            react,
            list(programs),
            _sampling_or_default(sampling).values(),
            seed,
            self.start_us,
            round(60e6 / tempo),
            meter,
            list(channel_programs),
            clock == "in",
        )
        self._live = self._jam.live()
        if (controls := _controls_or_none(controls)) is not None:
            self._jam.set_controls(controls.settings)

    def note(self, time_us: int, channel: int, pitch: int, velocity: int) -> None:
        """A note on (velocity 0: off) the musician played at ``time_us``."""
        self._live.note(time_us, channel, pitch, velocity)

    def midi(self, time_us: int, data: bytes) -> None:
        """Raw MIDI bytes the musician's port delivered at ``time_us``."""
        self._live.midi(time_us, data)

    def set_meter(self, bar: int, quarters: int) -> None:
        """Bars of ``quarters``/4 from bar ``bar`` on (one not started yet), until a later
        change: the musician's part, the engine's and the times of both follow (docs/jam.md,
        "Meter changes")."""
        self._live.set_meter(bar, quarters)

    def bar(self, bar: int) -> tuple[int, int]:
        """The bar table: ``(start tick, quarters)`` of bar ``bar``."""
        return self._live.bar(bar)

    def poll(self, now: int | None = None) -> list[JamNote]:
        """Feeds the bars complete at ``now`` and generates a little; the engine's new notes,
        each ahead of its ``time_us``. Call it often (every millisecond or so)."""
        return [JamNote(*n) for n in self._jam.poll(now_us() if now is None else now)]

    def tick_at(self, time_us: int) -> int:
        """The grid tick (the model's ticks from bar 0) nearest ``time_us``."""
        return self._live.tick_at(time_us)

    @property
    def ticks_per_quarter(self) -> int:
        """The model's grid: ticks per quarter note."""
        return self._live.ticks_per_quarter

    def time_of(self, tick: int) -> int:
        """When grid tick ``tick`` falls, in microseconds on the jam's clock."""
        return self._live.time_of(tick)

    def bar_time(self, bar: int) -> int:
        """When bar ``bar`` starts (the bar table's start), in microseconds on the jam's
        clock."""
        return self._live.time_of(self._live.bar(bar)[0])

    @property
    def options(self) -> dict:
        """How the jam plays: ``lookahead``, ``listen_ticks``, ``react``, ``predict``, the
        engine's defaults resolved for the mode (``react`` and ``listen_ticks`` are off in call
        and response and one bar behind)."""
        return self._jam.options()

    @property
    def state(self) -> dict:
        """answering, generating (poll again at once), answers, tokens (in the session's
        stream), dropped_notes, replays and replayed_tokens (in time: times the session went back
        into the bar, tokens fed then)."""
        return self._jam.state()

    def history(self) -> list[int]:
        """The last 8192 tokens of the session's stream (the musician's bars and the engine's),
        oldest first."""
        return self._jam.history()

    def serve(self, midi_in, midi_out, stop=None, *, rt_priority: int = 0, on_note=None) -> dict:
        """Plays with a musician in real time through MIDI ports: ``midi_in`` a file descriptor
        (a MIDI device, a serial port, a pty) or an object with ``fileno()`` (the ports of
        :func:`sage_edge.ports.open_port`, a named port among them), ``midi_out`` a file
        descriptor or an object with ``send(bytes)``. Bytes read from the input go to the jam
        stamped with :func:`now_us`, the engine's notes go out as MIDI 1.0 messages at their
        times (a program change on a channel's first note), or, following a clock
        (``clock="in"``), once the clock's pulse reaches their grid tick; leading it
        (``clock="out"``), Start at bar 0 and 24 pulses per quarter note go out before the notes
        due at the same time, and Stop at the end (docs/jam.md, "Clock"). ``on_note`` is called
        with each note as it is scheduled. The engine's jam player (``sage_jam_player_*``, as
        sage-edge-run's) times the messages and the clock, keeps the MIDI scheduler's rules and
        ends the session (docs/jam.md, "Playing the notes").
        ``rt_priority`` N asks for real-time priority (SCHED_FIFO N) while playing, as
        ``sage-edge-run --rt-priority``; refused, it warns and plays at normal priority. Runs
        until ``stop()`` is true (the notes sounding then are ended at once) or the input ends
        (a named port's never does) and the bars a last phrase needs have passed; returns counts
        (notes heard and played, late sends)."""
        if not isinstance(midi_in, int):
            midi_in = midi_in.fileno()
        send = midi_out.send if hasattr(midi_out, "send") else functools.partial(os.write, midi_out)
        os.set_blocking(midi_in, False)
        # The engine plays the notes: their timing, the clock led or followed, and the end.
        player = _engine.JamPlayer(self._jam, self.clock == "out")
        ended = False

        def send_due() -> None:
            for message in player.take_due(now_us()):
                send(message)

        with real_time(rt_priority):
            while stop is None or not stop():
                now = now_us()
                while not ended:
                    try:
                        data = os.read(midi_in, 1024)
                    except BlockingIOError:
                        break
                    except OSError:  # EIO: a pty whose other side closed
                        data = b""
                    if not data:
                        ended = True
                        player.input_ended(now)
                        break
                    self.midi(now, data)
                send_due()  # first: a pulse just read may make notes due
                for n in player.poll(now):
                    if on_note is not None:
                        on_note(JamNote(*n))
                send_due()
                if player.state()["done"]:
                    break
                wait = player.wait(now_us())
                select.select([] if ended else [midi_in], [], [], wait / 1e6)
            for message in player.stop():
                send(message)
        counts, played = self._live.counts(), player.state()
        return {
            "heard": counts["notes"],
            "played": played["notes"],
            "late_sends": played["late_sends"],
        }

    def play(self, events: Iterable[MidiEvent], until_us: int | None = None) -> Iterator[JamNote]:
        """Plays timed events (a list, a file's notes, a recorded take) into the jam on a
        simulated clock, polling at each event and every millisecond between, and yields the
        engine's notes as they are decoded; goes on polling until ``until_us`` (default: two
        phrases' worth of bars after the last event)."""
        step = 1000
        t = self.start_us
        last = self.start_us
        for event in events:
            while t < event.time_us:
                yield from self.poll(t)
                t += step
            self.note(*event)
            last = event.time_us
        end = until_us if until_us is not None else last + self.bar_time(16) - self.bar_time(0)
        while t <= end:
            yield from self.poll(t)
            t += step


class LiveEncoder:
    """Timed MIDI events in, the model's tokens out, a bar at a time (the engine's live encoder).

    ``start_us`` is where bar 0 begins on the caller's clock, ``tempo`` the tempo in quarter
    notes per minute (or ``us_per_quarter``), bars are ``bar_quarters``/4 until a meter change
    (:meth:`set_meter`, :meth:`meter`, or a time signature SysEx in :meth:`midi`), and
    ``channel_programs`` gives the General MIDI program of each of the 16 channels (-1 = drums).
    ``follow_clock``: MIDI clock bytes in :meth:`midi` (24 ppqn, Start, Stop, Continue, Song
    Position Pointer) drive the grid (docs/jam.md, "Clock"; ``counts`` gives where it is).
    """

    def __init__(
        self,
        engine,
        *,
        start_us: int = 0,
        us_per_quarter: int = 500000,
        bar_quarters: int = 4,
        channel_programs: list[int] | None = None,
        follow_clock: bool = False,
    ):
        self._live = _engine.Live(
            engine._model,
            start_us,
            us_per_quarter,
            bar_quarters,
            channel_programs or [],
            follow_clock,
        )

    def note(self, time_us: int, channel: int, pitch: int, velocity: int) -> None:
        self._live.note(time_us, channel, pitch, velocity)

    def midi(self, time_us: int, data: bytes) -> None:
        """Raw MIDI bytes received at ``time_us`` (running status, real-time bytes, SysEx)."""
        self._live.midi(time_us, data)

    def tempo(self, time_us: int, us_per_quarter: int) -> None:
        self._live.tempo(time_us, us_per_quarter)

    def program(self, channel: int, program: int) -> None:
        self._live.program(channel, program)

    def set_meter(self, bar: int, quarters: int) -> None:
        """Bars of ``quarters``/4 from bar ``bar`` on (one not started yet), until a later
        change (docs/jam.md, "Meter changes")."""
        self._live.set_meter(bar, quarters)

    def meter(self, time_us: int, quarters: int) -> int:
        """A time signature met at ``time_us``, as in a file: from the first bar line at or after
        its grid point (or the first bar not started); returns that bar."""
        return self._live.meter(time_us, quarters)

    def bar(self, bar: int) -> tuple[int, int]:
        """The bar table: ``(start tick, quarters)`` of bar ``bar``."""
        return self._live.bar(bar)

    @property
    def ticks_per_quarter(self) -> int:
        return self._live.ticks_per_quarter

    def take_bar(self, now_us: int, force: bool = False) -> list[int]:
        """The next bar's tokens if it is complete at ``now_us`` (``force``: even with notes
        still sounding, cut at the bar line), else ``[]``; without those
        ``take_final`` gave ahead (all of them given: ``[]``, and ``counts["bars_taken"]`` says
        the bar was taken)."""
        return self._live.take_bar(now_us, force)

    def take_final(self, now_us: int) -> list[int]:
        """The part of the open bar that is final at ``now_us`` and not taken yet (positions the
        clock has passed, up to a note still sounding, whose Duration waits); ``take_bar`` then
        gives the rest. The pieces together are the bar's tokens."""
        return self._live.take_final(now_us)

    def time_of(self, tick: int) -> int:
        """When grid tick ``tick`` (from bar 0) falls, in microseconds on the caller's clock."""
        return self._live.time_of(tick)

    def tick_at(self, time_us: int) -> int:
        """The grid tick (the model's ticks, from bar 0) nearest ``time_us``."""
        return self._live.tick_at(time_us)

    @property
    def bar_ticks(self) -> int:
        """The length of the open bar, in grid ticks."""
        start, quarters = self._live.bar(self.counts["bars_taken"])
        return quarters * self._live.ticks_per_quarter

    @property
    def counts(self) -> dict[str, int]:
        """bars_taken, notes, late, dropped, sounding, waiting, and following a clock (-1 or 0
        before it runs): clock_tick (the grid tick of its last pulse on one), clock_start_tick (the
        downbeat of its last Start), clock_from_tick (notes for earlier ticks are not to be
        played: that downbeat, or where a Song Position Pointer moved a Continue), clock_stops,
        clock_running, notes_while_stopped (not heard) (docs/jam.md, "Clock")."""
        return self._live.counts()

    def reset(self) -> None:
        self._live.reset()


__all__ = [
    "CLOCKS",
    "MODES",
    "Jam",
    "JamNote",
    "LiveEncoder",
    "MidiEvent",
    "channel_programs",
    "midi_bytes",
    "now_us",
    "part_channels",
    "real_time",
    "play_score",
    "played_and_encoded",
    "score_events",
]
