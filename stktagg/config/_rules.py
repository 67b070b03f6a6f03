"""The building blocks of the configuration's grammar rules.

A rule is a pure function over the tokens of one logical line:
``rule(line, pos) -> (pos, node)`` for a line keyword (:data:`LineRule`),
``rule(line, pos, keyword) -> (pos, value)`` for an option
(:data:`OptionRule`). This module holds what rules of both sections share:
taking the next word with a precise message when it is missing, the end of
a line, a fixed keyword, addresses, choices, counts, times, and options in
any order. Every failure
goes through :func:`~stktagg.config._model.config_error`.

Imports ``_model`` and ``_lexer``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._lexer import Line, Token
from ._model import DIGITS, TIME_UNITS, Address, config_error, format_time

#: The words that start a section; a section's lines run up to the next one.
SECTION_KEYWORDS = frozenset({"global", "aggregations"})

LineRule = Callable[[Line, int], tuple[int, Any]]


def take(line: Line, pos: int, owner: Token, what: str) -> tuple[int, Token]:
    """Return the token at *pos*, or fail with "'<owner>' needs <what>"."""
    if pos >= len(line):
        raise config_error(owner.at, f"'{owner.text}' needs {what}")
    return pos + 1, line[pos]


def take_value(line: Line, pos: int, owner: Token, what: str) -> tuple[int, Token]:
    """Like :func:`take`, but the word must not be empty."""
    pos, token = take(line, pos, owner, what)
    if not token.text:
        raise config_error(token.at, f"'{owner.text}' needs {what}, not an empty word")
    return pos, token


def take_name(line: Line, pos: int, owner: Token, noun: str) -> tuple[int, Token]:
    """Like :func:`take_value`, and the word must hold no whitespace."""
    article = "an" if noun[0] in "aeiou" else "a"
    pos, token = take_value(line, pos, owner, f"{article} {noun}")
    if any(char.isspace() for char in token.text):
        raise config_error(token.at, f"invalid {noun} '{token.text}': "
                                     "whitespace is not allowed")
    return pos, token


def expect_end(line: Line, pos: int) -> None:
    """Fail on the first token after *pos*, if any."""
    if pos < len(line):
        raise config_error(line[pos].at, f"unexpected extra argument '{line[pos].text}' "
                                         f"to '{line[0].text}'")


def take_keyword(line: Line, pos: int, owner: Token, word: str, what: str) -> tuple[int, Token]:
    """The fixed word *word* at *pos* (``to`` in ``from .a to .b``); *what* is what follows it.

    Fails with "'<owner>' needs '<word>' and <what>" at *owner* when the line
    ends, with "expected '<word>', found '<text>'" at the word found otherwise.
    """
    pos, token = take(line, pos, owner, f"'{word}' and {what}")
    if token.text != word:
        raise config_error(token.at, f"expected '{word}', found '{token.text}'")
    return pos, token


def one_of(words: Iterable[str]) -> str:
    """Render choices for a message: "a, b, c"."""
    return ", ".join(words)


def parse_address(token: Token, *, default_port: int | None = None,
                  allow_zero_port: bool = False) -> Address:
    """Parse *token* as an :class:`Address`, failing at the token."""
    try:
        return Address.parse(token.text, default_port=default_port,
                             allow_zero_port=allow_zero_port)
    except ValueError as exc:
        raise config_error(token.at, str(exc)) from None


def parse_choice(token: Token, choices: Iterable[str], what: str) -> str:
    """Return the token's text if it is one of *choices*."""
    choices = tuple(choices)
    if token.text not in choices:
        raise config_error(token.at, f"invalid {what} '{token.text}' "
                                     f"(expected {one_of(choices)})")
    return token.text


@dataclass(frozen=True, slots=True)
class Option:
    """An option found on a line: its value and its keyword token."""

    value: Any
    keyword: Token


OptionRule = Callable[[Line, int, Token], tuple[int, Any]]


def parse_options(line: Line, pos: int, rules: Mapping[str, OptionRule],
                  what: str) -> tuple[int, dict[str, Option]]:
    """Parse ``keyword [value]`` options in any order, each at most once."""
    found: dict[str, Option] = {}
    while pos < len(line):
        keyword = line[pos]
        rule = rules.get(keyword.text)
        if rule is None:
            raise config_error(keyword.at, f"unknown {what} '{keyword.text}' "
                                           f"(expected {one_of(rules)})")
        if keyword.text in found:
            raise config_error(keyword.at, f"duplicate {what} '{keyword.text}'")
        pos, value = rule(line, pos + 1, keyword)
        found[keyword.text] = Option(value, keyword)
    return pos, found


def option_flag(line: Line, pos: int, keyword: Token) -> tuple[int, bool]:
    """An option without a value."""
    return pos, True


def option_path(line: Line, pos: int, keyword: Token) -> tuple[int, Token]:
    """An option taking a non-empty path (returned as its token, for its position)."""
    return take_value(line, pos, keyword, "a path")


def option_name(line: Line, pos: int, keyword: Token) -> tuple[int, str]:
    """An option taking a name (a user or a group: no whitespace)."""
    pos, token = take_name(line, pos, keyword, "name")
    return pos, token.text


def option_value(options: Mapping[str, Option], key: str, default: Any = None) -> Any:
    """The value of option *key*, or *default* when the line does not have it."""
    option = options.get(key)
    return default if option is None else option.value


def parse_count(line: Line, pos: int) -> tuple[int, int]:
    """``max-entries <n>``, ``max-tables <n>``, ``dynamic-peers <n>``: a whole number from 1."""
    pos, token = take_value(line, pos, line[0], "a number")
    if not token.text.isdigit() or int(token.text) < 1 or not token.text.isascii():
        raise config_error(token.at, f"'{line[0].text}' expects a whole number of at least 1, not '{token.text}'")
    return pos, int(token.text)


def number_in_range(token: Token, owner: Token, low: int, high: int) -> int:
    """The token as a whole number from *low* to *high* (``shards <n>``, ``shard <i>``)."""
    text = token.text
    if not (text.isascii() and text.isdigit() and len(text) <= 20 and low <= int(text) <= high):
        raise config_error(token.at, f"'{owner.text}' expects a whole number from {low} to {high}, "
                                     f"not '{text}'")
    return int(text)


#: How a time is written, for messages.
TIME_HINT = "a whole number and an optional unit ms, s, m, h or d (none: ms), like 90s or 1h"


def parse_time(token: Token, owner: Token, low: int, high: int) -> int:
    """The token as a time in HAProxy's syntax, in ms, from *low* to *high* ms.

    Digits then an optional unit (:data:`~stktagg.config._model.TIME_UNITS`: ``ms``,
    ``s``, ``m``, ``h``, ``d``); a bare number is ms, as in HAProxy (``window 1h``,
    ``offset 90s``, ``timeout 1500``).
    """
    text = token.text
    digits = text.rstrip("".join(TIME_UNITS))
    unit = text[len(digits):]
    if not digits or not set(digits) <= DIGITS or (unit and unit not in TIME_UNITS):
        raise config_error(token.at, f"invalid time '{text}' for '{owner.text}' (expected {TIME_HINT})")
    significant = digits.lstrip("0")
    ms = int(significant or "0") * TIME_UNITS[unit or "ms"] if len(significant) <= 20 else high + 1
    if not low <= ms <= high:
        raise config_error(token.at, f"'{owner.text}' expects a time from {format_time(low)} to "
                                     f"{format_time(high)}, not '{text}'")
    return ms
