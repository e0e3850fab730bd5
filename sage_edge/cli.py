"""The `sage-edge` command line."""

from __future__ import annotations

import argparse
import json
import sys

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


def cmd_info(args: argparse.Namespace) -> None:
    engine = _native()
    try:
        kernel = engine.kernel()
    except RuntimeError as error:
        raise UserError(str(error)) from None
    info = {
        "version": sage_edge.__version__,
        "cpu_features": engine.cpu_features(),
        "kernel": kernel,
        "available_kernels": engine.available_kernels(),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"sage-edge {info['version']}")
    print(f"cpu features: {info['cpu_features']}")
    print(f"kernels available: {', '.join(info['available_kernels'])}")
    print(f"kernel: {info['kernel']}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sage-edge",
        description="Generate multi-track symbolic music in real time on small devices.",
    )
    parser.add_argument("--version", action="version", version=f"sage-edge {sage_edge.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="print the version, CPU features and kernel path")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (UserError, SageError, ValueError, OSError) as error:
        print(f"sage-edge: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
