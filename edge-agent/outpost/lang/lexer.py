"""edgeHub's lexer for routes and route conditions, rule for rule.

edgeHub tokenises with ANTLR (``GrammarLexer.g4`` in Azure/iotedge): at each position the
longest match wins and a tie goes to the rule listed first. That is why ``3+4`` is one
name (a name may hold ``+``), ``-x`` is a name but ``- x`` a negation, ``True`` is a
property while ``true`` is the Boolean, and ``$body.a[0]`` is one token. Outpost has to
cut text the same way to give the same answers, so the rules below are edgeHub's, in
edgeHub's order. Comments (``/* ... */``) and white space are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["Token", "tokenize"]

_NOT_ID: Final = r"()<>@,;:\\\"/\[\]?={} \t\n\r"
_NOT_PATH: Final = r"()<>@,;:\\\"/?={} \t\n\r"
_ESC: Final = r"\\(?:[\"'\\]|u[0-9a-fA-F]{4})"

# (kind, pattern) in edgeHub's rule order; '{' and '}' are the parser's implicit tokens,
# which ANTLR defines before every lexer rule.
_RULES: Final = tuple(
    (kind, re.compile(pattern, re.DOTALL))
    for kind, pattern in (
        ("LBRACE", r"\{"),
        ("RBRACE", r"\}"),
        ("SELECT", r"[sS][eE][lL][eE][cC][tT]"),
        ("FROM", r"[fF][rR][oO][mM]"),
        ("WHERE", r"[wW][hH][eE][rR][eE]"),
        ("INTO", r"[iI][nN][tT][oO]"),
        ("STRING", rf"\"(?:{_ESC}|[^\"\\])*\"|'(?:{_ESC}|[^'\\])*'"),
        ("UNTERMINATED_STRING", rf"\"(?:{_ESC}|[^\"\\])*|'(?:{_ESC}|[^'\\])*"),
        ("INTEGER", r"-?[0-9]+"),
        ("HEX", r"0[xX][0-9a-fA-F]+"),
        ("REAL", r"-?[0-9]*\.[0-9]+(?:[eE][+-]?[0-9]+)?|-?[0-9]*[eE][+-]?[0-9]+"),
        ("TRUE", r"true"),
        ("FALSE", r"false"),
        ("NULL", r"null"),
        ("UNDEFINED", r"undefined"),
        ("LPAREN", r"\("),
        ("RPAREN", r"\)"),
        ("COMMA", r","),
        ("PLUS", r"\+"),
        ("MINUS", r"-"),
        ("STAR", r"\*"),
        ("SLASH", r"/"),
        ("PERCENT", r"%"),
        ("AND", r"[aA][nN][dD]"),
        ("OR", r"[oO][rR]"),
        ("NOT", r"[nN][oO][tT]"),
        ("EQ", r"="),
        ("NE", r"!="),
        ("NE", r"<>"),
        ("LE", r"<="),
        ("GE", r">="),
        ("GT", r">"),
        ("LT", r"<"),
        ("CONCAT", r"\|\|"),
        ("COALESCE", r"\?\?"),
        ("SYS_PROP", rf"\$[^{_NOT_PATH}]+"),
        ("ID", rf"[^{_NOT_ID}]+"),
        ("QUERY_PATH", rf"[^{_NOT_PATH}]+"),
        ("WS", r"[ \t\r\n]+"),
        ("COMMENT", r"/\*.*?\*/"),
        ("UNKNOWN", r"."),
    )
)
_LIST_RULES: Final = tuple(
    ("SYS_PROP", re.compile(rf"\$(?:[^{_NOT_ID}]|\[[0-9]+\])+")) if kind == "SYS_PROP" else (kind, pattern)
    for kind, pattern in _RULES
    if kind != "QUERY_PATH"
)
_SKIPPED: Final = frozenset({"WS", "COMMENT"})


@dataclass(frozen=True, slots=True)
class Token:
    """One token: its rule, its text, and where it starts and ends in the source text."""

    kind: str
    text: str
    start: int
    end: int


def tokenize(text: str, *, brackets: bool = False) -> list[Token]:
    """Every token of ``text`` (white space and comments dropped), ending with an ``EOF`` token.

    ``brackets=True`` is for Outpost's ``IN [...]`` lists only: a ``[`` or ``]`` that starts
    a token is a bracket, and no name may hold one. It changes only texts edgeHub refuses.
    """
    tokens: list[Token] = []
    position, size = 0, len(text)
    rules, cache = (_LIST_RULES, _LIST_CANDIDATES) if brackets else (_RULES, _CANDIDATES)
    while position < size:
        if brackets and text[position] in "[]":
            kind = "LBRACK" if text[position] == "[" else "RBRACK"
            tokens.append(Token(kind, text[position], position, position + 1))
            position += 1
            continue
        best_kind, best_end = "UNKNOWN", position
        first = text[position]
        candidates = cache.get(first)
        if candidates is None:
            candidates = tuple(rule for rule in rules if _may_start(rule[0], first))
            if len(cache) < 4096:
                cache[first] = candidates
        for kind, pattern in candidates:  # longest match; the first rule wins a tie
            match = pattern.match(text, position)
            if match is not None and match.end() > best_end:
                best_kind, best_end = kind, match.end()
        if best_kind not in _SKIPPED:
            tokens.append(Token(best_kind, text[position:best_end], position, best_end))
        position = best_end
    tokens.append(Token("EOF", "", size, size))
    return tokens


# The characters each rule can start with, so that only those rules are tried.
_STARTS: Final = {
    "LBRACE": "{", "RBRACE": "}", "SELECT": "sS", "FROM": "fF", "WHERE": "wW", "INTO": "iI",
    "STRING": "\"'", "UNTERMINATED_STRING": "\"'", "INTEGER": "-0123456789", "HEX": "0",
    "REAL": "-0123456789.eE", "TRUE": "t", "FALSE": "f", "NULL": "n", "UNDEFINED": "u", "LPAREN": "(",
    "RPAREN": ")", "COMMA": ",", "PLUS": "+", "MINUS": "-", "STAR": "*", "SLASH": "/", "PERCENT": "%",
    "AND": "aA", "OR": "oO", "NOT": "nN", "EQ": "=", "NE": "!<", "LE": "<", "GE": ">", "GT": ">", "LT": "<",
    "CONCAT": "|", "COALESCE": "?", "SYS_PROP": "$", "WS": " \t\r\n", "COMMENT": "/",
}  # fmt: skip
_ANY_START: Final = {"ID": re.compile(rf"[^{_NOT_ID}]"), "QUERY_PATH": re.compile(rf"[^{_NOT_PATH}]")}
_CANDIDATES: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {}
_LIST_CANDIDATES: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {}


def _may_start(kind: str, first: str) -> bool:
    starts = _STARTS.get(kind)
    if starts is not None:
        return first in starts
    pattern = _ANY_START.get(kind)
    return pattern.match(first) is not None if pattern is not None else True
