"""The configuration's lexer: text to logical lines of tokens.

:func:`tokenize` joins continued lines, splits each logical line into words
(:class:`Token`, with the position of its first character), resolves quotes
and escapes, and drops comments and blank lines. Knows no keywords: the
grammar is ``_parser``'s. Imports only ``_model`` (for :class:`Position` and
:func:`config_error`).
"""

# Lexical rules (HAProxy style)
# -----------------------------
# - A physical line whose very last character is a backslash continues on the
#   next physical line; the backslash is removed and nothing is inserted. This
#   happens before anything else (as in HAProxy and C), so a comment ending in
#   a backslash swallows the next line too. A trailing "\r" (CRLF files) is
#   dropped first.
# - A logical line is split into words on spaces and tabs.
# - "#" starts a comment that runs to the end of the logical line, even in the
#   middle of a word, unless it is quoted or escaped ("\#").
# - "..." and '...' group a word (the quotes are removed; quoted and unquoted
#   parts next to each other form one word). Outside single quotes, "\" makes
#   the next character literal. A lone "\" at the very end stays literal.
# - Every token keeps the physical line and column (a tab is one column) of
#   its first character, so errors on continued lines point at the right place.
# - Keywords are case-sensitive.

from __future__ import annotations

from dataclasses import dataclass

from ._model import Position, config_error

BLANKS = frozenset(" \t")
WORD_ENDS = BLANKS | frozenset("#")
QUOTES = frozenset("\"'")


@dataclass(frozen=True, slots=True)
class Token:
    """A word of a logical line (quotes and escapes resolved) and where it starts."""

    text: str
    at: Position


Line = tuple[Token, ...]
Cell = tuple[str, int, int]  # one character with its physical line and column


def tokenize(text: str, path: str = "<string>") -> tuple[Line, ...]:
    """Split *text* into logical lines of tokens; blank and comment lines are dropped."""
    lines = (lex_line(cells, path) for cells in join_continuations(text))
    return tuple(line for line in lines if line)


def join_continuations(text: str) -> list[list[Cell]]:
    """Join physical lines ending with a backslash; keep each character's place."""
    logical: list[list[Cell]] = []
    current: list[Cell] = []
    for lineno, raw in enumerate(text.split("\n"), 1):
        raw = raw.removesuffix("\r")
        continued = raw.endswith("\\")
        if continued:
            raw = raw[:-1]
        current.extend((ch, lineno, colno) for colno, ch in enumerate(raw, 1))
        if not continued:
            logical.append(current)
            current = []
    if current:
        logical.append(current)
    return logical


def lex_line(cells: list[Cell], path: str) -> Line:
    """Split one logical line into tokens, stopping at a comment."""
    tokens: list[Token] = []
    pos = skip_blanks(cells, 0)
    while pos < len(cells) and cells[pos][0] != "#":
        pos, token = lex_word(cells, pos, path)
        tokens.append(token)
        pos = skip_blanks(cells, pos)
    return tuple(tokens)


def skip_blanks(cells: list[Cell], pos: int) -> int:
    """Return the position of the next non-blank character."""
    while pos < len(cells) and cells[pos][0] in BLANKS:
        pos += 1
    return pos


def lex_word(cells: list[Cell], pos: int, path: str) -> tuple[int, Token]:
    """Read one word: plain, quoted and escaped pieces until a blank or "#"."""
    _, lineno, colno = cells[pos]
    pieces: list[str] = []
    while pos < len(cells) and cells[pos][0] not in WORD_ENDS:
        char = cells[pos][0]
        if char in QUOTES:
            pos, piece = lex_quoted(cells, pos, path)
        elif char == "\\":
            pos, piece = lex_escape(cells, pos)
        else:
            pos, piece = pos + 1, char
        pieces.append(piece)
    return pos, Token("".join(pieces), Position(path, lineno, colno))


def lex_quoted(cells: list[Cell], pos: int, path: str) -> tuple[int, str]:
    """Read a quoted piece starting at the quote at *pos*; return it unquoted."""
    quote, lineno, colno = cells[pos]
    pieces: list[str] = []
    pos += 1
    while pos < len(cells) and cells[pos][0] != quote:
        if cells[pos][0] == "\\" and quote == '"':
            pos, piece = lex_escape(cells, pos)
        else:
            pos, piece = pos + 1, cells[pos][0]
        pieces.append(piece)
    if pos >= len(cells):
        kind = "double" if quote == '"' else "single"
        raise config_error(Position(path, lineno, colno), f"unterminated {kind} quote")
    return pos + 1, "".join(pieces)


def lex_escape(cells: list[Cell], pos: int) -> tuple[int, str]:
    """Read a backslash and the character it makes literal."""
    if pos + 1 < len(cells):
        return pos + 2, cells[pos + 1][0]
    return pos + 1, "\\"

