"""The `sage-edge` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import warnings
from pathlib import Path

import sage_edge
from sage_edge.errors import SageError


class UserError(Exception):
    """A mistake in how the command was called: reported on one line, exit status 2."""


def _native():
    try:
        from sage_edge import _engine
    except ImportError as error:  # a source tree that was never built
        raise UserError(f"the C++ engine is not built ({error}); run `pip install .`") from None
    return _engine


def _engine(args: argparse.Namespace):
    native = _native()
    try:
        native.kernel()
    except RuntimeError as error:  # SAGE_EDGE_KERNEL names a path this CPU cannot run
        raise UserError(str(error)) from None
    from sage_edge.engine import Engine

    return Engine(args.model, kv_memory=args.kv_memory)


def _check_writable(path: Path, option: str) -> None:
    """Refuses an output path that cannot be written before any work is done: a directory, a
    missing directory, no permission."""
    if path.is_dir():
        raise UserError(f"{option} {path} is a directory")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise UserError(f"{option} {path}: permission denied")
        return
    directory = path.parent
    if not directory.is_dir():
        raise UserError(f"{option} {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise UserError(f"{option} {path}: cannot create a file in {directory}")


def cmd_info(args: argparse.Namespace) -> None:
    native = _native()
    try:
        kernel = native.kernel()
    except RuntimeError as error:
        raise UserError(str(error)) from None
    info = {
        "version": sage_edge.__version__,
        "cpu_features": native.cpu_features(),
        "kernel": kernel,
        "available_kernels": native.available_kernels(),
        "controls": {
            name: f"{syntax}: {text}" for name, syntax, text in native.controls_described()
        },
    }
    from sage_edge.engine import DEFAULT_MODEL, learned_programs_text

    if args.model is not None or DEFAULT_MODEL.is_file():
        engine = _engine(args)
        info["model"] = {
            "path": str(args.model or DEFAULT_MODEL),
            **engine.info,
            # program -> notes in the training data (JSON names the programs as strings)
            "learned_programs": engine.learned_programs,
        }
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"sage-edge {info['version']}")
    print(f"cpu features: {info['cpu_features']}")
    print(f"kernels available: {', '.join(info['available_kernels'])}")
    print(f"kernel: {info['kernel']}")
    print("controls (generate/stream flags, Controls keywords):")
    for name, text in info["controls"].items():
        print(f"  --{name} {text}")
    if "model" in info:
        model = info["model"]
        print(f"model: {model['path']}")
        for key, value in model.items():
            if key == "learned_programs":
                known = value is not None
                print(f"  learned programs: {learned_programs_text(value) if known else 'unknown'}")
            elif key != "path":
                print(f"  {key}: {value}")


def _programs(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UserError(f"--programs takes comma-separated numbers, not {text!r}") from None


SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "min_p")


def _meter(text: str) -> tuple[int, list[tuple[int, int]]]:
    """``N[,BAR:N...]``: the first meter, then the changes (the engine checks the values)."""
    first, *changes = text.split(",")
    try:
        return int(first), [(int(b), int(q)) for b, q in (c.split(":") for c in changes)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"N then BAR:N items (4,8:3), got {text!r}") from None


def _controls(args: argparse.Namespace):
    """The musical controls given as flags (the engine's names: sage_edge.engine.CONTROLS), or
    None when none is."""
    from sage_edge.engine import CONTROLS, Controls

    given = [
        (name, getattr(args, "control_" + name.replace("-", "_")))
        for name, _, _ in CONTROLS
        if getattr(args, "control_" + name.replace("-", "_"), None) is not None
    ]
    if not given:
        return None
    controls = Controls()
    for name, value in given:
        try:
            controls.set(name, value)
        except ValueError as error:  # the engine's message names the control
            raise UserError(str(error)) from None
    return controls


def _generation_arguments(args: argparse.Namespace) -> dict:
    from sage_edge.engine import SamplingParams

    # Sampling options not given are left out, so that the engine's defaults apply.
    given = {name: getattr(args, name) for name in SAMPLING_OPTIONS}
    return {
        "prompt": args.prompt,
        "bars": args.bars,
        "sampling": SamplingParams(**{k: v for k, v in given.items() if v is not None}),
        "seed": args.seed,
        "programs": _programs(args.programs),
        "tempo": args.tempo,
        "controls": _controls(args),
    }


class _ProgressBar:
    """Bars done of bars asked, on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if self.enabled:
            filled = 30 * done // total
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] bar {done}/{total}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 50 + "\r")


def cmd_generate(args: argparse.Namespace) -> None:
    _check_writable(Path(args.out), "--out")
    if args.plot:
        _check_writable(Path(args.plot), "--plot")
    engine = _engine(args)
    progress = _ProgressBar(not args.quiet)
    try:
        result = engine.generate(**_generation_arguments(args), progress=progress)
    finally:
        progress.close()
    score = result.score
    out = Path(args.out)
    try:
        score.dump_midi(out)
    except Exception as error:  # symusic reports unwritable paths as RuntimeError
        raise UserError(f"cannot write {out}: {error}") from None
    if args.plot:
        from sage_edge.pianoroll import plot_pianoroll

        plot_pianoroll(score, args.plot, title=f"sage-edge: {out.name}")
    tracks = sum(1 for t in score.tracks if len(t.notes))
    rate = result.generated_tokens / result.seconds if result.seconds > 0 else float("inf")
    print(
        f"wrote {out}: {args.bars} bars, {len(result.notes)} new notes "
        f"({score.note_num()} in all), {tracks} tracks, "
        f"{result.generated_tokens} tokens at {rate:,.0f} tokens/s"
    )


def cmd_stream(args: argparse.Namespace) -> None:
    engine = _engine(args)
    stream = engine.stream(**_generation_arguments(args), realtime=args.realtime)
    # Closed however the loop ends (Ctrl-C, a closed pipe), which stops the generating thread.
    with contextlib.closing(iter(stream)) as notes:
        for note in notes:
            record = note._asdict()
            if not args.realtime:
                del record["lateness"]
            print(json.dumps(record), flush=True)


def cmd_bench(args: argparse.Namespace) -> None:
    from sage_edge import bench

    engine = _engine(args)
    settings = dict(bench.QUICK) if args.quick else {}
    if args.positions is not None:
        positions = [int(p) for p in args.positions.split(",")]
        if not positions or min(positions) < 0:
            raise UserError("--positions takes comma-separated non-negative numbers")
        settings["positions"] = positions
    if args.steps is not None:
        if args.steps < 1:
            raise UserError("--steps must be at least 1")
        settings["steps"] = args.steps
    results = bench.run(engine, **settings)
    if args.plot:
        bench.plot(results, args.plot)
    print(json.dumps(results, indent=2) if args.json else bench.report(results))


def cmd_jam(args: argparse.Namespace) -> None:
    from sage_edge import ports
    from sage_edge.engine import SamplingParams

    if args.list_ports:
        print_ports()
        return
    if args.inp is None or args.out is None:
        raise UserError("--in and --out are required (or --list-ports)")
    programs = _programs(args.programs)
    if not programs:
        raise UserError("--programs is required: the parts the engine plays, e.g. 53,54,42")
    if args.record:
        _check_writable(Path(args.record), "--record")
    if not 0 <= args.rt_priority <= 99:
        raise UserError(f"--rt-priority needs an integer in 0..99, got {args.rt_priority}")
    given = {name: getattr(args, name) for name in SAMPLING_OPTIONS}
    engine = _engine(args)
    opened = []  # closed last to first, however the jam ends, by ports.close_or_exit
    try:
        for port, direction in ((args.inp, "in"), (args.out, "out")):
            opened.append(_open_port(port, direction, args.reconnect))
        midi_in, midi_out = opened
        jam = engine.jam(
            args.mode,
            programs=programs,
            bars=args.bars,
            rest=args.rest,
            lookahead=args.lookahead,
            listen_ticks=args.listen_ticks,
            react=args.react,
            predict=args.predict,
            tempo=args.tempo,
            meter=args.meter[0],
            musician_program=args.musician_program,
            sampling=SamplingParams(**{k: v for k, v in given.items() if v is not None}),
            seed=args.seed or 0,
            controls=_controls(args),
            clock=args.clock,
        )
        for bar, quarters in args.meter[1]:
            jam.set_meter(bar, quarters)
        print(
            f"sage-edge: listening on {midi_in.name}: bar 0 at monotonic {jam.start_us} us, "
            f"{args.meter[0]}/4 at {args.tempo:g} BPM, {_way_of_playing(args.mode, jam.options)}",
            file=sys.stderr,
            flush=True,
        )
        # Ctrl-C stops the loop between two polls, so that it ends the notes sounding and counts.
        stopped = []
        previous = signal.signal(signal.SIGINT, lambda *_: stopped.append(True))
        try:
            with warnings.catch_warnings():  # a refused --rt-priority: one line, as the runner's
                warnings.showwarning = lambda message, *_: print(
                    f"sage-edge: warning: {message}", file=sys.stderr, flush=True
                )
                counts = jam.serve(
                    midi_in,
                    midi_out,
                    stop=lambda: bool(stopped),
                    rt_priority=args.rt_priority,
                    on_note=_print_event(jam.ticks_per_quarter) if args.events else None,
                )
        finally:
            signal.signal(signal.SIGINT, previous)
        # Written before the ports are closed: a named port's close can end the process instead.
        if args.record:
            engine.tokenizer.decode(jam.history()).dump_midi(args.record)
        print(
            f"sage-edge: heard {counts['heard']} notes, played {counts['played']} "
            f"({jam.state['answers']} answers); {counts['late_sends']} sends over "
            f"{_native().JAM_LATE_US / 1000:g} ms late",
            file=sys.stderr,
            flush=True,
        )
        losses = [
            f"{what} lost {port.lost} times, back {port.back}"
            for what, port in (("MIDI input", midi_in), ("MIDI output", midi_out))
            if getattr(port, "lost", 0)
        ]
        if losses:
            print(f"sage-edge: {'; '.join(losses)}", file=sys.stderr, flush=True)
    finally:
        ports.close_or_exit(*reversed(opened))


def _print_event(ticks_per_quarter: int):
    """`sage-edge jam --events`: each note as sage-edge-run --midi-in --events prints it."""
    from sage_edge.live import now_us

    def print_note(note) -> None:
        start, length = (
            note.tick / ticks_per_quarter,
            (note.end_tick - note.tick) / ticks_per_quarter,
        )
        print(f"{start:.4f} {length:.4f} {note.pitch} {note.velocity} {note.program} {now_us()}")

    return print_note


def _open_port(port: str, direction: str, reconnect: bool):
    """A jam's --in or --out (sage_edge.ports.open_port), its losses and returns said on stderr as
    they happen; a device that cannot be opened is the user's error, as a port name that names no
    one port (a ValueError) is."""
    from sage_edge import ports

    def report(line: str) -> None:
        print(f"sage-edge: {line}", file=sys.stderr, flush=True)

    try:
        return ports.open_port(port, direction, reconnect=reconnect, report=report)
    except OSError as error:
        raise UserError(f"cannot open {error.filename}: {error.strerror}") from None


def print_ports() -> None:
    """`sage-edge jam --list-ports`: the named ports --in and --out can take."""
    from sage_edge import ports

    for direction, what in (("in", "inputs (--in)"), ("out", "outputs (--out)")):
        found, unreachable = ports.list_ports(direction)
        print(f"MIDI {what}:")
        for port in found:
            print(f"  {port.name}  ({port.system})")
        if not found:
            print("  none")
        if unreachable and direction == "in":
            print(f"  ({ports.describe_unreachable(unreachable)})")


def _way_of_playing(mode: str, options: dict) -> str:
    """How a jam plays, its defaults resolved by the engine, as sage-edge-run says it."""
    if mode != "accompany":
        return "answering"
    if options["lookahead"] > 0:
        return f"accompanying {options['lookahead']} bar(s) behind"
    ticks = options["listen_ticks"]
    way = f"accompanying in time, listening {f'every {ticks} ticks' if ticks else 'at bar lines'}"
    way += ", reacting" if options["react"] else ", deciding ahead"
    return way + (", predicting" if options["predict"] else "")


def _engine_facts() -> tuple[dict, tuple[float, float] | None, list, str | None]:
    """The engine's sampling defaults, tempo range, controls and key/value memory, for --help;
    none when it is not built."""
    try:
        native = _native()
    except UserError:
        return {}, None, [], None
    return (
        native.DEFAULT_SAMPLING,
        native.TEMPO_RANGE_BPM,
        native.controls_described(),
        native.DEFAULT_KV_MEMORY,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sage-edge",
        description="Generate multi-track symbolic music in real time on small devices.",
    )
    parser.add_argument("--version", action="version", version=f"sage-edge {sage_edge.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    sampling_defaults, tempo_range, controls, kv_memory = _engine_facts()

    def add_model(command: argparse.ArgumentParser) -> None:
        command.add_argument("--model", help="a .sage model file (default: the shipped model)")
        command.add_argument(
            "--kv-memory",
            default=kv_memory,  # the engine's; None only where it is not built (_engine refuses)
            help="how a session holds past keys and values: f32 or int8 (about a quarter of the "
            "memory)" + (f" ({kv_memory})" if kv_memory else ""),
        )

    def default(name: str) -> str:
        return f" ({sampling_defaults[name]:g})" if name in sampling_defaults else ""

    def add_generation(command: argparse.ArgumentParser) -> None:
        add_model(command)
        command.add_argument("--prompt", help="a MIDI file to continue")
        command.add_argument("--bars", type=int, default=8, help="new bars to generate (8)")
        command.add_argument(
            "--temperature", type=float, help="0 = greedy" + default("temperature")
        )
        command.add_argument(
            "--top-k", type=int, help="keep the K most likely tokens, 0 = off" + default("top_k")
        )
        command.add_argument(
            "--top-p", type=float, help="nucleus sampling, in (0, 1], 1 = off" + default("top_p")
        )
        command.add_argument(
            "--min-p",
            type=float,
            help="drop tokens below P x the best one's probability, in [0, 1), 0 = off"
            + default("min_p"),
        )
        command.add_argument("--seed", type=int, help="random seed (default: a new one each run)")
        command.add_argument(
            "--programs", help="General MIDI programs allowed, e.g. 40,41,42,43 (-1 = drums)"
        )
        command.add_argument(
            "--tempo",
            type=float,
            help="tempo of the result in BPM"
            + (f", {tempo_range[0]:.6g}..{tempo_range[1]:g}" if tempo_range else ""),
        )
        add_controls(command)

    def add_controls(command: argparse.ArgumentParser) -> None:
        group = command.add_argument_group("musical controls (docs/controls.md)")
        for name, syntax, text in controls:  # the engine's names, parsed by the engine
            group.add_argument(
                f"--{name}", dest="control_" + name.replace("-", "_"), metavar=syntax, help=text
            )

    info = commands.add_parser("info", help="print the version, CPU features, kernel and model")
    add_model(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=cmd_info)

    generate = commands.add_parser("generate", help="generate music into a MIDI file")
    add_generation(generate)
    generate.add_argument("--out", default="sage-edge.mid", help="MIDI file to write")
    generate.add_argument("--plot", help="also write a piano-roll PNG here")
    generate.add_argument("--quiet", action="store_true", help="no progress bar")
    generate.set_defaults(run=cmd_generate)

    stream = commands.add_parser("stream", help="print one JSON object per note as generated")
    add_generation(stream)
    stream.add_argument(
        "--realtime", action="store_true", help="print each note at its playback time"
    )
    stream.set_defaults(run=cmd_stream)
    jam = commands.add_parser(
        "jam",
        help="play along with a musician on MIDI devices",
        description="Listens on a MIDI input (a device such as /dev/snd/midiC1D0, a serial port, "
        "a pty or, with the ports extra, an ALSA sequencer or JACK port by name) and answers "
        "phrases or accompanies on a MIDI output (docs/jam.md). Runs until Ctrl-C or until the "
        "input ends (a named port, or a device with --reconnect, is waited for instead).",
    )
    add_model(jam)
    port = "a device path or, with the ports extra, a port name (exact, or a unique part of one)"
    jam.add_argument("--in", dest="inp", metavar="PORT", help=f"MIDI input: {port}")
    jam.add_argument("--out", metavar="PORT", help=f"MIDI output: {port}")
    jam.add_argument("--list-ports", action="store_true", help="list the named MIDI ports and exit")
    jam.add_argument("--mode", choices=("call-response", "accompany"), default="call-response")
    jam.add_argument("--programs", help="the engine's General MIDI programs, e.g. 53,54,42")
    jam.add_argument("--bars", type=int, default=4, help="bars of a phrase and an answer (4)")
    jam.add_argument("--rest", type=float, default=0.0, help="quarters of rest ending a phrase")
    # Left unset, these three take the engine's defaults (sage_jam_options_default).
    jam.add_argument(
        "--lookahead",
        type=int,
        help="accompany: bars behind (default 0: in time; 1: one bar behind, less consonant as "
        "heard but without reaction latency)",
    )
    jam.add_argument(
        "--listen-ticks",
        type=int,
        help="lookahead 0: listen every N grid ticks (default one beat; 0: bar lines only)",
    )
    jam.add_argument(
        "--react",
        action=argparse.BooleanOptionalAction,
        help="lookahead 0: wait for the musician's note, then play (default on)",
    )
    jam.add_argument(
        "--predict", action="store_true", help="lookahead 0: the model writes the musician ahead"
    )
    jam.add_argument("--tempo", type=float, default=120.0, help="BPM (120)")
    jam.add_argument(
        "--meter",
        type=_meter,
        default=(4, []),
        help="quarters per bar (4), then BAR:N from bar BAR on: 4,8:3,12:6",
    )
    jam.add_argument("--musician-program", type=int, default=0, help="the musician's program")
    jam.add_argument("--seed", type=int, help="random seed (0)")
    for name in SAMPLING_OPTIONS:
        jam.add_argument("--" + name.replace("_", "-"), type=int if name == "top_k" else float)
    jam.add_argument("--record", help="write the whole jam (both parts) to this MIDI file")
    jam.add_argument(
        "--clock",
        choices=("in", "out"),
        help="follow the MIDI clock (24 ppqn, Start) on the input, or lead: send Start and clock "
        "on the output (docs/jam.md)",
    )
    jam.add_argument(
        "--rt-priority",
        type=int,
        default=0,
        metavar="N",
        help="run at real-time priority N (SCHED_FIFO, 1-99; needs CAP_SYS_NICE or an rtprio "
        "limit) so that a busy host does not keep the jam from a pulse or a due note (0: off)",
    )
    jam.add_argument(
        "--reconnect",
        action="store_true",
        help="an --in device path (a character device: a USB MIDI device, a serial port, a pty) "
        "that ends or is removed is opened again when it is back, not the end of the jam (named "
        "ports always are; docs/jam.md)",
    )
    jam.add_argument(
        "--events",
        action="store_true",
        help="print the engine's notes, one per line: time duration pitch velocity program "
        "(times in quarter notes from bar 0) and the monotonic time (us) it was decoded at",
    )
    add_controls(jam)
    jam.set_defaults(run=cmd_jam)
    bench = commands.add_parser(
        "bench",
        help="measure decode speed, memory and bandwidth",
        description="Measures decode latency, prefill speed, memory and memory bandwidth. "
        "By default it takes about a minute and about 340 MB of memory (a 256 MB buffer for "
        "the bandwidth); --quick takes a few seconds and about 110 MB, for a Pi Zero's 512 MB.",
    )
    add_model(bench)
    bench.add_argument(
        "--quick",
        action="store_true",
        help="positions 100,1000, 50 steps, a 32 MB bandwidth buffer, shorter prefill and music",
    )
    bench.add_argument("--positions", help="comma-separated positions (100,1000,10000,50000)")
    bench.add_argument("--steps", type=int, help="decode steps timed per position (200)")
    bench.add_argument("--plot", help="write a PNG of latency against position here")
    bench.add_argument("--json", action="store_true", help="print JSON")
    bench.set_defaults(run=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except BrokenPipeError:  # the reader went away (`sage-edge stream | head`): a normal stop
        # Python flushes stdout again at exit, which would fail once more: point it at devnull
        # (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UserError, SageError, ValueError, OSError) as error:
        print(f"sage-edge: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
