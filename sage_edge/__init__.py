"""sage-edge: real-time multi-track symbolic music generation on small devices."""

from importlib.metadata import PackageNotFoundError, version

from sage_edge.errors import MidiInputError, ModelFormatError, SageError

try:
    __version__ = version("sage-edge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["MidiInputError", "ModelFormatError", "SageError", "__version__"]
