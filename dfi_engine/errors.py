"""Typed errors of the engine.

Every error carries a message that says what went wrong *and what to do*;
the daemon turns them into protocol errors by their ``code``.
"""

from __future__ import annotations


class DFIError(Exception):
    """Base class: ``code`` is a stable machine-readable identifier."""

    code = "engine_error"

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} {hint}" if hint else message)


class InputError(DFIError):
    """The image, mask or a parameter is unusable as given."""

    code = "bad_input"


class ImageTooSmallError(InputError):
    code = "image_too_small"


class ImageTooLargeError(InputError):
    code = "image_too_large"


class WeightsError(DFIError):
    """VGG-19 weights are missing, corrupt or of an unknown layout."""

    code = "weights_error"


class DeviceError(DFIError):
    """The requested torch device does not exist here or in this torch build."""

    code = "device_unavailable"


class CancelledError(DFIError):
    """The caller's cancel check returned true between two iterations."""

    code = "cancelled"
