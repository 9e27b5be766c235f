"""The offline default corpus: English prose that every CPython installation already ships.

It is read at run time, so the package carries no third-party text:
- ``pydoc_data.topics``: the language reference topics that ``help()`` shows (~0.5 M characters);
- the docstrings of the standard library's pure-Python modules, read with ``ast`` (nothing is imported).
Paragraphs are split on blank lines; paragraphs that look like code rather than prose are dropped.
"""

from __future__ import annotations

import ast
import re
import sysconfig
from pathlib import Path

_WORDS = re.compile(r"[A-Za-z]{2,}")


def _paragraphs(text: str, min_words: int = 8) -> list[str]:
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.splitlines()]
        if any(ln.startswith((">>>", "...", "$ ")) for ln in lines):
            continue  # interactive examples: code, not prose
        para = " ".join(ln for ln in lines if ln)
        words = _WORDS.findall(para)
        # prose: enough words, and words make up most of the characters
        if len(words) >= min_words and sum(map(len, words)) > 0.6 * len(para):
            out.append(para)
    return out


def _docstrings(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                docs.append(doc)
    return docs


def python_docs_paragraphs(max_files: int | None = None) -> list[str]:
    """Paragraphs of English prose from the running Python's documentation and standard library."""
    paragraphs: list[str] = []
    try:
        from pydoc_data.topics import topics

        for name in sorted(topics):
            paragraphs.extend(_paragraphs(topics[name]))
    except ImportError:  # some distributions split pydoc_data out
        pass
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py") if not {"test", "tests", "idle_test", "site-packages"}
                   & set(p.relative_to(stdlib).parts))
    for path in files[:max_files]:
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for doc in _docstrings(source):
            paragraphs.extend(_paragraphs(doc))
    return paragraphs
