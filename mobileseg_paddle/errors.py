"""The one user-error type and its one formatter.

Every bad input (a config, a weights file, a flag, an image, an export folder, a Lite model)
raises ``UserError`` with a message that names the file or field and what was expected; the
command line prints it as ``mobileseg <command>: error: <one line>`` and exits with status 2.
Imports nothing heavy: the onnxruntime side uses it without paddle."""

import argparse

EXIT_BAD_INPUT = 2


class UserError(ValueError):
    """A failure the user can act on; ``str(e)`` is the line shown."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's own errors (a missing flag ...) as a ``UserError``: one line, as every other."""

    def error(self, message):
        raise UserError(message)


class EvaluationFailed(UserError):
    """Evaluation during training failed after the weights of that iteration were saved."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a stopped container) during a command: raised like Ctrl-C
    so that the clean-ups on the way out run (staging folders, locks, temporary files)."""


def _raise_terminated(signum, frame):
    raise Terminated()


def one_line(e, limit=300):
    """A foreign exception's message as one line: its last non-empty line (paddle and paddleseg
    put the cause last), without paddleseg's "The error message is: " preamble, cut to
    ``limit`` characters."""
    lines = _lines(e)
    text = lines[-1] if lines else ""
    for marker in ("The error message is: ", "the error message is: "):
        if marker in text:
            text = text.split(marker, 1)[1]
    text = text or type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def format_error(command, e):
    """The line a command prints for ``e``. A ``UserError``'s message is ours: kept whole, on
    one line (a DataLoader worker's re-raise wrapper removed); anything else via ``one_line``."""
    if isinstance(e, UserError):
        lines = _lines(e)
        if len(lines) > 1 and "DataLoader worker" in lines[0]:
            lines = [lines[-1].split(": ", 1)[-1]]
        text = " ".join(lines) or type(e).__name__
    else:
        text = one_line(e)
    return f"mobileseg {command}: error: {text}"


def _lines(e):
    return [s.strip() for s in str(e).splitlines() if s.strip()]


def run_main(command, fn):
    """Run ``fn()`` as ``mobileseg <command>``; return its exit status. A ``UserError`` is one
    line on stderr (``format_error``) and status 2; Ctrl-C is status 130, SIGTERM 143, both
    after the clean-ups of ``with`` and ``finally`` blocks (Python's default for SIGTERM
    skips them)."""
    import signal
    import sys
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        result = fn()
    except UserError as e:
        print(format_error(command, e), file=sys.stderr)
        return EXIT_BAD_INPUT
    except Terminated:
        print(f"mobileseg {command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"mobileseg {command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return result if isinstance(result, int) else 0
