"""The progress display of long CLI commands (``router keys rotate``, ``migrate-subjects``)."""

from __future__ import annotations

import io

from router.cli import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_bar_redrawn_in_place() -> None:
    """On a TTY: carriage returns, a bar, the counts, and a newline at the end only."""
    out = _Terminal()
    progress = Progress("re-encrypting", out, width=10)
    for done in (0, 5, 10):
        progress(done, 10)
    text = out.getvalue()
    assert text.count("\r") == 3
    assert text.endswith("\rre-encrypting [##########] 100% 10/10\n")
    assert "[#####.....]  50% 5/10" in text
    assert text.count("\n") == 1


def test_a_pipe_gets_a_line_per_tenth() -> None:
    """Not a TTY (a log, CI): plain lines, at most one per 10%."""
    out = io.StringIO()
    progress = Progress("re-encrypting", out)
    for done in range(1001):
        progress(done, 1000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 11
    assert lines[0] == "re-encrypting: 0/1000 entries (0%)"
    assert lines[-1] == "re-encrypting: 1000/1000 entries (100%)"


def test_nothing_to_do_is_complete() -> None:
    """A total of zero shows as done, without dividing by it."""
    out = io.StringIO()
    Progress("re-encrypting", out)(0, 0)
    assert out.getvalue() == "re-encrypting: 0/0 entries (100%)\n"
