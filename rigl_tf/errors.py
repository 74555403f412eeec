"""Command-line error reporting: one line naming the problem, the traceback on request.

Every rigl_tf command runs its body through :func:`report_errors`: a failure prints
``<program>: error: <message>`` on stderr and exits with status 1 (2 for usage errors);
``--debug`` re-raises the exception so the full traceback is shown.
"""

import sys
from typing import Callable

# Errors whose message is written for the user (the package's own validation); others
# get their type name in front, since their text alone may not say what went wrong.
_OWN = (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError,
        NotADirectoryError, IsADirectoryError, RuntimeError, FloatingPointError, KeyError)


def message(error: BaseException) -> str:
    """The one-line (plus any diff the error carries) text shown for ``error``."""
    text = str(error).strip()
    if isinstance(error, KeyError) and text.startswith(("'", '"')):
        text = text[1:-1]
    if not text:
        return type(error).__name__
    if not isinstance(error, _OWN) or type(error).__module__.startswith(
            ("tensorflow", "google.protobuf", "zipfile", "json")):
        first = text.splitlines()[0]
        return f"{type(error).__name__}: {first}"
    return text


def report_errors(program: str, body: Callable[[], object], debug: bool = False) -> int:
    """Runs ``body()``; on an exception prints one line on stderr and returns 1.

    Args:
      program: the command name printed in front of the message.
      body: the command's work.
      debug: re-raise instead (the full traceback).

    Returns:
      0 on success, 1 after a reported error.
    """
    try:
        body()
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # noqa: BLE001 (the command line shows every failure briefly)
        if debug:
            raise
        print(f"{program}: error: {message(e)} (--debug shows the traceback)",
              file=sys.stderr, flush=True)
        return 1
    return 0
