"""Errors meant for the user.

Every package of edge-mtl raises subclasses of :class:`EdgeMTLError` where bad input enters;
the CLI prints their message on one line and exits with ``exit_code``. ``runtime`` owns the
base class because it imports nothing of ours and every other package may import it.
"""

# Set by ``edge-mtl --debug`` (and inherited by worker processes): tracebacks and onnxruntime's
# own log lines are shown.
DEBUG_ENV = "EDGE_MTL_DEBUG"


class EdgeMTLError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class InputError(EdgeMTLError):
    """A file, argument or value given by the user is missing, malformed or out of range."""


class MetadataError(InputError):
    """An ONNX model lacks valid ``edge_mtl`` metadata."""


class RuntimeFailure(EdgeMTLError):
    """Something failed while running on valid input (a provider, a stream, the disk)."""

    exit_code = 1
