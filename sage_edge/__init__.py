"""sage-edge: real-time multi-track symbolic music generation on small devices."""

from importlib.metadata import PackageNotFoundError, version

from sage_edge.errors import (
    MidiInputError,
    ModelFormatError,
    SageError,
    UnplayedProgramsError,
)

try:
    __version__ = version("sage-edge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "Controls",
    "Engine",
    "MidiInputError",
    "ModelFormatError",
    "NoteEvent",
    "SageError",
    "SamplingParams",
    "UnplayedProgramsError",
    "__version__",
]


def __getattr__(name: str):
    # The engine needs the compiled extension; import it on first use so that the tokenizer and
    # the file format work in a source tree that was never built.
    if name in ("Controls", "Engine", "NoteEvent", "SamplingParams"):
        from sage_edge import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'sage_edge' has no attribute {name!r}")
