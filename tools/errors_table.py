"""Prints the README "Errors" table by running every row of tests/errors_catalogue.py.

    python tools/errors_table.py > /tmp/errors.md   # then paste into README.md
"""

import contextlib
import io
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from errors_catalogue import CATALOGUE  # noqa: E402


def main():
    print("| area | what the user did | exception | message (start) |")
    print("| --- | --- | --- | --- |")
    for area, what, call, exc, _ in CATALOGUE:
        try:
            # A row's own output (e.g. a training log line) must not land inside the table.
            with contextlib.redirect_stdout(io.StringIO()):
                call()
            message, name = "(no error raised!)", "-"
        except (Exception, SystemExit) as e:  # the catalogue's point is to show them
            message, name = str(e), type(e).__name__
        message = " ".join(message.split())
        if len(message) > 150:
            message = message[:147] + "..."
        message = message.replace("|", "\\|")
        print(f"| {area} | {what} | {name} | {message} |")


if __name__ == "__main__":
    main()
