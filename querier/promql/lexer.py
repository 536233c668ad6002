"""PromQL lexer: a state machine with Prometheus's token kinds, states and error texts.

Prometheus's lexer is context dependent (inside ``{}`` keywords are plain identifiers, inside
``[]`` only duration arithmetic is read, ``fill`` is a keyword only before ``(``), and its error
texts are part of the user-visible parse errors, so this follows its states closely. Tokens are
produced lazily, one per :meth:`Lexer.next`, so an error late in the text is only reported once
the parser gets there, as in Prometheus. Positions are character offsets into the query.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

EOF, ERROR, COMMENT = "EOF", "ERROR", "COMMENT"
IDENTIFIER, METRIC_IDENTIFIER = "IDENTIFIER", "METRIC_IDENTIFIER"
NUMBER, DURATION, STRING = "NUMBER", "DURATION", "STRING"
LEFT_PAREN, RIGHT_PAREN = "LEFT_PAREN", "RIGHT_PAREN"
LEFT_BRACE, RIGHT_BRACE = "LEFT_BRACE", "RIGHT_BRACE"
LEFT_BRACKET, RIGHT_BRACKET = "LEFT_BRACKET", "RIGHT_BRACKET"
COMMA, COLON, AT = "COMMA", "COLON", "AT"
EQL, EQL_REGEX, NEQ_REGEX = "EQL", "EQL_REGEX", "NEQ_REGEX"
# Operators: the token kind is the operator's text.
BINARY_OPS = frozenset(("+", "-", "*", "/", "%", "^", "==", "!=", "<", "<=", ">", ">=", "</", ">/",
                        "and", "or", "unless", "atan2"))
AGGREGATORS = frozenset(("avg", "bottomk", "count", "count_values", "group", "max", "min", "quantile",
                         "stddev", "stdvar", "sum", "topk", "limitk", "limit_ratio"))
KEYWORDS = frozenset(("bool", "by", "group_left", "group_right", "fill", "fill_left", "fill_right",
                      "ignoring", "offset", "smoothed", "anchored", "on", "without"))
PREPROCESSORS = frozenset(("start", "end", "step", "range", "max_of", "min_of"))
_WORDS = frozenset(("and", "or", "unless", "atan2")) | AGGREGATORS | KEYWORDS | PREPROCESSORS
_FILLS = frozenset(("fill", "fill_left", "fill_right"))
_DURATION_WORDS = frozenset(("step", "range", "max_of", "min_of"))
_SPACE = " \t\n\r"
_DIGITS = "0123456789"
_HEX = "0123456789abcdefABCDEF"
_ESCAPES = "abfnrtv\\"
# How each fixed token prints in "unexpected ..." errors (Prometheus's ItemTypeStr).
_FIXED_TEXT = {LEFT_PAREN: "(", RIGHT_PAREN: ")", LEFT_BRACE: "{", RIGHT_BRACE: "}",
               LEFT_BRACKET: "[", RIGHT_BRACKET: "]", COMMA: ",", EQL: "=", COLON: ":",
               EQL_REGEX: "=~", NEQ_REGEX: "!~", AT: "@"}


@dataclass(slots=True)
class Token:
    typ: str
    pos: int
    val: str

    @property
    def end(self) -> int:
        return self.pos + len(self.val)

    def desc(self) -> str:
        """The token as Prometheus names it in ``unexpected <desc>`` (Item.desc)."""
        t, v = self.typ, self.val
        if t == EOF:
            return "end of input"
        if t in ("and", "or", "unless", "atan2", AT, EQL_REGEX, NEQ_REGEX) or t in BINARY_OPS:
            return f"<op:{v}>"
        if t in AGGREGATORS:
            return f"<aggr:{v}>"
        if t in KEYWORDS:
            return f"<{v}>"
        if t in _FIXED_TEXT or t in PREPROCESSORS:
            return go_quote(v)
        kind = {IDENTIFIER: "identifier", METRIC_IDENTIFIER: "metric identifier", STRING: "string",
                NUMBER: "number", DURATION: "duration", COMMENT: "comment", ERROR: "error"}[t]
        if t in (IDENTIFIER, METRIC_IDENTIFIER) or len(v) <= 10:
            return f"{kind} {go_quote(v)}"
        return f"{kind} {go_quote(v[:10])}..."


_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a",
               "\b": "\\b", "\f": "\\f", "\v": "\\v"}


def go_quote(s: str) -> str:
    """Go's %q of a string."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif o < 0x20 or o == 0x7f:
            out.append(f"\\x{o:02x}")
        elif 0xdc80 <= o <= 0xdcff:  # a byte that is not UTF-8 (unquote's surrogateescape)
            out.append(f"\\x{o - 0xdc00:02x}")
        elif 0xd800 <= o < 0xe000:
            out.append("\\ufffd")
        elif o > 0x7f and not ch.isprintable():
            out.append(f"\\u{o:04x}" if o <= 0xffff else f"\\U{o:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_quote_rune(ch: str) -> str:
    """Go's %q of a rune."""
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    return "'" + go_quote(ch)[1:-1] + "'"


def go_unicode_rune(ch: str) -> str:
    """Go's %#U of a rune: U+0041 'A'."""
    return f"U+{ord(ch):04X}" + (f" '{ch}'" if ch.isprintable() else "")


_EOF_RUNE = "\ufffd"  # how Go's %q prints the lexer's end-of-input rune (-1)
_SIMPLE = {"*": "*", "/": "/", "%": "%", "+": "+", "-": "-", "^": "^", ",": COMMA, "@": AT}
_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:")
_NAME_REST = re.compile(r"[a-zA-Z0-9_:]*")
_LABEL_REST = re.compile(r"[a-zA-Z0-9_]*")
_SPACES = re.compile(r"[ \t\n\r]*")
_PLAIN_STRING = {q: re.compile(rf"[^{q}\\\n]*{q}") for q in "\"'"}


def is_alpha(c: str) -> bool:
    return c == "_" or "a" <= c <= "z" or "A" <= c <= "Z"


def is_alnum(c: str) -> bool:
    return is_alpha(c) or "0" <= c <= "9"


class Lexer:
    """Prometheus's PromQL lexer states, over a str; call :meth:`next` for each token."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.n = len(text)
        self.pos = 0
        self.start = 0
        self.paren_depth = 0
        self.brace_open = False
        self.bracket_open = False
        self.got_colon = False
        self.got_duration = False
        self.in_duration = False  # lexDurationExpr is the current state
        self.done = False

    # -- helpers -----------------------------------------------------------------------------
    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < self.n else ""

    def _tok(self, typ: str) -> Token:
        t = Token(typ, self.start, self.text[self.start:self.pos])
        self.start = self.pos
        return t

    def _paren(self, r: str) -> Token:
        """``(`` or ``)``, counted for the unbalanced-``)`` error (in and out of durations)."""
        if r == "(":
            self.paren_depth += 1
            return self._tok(LEFT_PAREN)
        t = self._tok(RIGHT_PAREN)
        self.paren_depth -= 1
        if self.paren_depth < 0:
            return self._error("unexpected right parenthesis ')'")
        return t

    def _error(self, msg: str) -> Token:
        self.done = True
        return Token(ERROR, self.start, msg)

    def _skip_spaces(self) -> None:
        self.pos = _SPACES.match(self.text, self.pos).end()
        self.start = self.pos

    # -- entry -------------------------------------------------------------------------------
    def next(self) -> Token:
        if self.done:
            return Token(EOF, self.pos, "")
        while True:
            if self.in_duration:
                t = self._duration_expr()
            elif self.brace_open:
                t = self._inside_braces()
            else:
                t = self._statements()
            if t is not None:
                if t.typ == EOF:
                    self.done = True
                return t

    def _statements(self) -> Token | None:
        text = self.text
        pos = self.pos
        if pos >= self.n:
            if self.paren_depth != 0:
                return self._error("unclosed left parenthesis")
            if self.bracket_open:
                return self._error("unclosed left bracket")
            return self._tok(EOF)
        r = text[pos]
        if r in _NAME_START and not self.bracket_open:
            self.pos = end = _NAME_REST.match(text, pos + 1).end()
            return self._word(text[pos:end])
        if r == "#":
            return self._comment()
        self.pos = pos + 1
        if r in _SPACE:
            self._skip_spaces()
            return None
        if r in _SIMPLE:
            self.start = pos + 1
            return Token(_SIMPLE[r], pos, r)
        if r == "=":
            t = self._peek()
            if t == "=":
                self.pos += 1
                return self._tok("==")
            if t == "~":
                return self._error(f"unexpected character after '=': {go_quote_rune(t)}")
            return self._tok(EQL)
        if r == "!":
            t = self._peek()
            if t != "=":
                self.pos += 1 if t else 0
                return self._error(f"unexpected character after '!': {go_quote_rune(t or _EOF_RUNE)}")
            self.pos += 1
            return self._tok("!=")
        if r in "<>":
            t = self._peek()
            if t in ("=", "/") and t:
                self.pos += 1
                return self._tok(r + t)
            return self._tok(r)
        if "0" <= r <= "9" or (r == "." and "0" <= self._peek() <= "9" and self._peek()):
            self.pos -= 1
            return self._number_or_duration()
        if r in "\"'":
            return self._string(r)
        if r == "`":
            return self._raw_string()
        if is_alpha(r) or r == ":":
            if not self.bracket_open:
                self.pos -= 1
                return self._keyword_or_identifier()
            if r == ":":
                if self.got_colon:
                    return self._error("unexpected colon ':'")
                self.got_colon = True
                return self._tok(COLON)
            if r.lower() in "srm":  # step, range, max_of, min_of
                t = self._duration_keyword()
                if t is not None:
                    return t
            return self._error(f"unexpected character: {go_quote_rune(r)}, expected ':'")
        if r == "(" or r == ")":
            return self._paren(r)
        if r == "{":
            self.brace_open = True
            return self._tok(LEFT_BRACE)
        if r == "[":
            if self.bracket_open:
                return self._error("unexpected left bracket '['")
            self.got_colon = False
            t = self._tok(LEFT_BRACKET)
            self._skip_spaces()
            self.bracket_open = True
            self.in_duration = True
            return t
        if r == "]":
            if not self.bracket_open:
                return self._error("unexpected right bracket ']'")
            self.bracket_open = False
            return self._tok(RIGHT_BRACKET)
        if r == "@":
            return self._tok(AT)
        return self._error(f"unexpected character: {go_quote_rune(r)}")

    def _comment(self) -> Token:
        i = self.pos + 1
        while i < self.n and self.text[i] not in "\r\n":
            i += 1
        self.pos = i
        return self._tok(COMMENT)

    def _inside_braces(self) -> Token | None:
        text = self.text
        if text.startswith("#", self.pos):
            return self._comment()
        if self.pos >= self.n:
            return self._error("unexpected end of input inside braces")
        r = text[self.pos]
        self.pos += 1
        if r in _SPACE:
            self._skip_spaces()
            return None
        if is_alpha(r):
            self.pos = _LABEL_REST.match(text, self.pos).end()
            return self._tok(IDENTIFIER)
        if r == ",":
            return self._tok(COMMA)
        if r in "\"'":
            return self._string(r)
        if r == "`":
            return self._raw_string()
        if r == "=":
            if self._peek() == "~":
                self.pos += 1
                return self._tok(EQL_REGEX)
            return self._tok(EQL)
        if r == "!":
            nr = self._peek()
            if nr == "~":
                self.pos += 1
                return self._tok(NEQ_REGEX)
            if nr == "=":
                self.pos += 1
                return self._tok("!=")
            if nr:
                self.pos += 1
            return self._error(f"unexpected character after '!' inside braces: "
                               f"{go_quote_rune(nr or _EOF_RUNE)}")
        if r == "{":
            return self._error("unexpected left brace '{'")
        if r == "}":
            self.brace_open = False
            return self._tok(RIGHT_BRACE)
        return self._error(f"unexpected character inside braces: {go_quote_rune(r)}")

    def _duration_expr(self) -> Token | None:
        """Inside ``[...]`` until a number: only duration arithmetic (lexDurationExpr)."""
        if self.pos >= self.n:
            return self._error("unexpected end of input in duration expression")
        r = self.text[self.pos]
        self.pos += 1
        if r == "]":
            self.bracket_open = False
            self.got_colon = False
            self.in_duration = False
            return self._tok(RIGHT_BRACKET)
        if r == ":":
            t = self._tok(COLON)
            if not self.got_duration:
                return self._error("unexpected colon before duration in duration expression")
            if self.got_colon:
                return self._error("unexpected repeated colon in duration expression")
            self.got_colon = True
            return t
        if r == "(" or r == ")":
            return self._paren(r)
        if r in _SPACE:
            self._skip_spaces()
            return None
        if r in "+-*/%^":
            return self._tok(r)
        if r == ",":
            return self._tok(COMMA)
        if r.lower() in "srm":
            t = self._duration_keyword()
            if t is not None:
                return t
            return self._error(f"unexpected character in duration expression: {go_quote_rune(r)}")
        if "0" <= r <= "9" or (r == "." and "0" <= self._peek() <= "9" and self._peek()):
            self.pos -= 1
            self.got_duration = True
            self.in_duration = False  # lexNumberOrDuration continues in lexStatements
            return self._number_or_duration()
        return self._error(f"unexpected character in duration expression: {go_quote_rune(r)}")

    def _duration_keyword(self) -> Token | None:
        """step/range/max_of/min_of (any case); the first letter is consumed already."""
        while self.pos < self.n and is_alpha(self.text[self.pos]):
            self.pos += 1
        word = self.text[self.start:self.pos].lower()
        if word in _DURATION_WORDS:
            return self._tok(word)
        return None

    def _keyword_or_identifier(self) -> Token:
        self.pos = _NAME_REST.match(self.text, self.pos).end()
        return self._word(self.text[self.start:self.pos])

    def _word(self, word: str) -> Token:
        """An identifier, keyword or Inf/NaN just read (it ends at self.pos)."""
        low = word.lower()
        if low in ("inf", "nan"):
            return self._tok(NUMBER)
        if low in _WORDS:
            if low in _FILLS and not self._followed_by_paren():
                return self._tok(IDENTIFIER)
            return self._tok(low)
        return self._tok(METRIC_IDENTIFIER if ":" in word else IDENTIFIER)

    def _followed_by_paren(self) -> bool:
        i = self.pos
        while i < self.n and self.text[i] in _SPACE:
            i += 1
        return i < self.n and self.text[i] == "("

    # -- literals ----------------------------------------------------------------------------
    def _number_or_duration(self) -> Token:
        if self._scan_number():
            return self._tok(NUMBER)
        if self._remaining_duration():
            return self._tok(DURATION)
        return self._error(f"bad number or duration syntax: {go_quote(self.text[self.start:self.pos])}")

    def _accept(self, valid: str) -> bool:
        if self.pos < self.n and self.text[self.pos] in valid:
            self.pos += 1
            return True
        return False

    def _remaining_duration(self) -> bool:
        """acceptRemainingDuration: units after the digits; the next character must not be
        alphanumeric (on failure it is consumed, as it shows in the error text)."""
        if not self._accept("smhdwy"):
            return False
        self._accept("s")
        while self._accept(_DIGITS):
            while self._accept(_DIGITS):
                pass
            if not self._accept("smhdw"):
                return False
            self._accept("s")
        c = self._peek()
        if c and is_alnum(c):
            self.pos += 1
            return False
        return True

    def _scan_number(self) -> bool:
        """Prometheus's scanNumber: decimal, hex, float, with ``_`` separators and exponents."""
        initial = self.pos
        digits = _DIGITS
        if self._accept("0") and self._accept("xX"):
            self._accept("_")
            digits = _HEX
        elif self.pos > initial and not (self.pos < self.n and self.text[self.pos] in "xX"):
            pass
        self._accept(".")
        self._accept(digits)
        dot = exp = False
        loop = digits + "._eE"
        while self.pos < self.n and self.text[self.pos] in loop:
            c = self.text[self.pos]
            if c == "." and dot:
                self.pos += 1
                return False
            if c in "eE" and exp:
                self.pos += 1
                return False
            if c == ".":
                self.pos += 1
                dot = True
                if self._accept("_."):
                    return False
                if digits is _HEX:
                    return False
                continue
            if c in "eE":
                self.pos += 1
                exp = True
                self._accept("+-")
                if self._accept("._eE") or self.pos >= self.n:
                    return False
                continue
            if c == "_":
                self.pos += 1
                if self._accept("._eE") or self.pos >= self.n:
                    return False
                continue
            while self._accept(digits):
                pass
        if self.pos == initial:
            return False
        c = self._peek()
        return not (c and is_alnum(c))

    def _string(self, quote: str) -> Token:
        text = self.text
        m = _PLAIN_STRING[quote].match(text, self.pos)
        if m:  # no escapes: the common case
            self.pos = m.end()
            return self._tok(STRING)
        while True:
            if self.pos >= self.n:
                return self._error("unterminated quoted string")
            c = text[self.pos]
            self.pos += 1
            if c == "\\":
                err = self._escape(quote)
                if err:
                    return self._error(err)
                continue
            if c == "\n":
                return self._error("unterminated quoted string")
            if c == quote:
                return self._tok(STRING)

    def _escape(self, quote: str) -> str | None:
        if self.pos >= self.n:
            return "escape sequence not terminated"
        c = self.text[self.pos]
        self.pos += 1
        if c in _ESCAPES or c == quote:
            return None
        if c in "01234567":
            n, base, maxval = 3, 8, 255
        elif c in "xuU":
            n, base, maxval = {"x": (2, 16, 255), "u": (4, 16, 0x10FFFF), "U": (8, 16, 0x10FFFF)}[c]
            if self.pos >= self.n:
                return "escape sequence not terminated"
            c = self.text[self.pos]
            self.pos += 1
        else:
            return f"unknown escape sequence {go_unicode_rune(c)}"
        x = 0
        while n > 0:
            d = int(c, 16) if c and c in _HEX else 16
            if d >= base:
                return f"illegal character {go_unicode_rune(c)} in escape sequence"
            x = x * base + d
            n -= 1
            if n > 0:
                if self.pos >= self.n:
                    return "escape sequence not terminated"
                c = self.text[self.pos]
                self.pos += 1
        if x > maxval or 0xD800 <= x < 0xE000:
            return "escape sequence is an invalid Unicode code point"
        return None

    def _raw_string(self) -> Token:
        end = self.text.find("`", self.pos)
        if end < 0:
            self.pos = self.n
            return self._error("unterminated raw string")
        self.pos = end + 1
        return self._tok(STRING)


def unquote(s: str) -> str:
    """The value of a STRING token (Prometheus's strutil.Unquote: Go escapes; raw strings as is)."""
    q, body = s[0], s[1:-1]
    if q == "`":
        return body
    if "\\" not in body:
        return body
    out: list[str] = []
    i, n = 0, len(body)
    pending = bytearray()  # \x and octal escapes are bytes, joined as UTF-8 (bytes that are not
    # UTF-8 are kept as surrogate escapes, so errors can print them back as Go does)

    def flush() -> None:
        if pending:
            out.append(pending.decode("utf-8", errors="surrogateescape"))
            pending.clear()
    while i < n:
        c = body[i]
        if c != "\\":
            flush()
            out.append(c)
            i += 1
            continue
        e = body[i + 1]
        i += 2
        simple = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                  "\\": "\\", "'": "'", '"': '"'}
        if e in simple:
            flush()
            out.append(simple[e])
        elif e == "x":
            pending.append(int(body[i:i + 2], 16))
            i += 2
        elif e in "01234567":
            pending.append(int(body[i - 1:i + 2], 8))
            i += 2
        elif e == "u":
            flush()
            out.append(chr(int(body[i:i + 4], 16)))
            i += 4
        elif e == "U":
            flush()
            out.append(chr(int(body[i:i + 8], 16)))
            i += 8
    flush()
    return "".join(out)
