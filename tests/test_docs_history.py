"""The README and docs/ give today's figures, commands and machines; how they were reached belongs in git log.

A page fails on the marks of a lab notebook: a work session by number ("session 9", "Session 8", a heading about a
session), an issue by number ("issue 15", "issue #15") and a run by letter ("run W", "runs C and D", "run V's").
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

HISTORY = {
    "a numbered session": re.compile(r"\bsessions?[- ]\d+", re.I),
    "a session heading": re.compile(r"^#+ .*\bsessions?\b", re.I | re.M),
    "a numbered issue": re.compile(r"\bissues? #?\d+", re.I),
    # one capital letter after "run"/"runs", not "run A/B" (a kind of test) nor "run I" (the pronoun)
    "a lettered run": re.compile(r"\b[Rr]uns? (?!I\b)[A-Z]\b(?!/)"),
}


def history_marks(text: str) -> list[str]:
    """Each history mark in text, as 'line N: <kind>: <the matched words>'."""
    found = []
    for kind, pattern in HISTORY.items():
        for match in pattern.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"line {line}: {kind}: {match.group(0)!r}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_page_tells_no_history(page):
    assert not history_marks(page.read_text()), history_marks(page.read_text())


@pytest.mark.parametrize("text", [
    "## This CPU, session 9: two full runs back to back",
    "| ratio | session 5 | session 6 |",
    "The session-7 cased run is slower",
    "## Session notes",
    "(issue 15 asks for at least 95%)",
    "as Issue #31 says",
    "Run W held every figure but one",
    "runs C and D had 1.17×",
    "and run V's 2.33× was the machine",
])
def test_history_is_recognised(text):
    assert history_marks(text)


@pytest.mark.parametrize("text", [
    "Each run writes its own directory; runs resume from `last.ckpt`.",
    "a run A/B test of two recipes",
    "two long runs, 2.55× and 2.54×",
    "Run the suite with `pytest`; a SLURM session ends at its time limit.",
    "the issue tracker",
    "runs 29 minutes",
])
def test_ordinary_text_is_not_history(text):
    assert not history_marks(text)
