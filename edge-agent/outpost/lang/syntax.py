"""edgeHub's grammar for routes and route conditions (``Route.g4``, ``Condition.g4``).

A hand-written precedence parser over :mod:`outpost.lang.lexer` tokens. Precedence is
edgeHub's, not SQL's: ``-`` and ``NOT`` bind tightest (``NOT a = b`` is ``(NOT a) = b``),
then ``* / %``, ``+ - ||``, ``< <= > >=``, ``= != <>``, ``AND``, ``OR`` and ``??``; all
left-associative. Like edgeHub (whose start rules do not end in EOF), text after a
complete condition or route is ignored; Outpost notes it so users see it.

``IN [...]``, ``NIN [...]`` and ``NOT IN [...]`` are an Outpost extension, parsed only
when the text fails edgeHub's grammar (see ``parse_condition``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from outpost.errors import QueryError
from outpost.lang.lexer import Token, tokenize
from outpost.lang.parser import error_at

__all__ = [
    "Binary",
    "Call",
    "ConditionSyntax",
    "Expr",
    "Literal",
    "Property",
    "RouteSyntax",
    "SystemProperty",
    "Unary",
    "parse_condition",
    "parse_route_syntax",
]

MAX_DEPTH: Final = 40
"""Deepest nesting accepted; generated Python must stay within the interpreter's limits."""


@dataclass(frozen=True, slots=True)
class Literal:
    """A literal: ``kind`` is its edgeHub type (D number, S string, B Boolean, N null, U undefined)."""

    kind: str
    value: object
    token: Token


@dataclass(frozen=True, slots=True)
class Property:
    """A bare name: an application property."""

    name: str
    token: Token


@dataclass(frozen=True, slots=True)
class SystemProperty:
    """``$name`` (application property ``$name``, else system property ``name``, or a ``$body.`` query).

    ``escaped`` is ``{$name}``: the system property or body query, never an application property.
    """

    name: str
    token: Token
    escaped: bool = False


@dataclass(frozen=True, slots=True)
class Call:
    """A built-in function call (name as written)."""

    name: str
    args: tuple[Expr, ...]
    token: Token


@dataclass(frozen=True, slots=True)
class Unary:
    """``-x`` or ``NOT x``."""

    op: str
    operand: Expr
    token: Token


@dataclass(frozen=True, slots=True)
class Binary:
    """A binary operator: ``* / % + - || < <= > >= = != AND OR ??`` (``<>`` is ``!=``)."""

    op: str
    left: Expr
    right: Expr
    token: Token


Expr = Literal | Property | SystemProperty | Call | Unary | Binary

_BINARY: Final = {
    "STAR": (70, "*"),
    "SLASH": (70, "/"),
    "PERCENT": (70, "%"),
    "PLUS": (60, "+"),
    "MINUS": (60, "-"),
    "CONCAT": (60, "||"),
    "LT": (50, "<"),
    "LE": (50, "<="),
    "GT": (50, ">"),
    "GE": (50, ">="),
    "EQ": (40, "="),
    "NE": (40, "!="),
    "AND": (30, "AND"),
    "OR": (20, "OR"),
    "COALESCE": (10, "??"),
}
_PREFIX_BP: Final = 80
_LIST_BP: Final = 40
_LITERALS: Final = frozenset({"INTEGER", "REAL", "HEX", "STRING", "TRUE", "FALSE", "NULL", "UNDEFINED"})
_WORDS: Final = frozenset({"SELECT", "FROM", "WHERE", "INTO", "AND", "OR", "NOT", "TRUE", "FALSE", "NULL", "UNDEFINED"})


def describe(token: Token) -> str:
    """A token as users see it in an error message."""
    if token.kind == "EOF":
        return "the end of the text"
    if token.kind in _WORDS:
        return token.text.upper() if token.kind not in ("TRUE", "FALSE", "NULL", "UNDEFINED") else token.text
    text = token.text
    return repr(text if len(text) <= 40 else text[:37] + "...")


class _Parser:
    def __init__(self, text: str, tokens: list[Token], *, lists: bool) -> None:
        self.text = text
        self.tokens = tokens
        self.index = 0
        self.lists = lists
        self.used_lists = False
        self.parens = 0
        self.depth = 0

    # tokens ---------------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.peek()
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def fail(self, token: Token, message: str) -> QueryError:
        return error_at(self.text, token.start, message)

    def expect(self, kind: str, what: str, after: str) -> Token:
        token = self.peek()
        if token.kind != kind:
            raise self.fail(token, f"expected {what} after {after}, found {describe(token)}")
        return self.take()

    # expressions ----------------------------------------------------------------------

    def expression(self, min_bp: int = 0) -> Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(self.peek(), f"expression nests more than {MAX_DEPTH} levels deep")
        left = self.prefix()
        while True:
            token = self.peek()
            if self.lists and self._list_operator(token) and min_bp < _LIST_BP:
                left = self.membership(left)
                continue
            info = _BINARY.get(token.kind)
            if info is None or info[0] <= min_bp:
                break
            self.take()
            right = self.operand(info[0], token)
            left = Binary(info[1], left, right, token)
        self.depth -= 1
        return left

    def operand(self, bp: int, operator: Token) -> Expr:
        if self.peek().kind in ("EOF", "RPAREN", "COMMA", "INTO", "RBRACK"):
            found = self.peek()
            raise self.fail(found, f"expected an expression after {describe(operator)}, found {describe(found)}")
        return self.expression(bp)

    def prefix(self) -> Expr:
        token = self.take()
        kind = token.kind
        if kind in _LITERALS:
            return _literal(token)
        if kind == "LPAREN":
            self.parens += 1
            if self.peek().kind == "RPAREN":
                raise self.fail(self.peek(), "expected an expression after '(', found ')'")
            inner = self.expression(0)
            closing = self.peek()
            if closing.kind != "RPAREN":
                raise self.fail(
                    closing, f"missing closing ')' for the '(' at column {token.start + 1}; found {describe(closing)}"
                )
            self.take()
            self.parens -= 1
            self._no_extra_paren()
            return inner
        if kind == "SYS_PROP":
            return SystemProperty(token.text, token)
        if kind == "ID":
            if self.peek().kind == "LPAREN":
                return self.call(token)
            return Property(token.text, token)
        if kind == "LBRACE":
            name = self.expect("SYS_PROP", "a $name", "'{'")
            self.expect("RBRACE", "'}'", describe(name))
            return SystemProperty(name.text, name, escaped=True)
        if kind in ("MINUS", "NOT"):
            operand = self.operand(_PREFIX_BP, token)
            return Unary("-" if kind == "MINUS" else "NOT", operand, token)
        if kind == "UNTERMINATED_STRING":
            quote = token.text[0]
            raise self.fail(token, f"unterminated string literal: no closing {quote}")
        if kind == "UNKNOWN":
            raise self.fail(token, f"invalid symbol {token.text!r}")
        if kind == "QUERY_PATH" or (kind == "SYS_PROP" and "[" in token.text):
            raise self.fail(token, f"{token.text!r} is not a name: only a $body path may hold '[' or ']'")
        raise self.fail(token, f"expected an expression, found {describe(token)}")

    def call(self, name: Token) -> Expr:
        opening = self.take()
        self.parens += 1
        args: list[Expr] = []
        if self.peek().kind != "RPAREN":
            args.append(self.expression(0))
            while self.peek().kind == "COMMA":
                comma = self.take()
                args.append(self.operand(0, comma))
        closing = self.peek()
        if closing.kind != "RPAREN":
            raise self.fail(
                closing,
                f"expected ',' or ')' in the call of {name.text} (opened at column {opening.start + 1}),"
                f" found {describe(closing)}",
            )
        self.take()
        self.parens -= 1
        self._no_extra_paren()
        return Call(name.text, tuple(args), name)

    def _no_extra_paren(self) -> None:
        extra = self.peek()
        if extra.kind == "RPAREN" and self.parens == 0:
            raise self.fail(extra, "unmatched closing ')'")

    # Outpost's IN lists ---------------------------------------------------------------

    def _list_operator_word(self, token: Token) -> bool:
        if token.kind == "ID" and token.text.lower() in ("in", "nin"):
            return True
        return token.kind == "NOT" and self.peek(1).kind == "ID" and self.peek(1).text.lower() == "in"

    def _list_operator(self, token: Token) -> bool:
        word = token.text.lower()
        if token.kind == "ID" and word in ("in", "nin"):
            return self.peek(1).kind == "LBRACK"
        return token.kind == "NOT" and self.peek(1).kind == "ID" and self.peek(1).text.lower() == "in"

    def membership(self, operand: Expr) -> Expr:
        first = self.take()
        negated = first.kind == "NOT" or first.text.lower() == "nin"
        if first.kind == "NOT":
            self.take()
        opening = self.expect("LBRACK", "'['", describe(first))
        items: list[Expr] = []
        if self.peek().kind != "RBRACK":
            items.append(self.expression(_LIST_BP))
            while self.peek().kind == "COMMA":
                self.take()
                items.append(self.expression(_LIST_BP))
        closing = self.peek()
        if closing.kind != "RBRACK":
            raise self.fail(closing, f"expected ',' or ']' in the list opened at column {opening.start + 1}")
        self.take()
        self.used_lists = True
        # x IN [a, b] means x = a OR x = b, with edgeHub's typing of each '='.
        result: Expr = Literal("B", False, first)
        for position, item in enumerate(items):
            test = Binary("=", operand, item, first)
            result = test if position == 0 else Binary("OR", result, test, first)
        return Unary("NOT", result, first) if negated else result


def _literal(token: Token) -> Literal:
    kind, text = token.kind, token.text
    if kind == "STRING":
        return Literal("S", _unescape(text[1:-1]), token)
    if kind in ("TRUE", "FALSE"):
        return Literal("B", kind == "TRUE", token)
    if kind == "NULL":
        return Literal("N", None, token)
    if kind == "UNDEFINED":
        return Literal("U", None, token)
    if kind == "HEX":  # C# long.TryParse(hex): 16 digits at most, two's complement
        value = int(text[2:], 16)
        if value >= 1 << 64:
            return Literal("U", None, token)
        return Literal("D", float(value - (1 << 64) if value >= 1 << 63 else value), token)
    try:  # C# double.TryParse: overflow gives infinity, "e5" (a REAL token) does not parse
        return Literal("D", float(text), token)
    except ValueError:
        return Literal("U", None, token)


def _unescape(body: str) -> str:
    """edgeHub's unescaping: ``\\uXXXX`` first, then ``\\'``, ``\\"`` and ``\\\\``."""
    if "\\" not in body:
        return body
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\" and body[index + 1 : index + 2] in ("u", "U") and _is_hex(body[index + 2 : index + 6]):
            out.append(chr(int(body[index + 2 : index + 6], 16)))
            index += 6
        else:
            out.append(char)
            index += 1
    text = "".join(out)
    result: list[str] = []
    index = 0
    while index < len(text):
        if text[index] == "\\" and text[index + 1 : index + 2] in ("'", '"', "\\"):
            result.append(text[index + 1])
            index += 2
        else:
            result.append(text[index])
            index += 1
    return "".join(result)


def _is_hex(text: str) -> bool:
    return len(text) == 4 and all(c in "0123456789abcdefABCDEF" for c in text)


@dataclass(frozen=True, slots=True)
class ConditionSyntax:
    """A parsed condition: ``expr`` is None for an empty one; ``ignored`` is text edgeHub skips."""

    expr: Expr | None
    ignored: Token | None
    lists: bool


def parse_condition(text: str) -> ConditionSyntax:
    """Parse a condition as edgeHub does; raise QueryError with a position.

    If edgeHub's grammar refuses the text and it uses ``IN``/``NIN``, it is parsed again
    with Outpost's list extension; ``lists`` says so (a named deviation).
    """
    if not isinstance(text, str):
        raise QueryError(f"expected text, got {type(text).__name__}", text=str(text))
    try:
        return _condition(text, lists=False)
    except QueryError:
        if not _mentions_in(text):
            raise
        try:
            return _condition(text, lists=True)
        except QueryError:
            pass
        raise


def _condition(text: str, *, lists: bool) -> ConditionSyntax:
    parser = _Parser(text, tokenize(text, brackets=lists), lists=lists)
    if parser.peek().kind == "EOF":
        return ConditionSyntax(None, None, lists=False)
    expr = parser.expression(0)
    trailing = parser.peek()
    if trailing.kind == "RPAREN":
        raise parser.fail(trailing, "unmatched closing ')'")
    if trailing.kind in ("UNKNOWN", "UNTERMINATED_STRING", "QUERY_PATH"):
        parser.prefix()  # raises the error that token deserves
    if not lists and parser._list_operator_word(trailing):  # let the IN-list extension try
        raise parser.fail(trailing, f"unexpected {describe(trailing)}")
    if lists and not parser.used_lists:
        raise parser.fail(trailing, "no list")
    return ConditionSyntax(expr, trailing if trailing.kind != "EOF" else None, parser.used_lists)


def _mentions_in(text: str) -> bool:
    return any(token.kind == "ID" and token.text.lower() in ("in", "nin") for token in tokenize(text))


@dataclass(frozen=True, slots=True)
class RouteSyntax:
    """The parts of a route as edgeHub's RouteFactory sees them."""

    source: str
    source_token: Token
    condition: ConditionSyntax | None
    condition_text: str | None
    condition_start: int
    sink: Token
    address: Token | None
    ignored: Token | None


def parse_route_syntax(text: str) -> RouteSyntax:
    """Parse ``[SELECT *] FROM <source> [WHERE <condition>] INTO <sink>``; raise QueryError."""
    if not isinstance(text, str):
        raise QueryError(f"expected text, got {type(text).__name__}", text=str(text))
    try:
        return _route(text, lists=False)
    except QueryError:
        if not _mentions_in(text):
            raise
        try:
            return _route(text, lists=True)
        except QueryError:
            pass
        raise


def _route(text: str, *, lists: bool) -> RouteSyntax:
    parser = _Parser(text, tokenize(text, brackets=lists), lists=lists)
    first = parser.peek()
    if first.kind == "SELECT":
        parser.take()
        parser.expect("STAR", "'*'", "SELECT")
    elif first.kind != "FROM":
        raise parser.fail(first, f"expected SELECT or FROM, found {describe(first)}")
    parser.expect("FROM", "FROM", "SELECT *")
    source_token, source = _source(parser)
    condition, condition_text, condition_start = None, None, 0
    token = parser.peek()
    if token.kind == "WHERE":
        parser.take()
        start = parser.peek()
        if start.kind in ("INTO", "EOF"):
            raise parser.fail(start, f"expected an expression after WHERE, found {describe(start)}")
        expr = parser.expression(0)
        end = parser.tokens[parser.index - 1]
        condition_text, condition_start = text[start.start : end.end], start.start
        condition = ConditionSyntax(expr, None, parser.used_lists)
        into = parser.peek()
        if into.kind != "INTO":
            raise parser.fail(into, f"expected an operator, AND, OR or INTO, found {describe(into)}")
    elif token.kind != "INTO":
        raise parser.fail(token, f"expected WHERE or INTO after the source, found {describe(token)}")
    if lists and not parser.used_lists:
        raise parser.fail(token, "no list")
    parser.take()
    sink = parser.take()
    address = None
    if sink.kind == "ID":
        parser.expect("LPAREN", "'('", describe(sink))
        address = parser.peek()
        if address.kind == "UNTERMINATED_STRING":
            raise parser.fail(address, f"unterminated string literal: no closing {address.text[0]}")
        parser.expect("STRING", "a quoted string", "'('")
        parser.expect("RPAREN", "')'", "the address")
    elif sink.kind != "SYS_PROP":
        raise parser.fail(sink, f'expected $upstream or BrokeredEndpoint("..."), found {describe(sink)}')
    trailing = parser.peek()
    return RouteSyntax(
        source, source_token, condition, condition_text, condition_start, sink, address,
        trailing if trailing.kind != "EOF" else None,
    )  # fmt: skip


def _source(parser: _Parser) -> tuple[Token, str]:
    """``path: '/' item path | '/' item`` with ``item: '*' | ID``; the text is the tokens joined."""
    first = parser.peek()
    if first.kind != "SLASH":
        raise parser.fail(first, f"expected a source such as /messages/* after FROM, found {describe(first)}")
    parts: list[str] = []
    while parser.peek().kind == "SLASH":
        slash = parser.take()
        item = parser.peek()
        if item.kind not in ("STAR", "ID"):
            raise parser.fail(item, f"expected a source part after '/', found {describe(item)}")
        parser.take()
        parts.append(slash.text + item.text)
    return first, "".join(parts)
