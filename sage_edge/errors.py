"""The exceptions sage-edge raises for problems with its inputs.

Bad argument values (a negative temperature, a program outside 0..127) raise ``ValueError``;
problems with files a user hands us raise a ``SageError`` subclass naming the file and the reason.
"""


class SageError(Exception):
    """Base class of every sage-edge error about an input file."""


class ModelFormatError(SageError):
    """A ``.sage`` model file is missing, truncated, corrupted or of an unsupported version."""


class MidiInputError(SageError):
    """A MIDI file (or score) cannot be read or holds nothing to tokenize."""


class UnplayedProgramsError(ValueError):
    """Requested General MIDI programs the model did not play: programs it never learned (refused
    before generating) or programs that stayed silent in a generation. A ``ValueError``: the
    ``programs`` argument does not fit this model. ``programs`` lists them; ``learned`` maps each
    program the model learned to its notes in the training data (``Engine.learned_programs``)."""

    def __init__(self, message: str, programs: list[int], learned: dict[int, int]):
        super().__init__(message)
        self.programs = programs
        self.learned = learned
