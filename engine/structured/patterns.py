"""Regexes that ponder builds for constraints: escaped literals, choices, and the answer-span
constraint a search uses (free reasoning lines, then one final answer line in a fixed format).

The dialect is the common subset of Rust's regex crate (outlines-core), llguidance and
xgrammar: literals are escaped only where they are metacharacters, since Rust rejects some
escapes that Python's `re.escape` emits (an escaped space, for one). Pure string functions.
"""

from __future__ import annotations

_META = set("\\.+*?()|[]{}^$#&-~")


def escape(text: str) -> str:
    """`text` as a regex that matches it literally."""
    return "".join("\\" + ch if ch in _META else _char(ch) for ch in text)


def _char(ch: str) -> str:
    return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(ch, ch)


def choice_regex(choices: tuple[str, ...]) -> str:
    return "(" + "|".join(escape(c) for c in choices) + ")"


def line_not_starting_with(prefix: str, newline: str = "\n") -> str:
    """A regex for one line (without its newline) that does not start with `prefix`.

    A line either stops before the prefix is complete or leaves it at some character:
    for "A: " that is '' | [^A\\n].* | 'A' | 'A'[^:\\n].* | 'A:' | 'A:'[^ \\n].*"""
    if not prefix or newline in prefix:
        raise ValueError(f"the answer prefix must be non-empty and one line, got {prefix!r}")
    any_rest = f"[^{escape(newline)}]*"
    options = []
    for i, ch in enumerate(prefix):
        head = escape(prefix[:i])
        options.append(head)
        options.append(f"{head}[^{escape(ch)}{escape(newline)}]{any_rest}")
    return "(" + "|".join(options) + ")"


def answer_span_regex(prefix: str, answer: str, delimiter: str = "\n") -> str:
    """A whole completion: free lines that do not start with `prefix`, each ending with
    `delimiter`, then `prefix` followed by text matching `answer`, then the end.

    Reasoning steps stay free; the constraint bites once a line starts the answer prefix, and
    the completion can only end (EOS) right after a well-formed answer."""
    free = line_not_starting_with(prefix, delimiter)
    return f"({free}{escape(delimiter)})*{escape(prefix)}({answer})"
