"""A Griffe extension for the API reference: docstring examples outside an ``Examples:`` section
render as code.

edgeship's docstrings put their doctests under ``Example:`` or straight in a module's text, where
Griffe's Google parser leaves them as Markdown prose; there ``result["passed"]`` reads as a
reference link and the strict build fails on it. This fences each such run of ``>>>`` lines (and
their expected output) as a ``pycon`` block and drops the ``# doctest:`` flags, as Griffe does in
``Examples:`` sections. The modules themselves are not changed.
"""

from __future__ import annotations

import re

import griffe

_EXAMPLES = re.compile(r"^(\s*)Examples:\s*$")
_FLAGS = re.compile(r"\s*#\s*doctest:.*$")


def fence_doctests(text: str) -> str:
    """The docstring with every doctest run outside an ``Examples:`` section fenced as ``pycon``.

    ``tests/test_docs_site.py`` shows it on an example docstring.
    """
    out: list[str] = []
    examples_indent: int | None = None  # inside Griffe's own Examples: section, which parses >>>
    fenced = False  # inside a fence the docstring wrote itself
    block_indent: str | None = None
    for line in text.split("\n"):
        indent = line[: len(line) - len(line.lstrip())]
        if block_indent is not None and (not line.strip() or not line.startswith(block_indent)):
            out.append(f"{block_indent}```")
            block_indent = None
        if line.strip() and examples_indent is not None and len(indent) <= examples_indent:
            examples_indent = None
        if match := _EXAMPLES.match(line):
            examples_indent = len(match.group(1))
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if block_indent is None and not fenced and examples_indent is None and line.lstrip().startswith(">>>"):
            block_indent = indent
            out.append(f"{indent}```pycon")
        out.append(_FLAGS.sub("", line) if block_indent is not None else line)
    if block_indent is not None:
        out.append(f"{block_indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fences the doctests of every docstring Griffe loads (see the module's docstring)."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
