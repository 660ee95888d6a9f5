"""The lark parser for target conditions, and the translation of its errors.

The LALR parser is built once at import from ``grammar.lark``. Every lark exception is
turned into a :class:`~outpost.errors.QueryError` with a 1-based line and column and a
sentence in plain words, because users read these errors in deployment reports, not in a
debugger.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Final, Literal

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.parsers.lalr_parser_state import ParserState

from outpost.errors import QueryError

__all__ = ["Start", "error_at", "parse"]

Start = Literal["start_target"]

_PARSER: Final = Lark.open(
    "grammar.lark",
    rel_to=__file__,
    parser="lalr",
    start=["start_target"],
    maybe_placeholders=False,
)

_KEYWORDS: Final = frozenset(
    {"SELECT", "FROM", "WHERE", "INTO", "AND", "OR", "NOT", "IN", "NIN", "TRUE", "FALSE", "NULL", "UNDEFINED"}
)
_OPERAND_START: Final = frozenset(
    {"NAME", "NUMBER", "STRING", "TRUE", "FALSE", "NULL", "UNDEFINED", "LPAR", "MINUS", "PLUS", "NOT"}
)
_OPERATORS: Final = frozenset({"CMP_OP", "PLUS", "MINUS", "STAR", "SLASH", "PERCENT", "IN", "NIN"})
_BINARY_ONLY: Final = frozenset({"CMP_OP", "SLASH", "PERCENT", "IN", "NIN"})
_PUNCTUATION: Final = {"RPAR": "')'", "RSQB": "']'", "COMMA": "','", "LPAR": "'('", "LSQB": "'['"}
_COMPLETE_STRING: Final = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""", re.S)
_PREVIOUS: Final = re.compile(r"(<=|>=|<>|!=|[=<>+\-*/%(,\[]|[\w$]+)\s*\Z")


def position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset (a tab counts as one column)."""
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def error_at(text: str, offset: int, message: str) -> QueryError:
    """A QueryError pointing at ``offset`` of ``text``."""
    line, column = position(text, offset)
    return QueryError(message, text=text, line=line, column=column)


def parse(text: str, start: Start) -> Tree[Token]:
    """Parse ``text`` from the given start rule; raise QueryError on any failure."""
    if not isinstance(text, str):
        raise QueryError(f"expected text, got {type(text).__name__}", text=str(text))
    try:
        return _PARSER.parse(text, start=start)
    except UnexpectedInput as exc:
        raise _translate(text, exc) from exc
    except Exception as exc:  # lark's own bugs or recursion limits must not leak
        raise QueryError(f"could not parse: {exc}", text=text) from exc


def _translate(text: str, exc: UnexpectedInput) -> QueryError:
    if isinstance(exc, UnexpectedCharacters):
        return _bad_character(text, exc.pos_in_stream or 0, exc.allowed)
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        expected = _accepted(exc.state, exc.expected)
        if token.type == "$END":
            return _unexpected(text, len(text), expected, "the end of the text")
        return _unexpected(text, token.start_pos or 0, expected, _describe(token))
    if isinstance(exc, UnexpectedEOF):
        return _unexpected(text, len(text), exc.expected, "the end of the text")
    return error_at(text, exc.pos_in_stream or 0, "syntax error")


def _accepted(state: object, fallback: Collection[str]) -> set[str]:
    """Terminals the parser really accepts here.

    LALR merges look-aheads, so lark's "expected" set can list tokens that would fail a
    step later; trying each candidate on a copy of the parser state removes them.
    """
    if not isinstance(state, ParserState):
        return set(fallback)
    accepted: set[str] = set()
    for name in state.parse_conf.parse_table.states[state.position]:
        trial = state.copy(deepcopy_values=False)
        try:
            trial.feed_token(Token(name, ""), is_end=name == "$END")
        except Exception:
            continue
        accepted.add(name)
    return accepted or set(fallback)


def _bad_character(text: str, offset: int, allowed: Collection[str] | None) -> QueryError:
    char = text[offset] if offset < len(text) else ""
    if char in {"'", '"'} and _COMPLETE_STRING.match(text, offset) is None:
        return error_at(text, offset, "unterminated string literal: no closing " + ("'" if char == "'" else '"'))
    shown = repr(char) if char.isprintable() and char else f"U+{ord(char):04X}" if char else "end of text"
    expected = _expected_words(set(allowed or ()))
    tail = f"; expected {expected}" if expected else ""
    return error_at(text, offset, f"unexpected character {shown}{tail}")


def _unexpected(text: str, offset: int, expected: Collection[str], found: str) -> QueryError:
    names = set(expected)
    words = _expected_words(names)
    context = ""
    if "WHERE" in names and "INTO" in names:
        context = " after the source"
    elif "SOURCE" in names:
        context = " after FROM"
    elif names & {"NUMBER", "STRING"}:
        previous = _PREVIOUS.search(text, max(0, offset - 200), offset)
        if previous is not None:
            word = previous.group(1)
            context = f" after {word.upper()}" if word.upper() in _KEYWORDS else f" after '{word}'"
    return error_at(text, offset, f"expected {words}{context}, found {found}")


def _expected_words(expected: set[str]) -> str:
    names = set(expected)
    words: list[str] = []
    if "SOURCE" in names:
        words.append("a source such as /messages/*")
    if "NUMBER" in names:
        words.append("an expression")
        names -= _OPERAND_START
    elif "STRING" in names:
        words.append("a quoted string")
        names.discard("STRING")
    if names & _BINARY_ONLY:
        words.append("an operator")
        names -= _OPERATORS | {"NOT", "LPAR", "SEGMENT", "INDEX"}
    for keyword in ("SELECT", "FROM", "WHERE", "AND", "OR", "INTO"):
        if keyword in names:
            words.append(keyword)
    if "NAME" in names:
        words.append("$upstream or BrokeredEndpoint(...)" if "INTO" not in names else "a name")
    if "STAR" in names:
        words.append("'*'")
    words.extend(_PUNCTUATION[name] for name in sorted(names) if name in _PUNCTUATION)
    if "$END" in names:
        words.append("the end of the text")
    if not words:
        return ""
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _describe(token: Token) -> str:
    if token.type in _KEYWORDS:
        return str(token.value).upper()
    value = str(token.value)
    return repr(value if len(value) <= 40 else value[:37] + "...")
