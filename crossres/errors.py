"""Errors from bad input: the command line prints their message and exits with status 2, without a traceback.

Raise :class:`InputError` where the code knows the file or option at fault, with a message that names it and says
what to do. ``crossres`` shows the traceback too with ``--debug`` or ``CROSSRES_DEBUG=1``.
"""

from __future__ import annotations

import errno
import os

__all__ = ["InputError", "debug_requested", "input_error_message"]

DEBUG_ENV = "CROSSRES_DEBUG"

# File-system conditions a person fixes (space, permissions), not bugs.
_OS_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or directory",
    errno.EEXIST: "already exists",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
}


class InputError(ValueError):
    """Bad input (a config, option, data file, checkpoint or the file system); the message names it."""


def debug_requested() -> bool:
    """Whether ``CROSSRES_DEBUG`` asks for tracebacks of bad-input errors (any value but ``""``/``0``)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def input_error_message(err: BaseException) -> str | None:
    """The one-line message of a bad-input error, or ``None`` for anything else (a bug: show its traceback).

    Args:
        err: the exception that ended a command.

    Returns:
        :class:`InputError`'s message, or for an :class:`OSError` of the file system (no space, read-only,
        permission denied, missing file, ...) a message naming the path; ``None`` otherwise.
    """
    if isinstance(err, InputError):
        return _without_worker_traceback(str(err))
    if isinstance(err, OSError) and err.errno in _OS_ERRNOS:
        paths = [str(p) for p in (err.filename, err.filename2) if p is not None]
        reason = err.strerror or _OS_ERRNOS[err.errno]
        if paths:
            return f"{' -> '.join(paths)}: {reason}"
        return str(err) or reason
    if isinstance(err, FileNotFoundError | FileExistsError | NotADirectoryError | IsADirectoryError | PermissionError):
        return str(err)  # raised by crossres with a message that names the path
    return None


def _without_worker_traceback(message: str) -> str:
    """A DataLoader worker's error re-raised in the main process carries the worker's traceback: keep its message."""
    if "Original Traceback" not in message:
        return message
    last = [line for line in message.splitlines() if line.strip()][-1]
    name, sep, text = last.partition(": ")
    return text if sep and "Error" in name else last
