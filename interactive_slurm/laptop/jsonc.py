"""Surgical edits of JSONC text: JSON with ``//`` and ``/* */`` comments and trailing commas.

VS Code's settings.json is JSONC, and VS Code edits it with Microsoft's jsonc-parser: only the
bytes of a changed value or of an inserted member change. This module does the same for the few
edits we need, in pure Python:

- ``loads(text)``: the document as Python values (a duplicate key: the last one wins, as in VS Code);
- ``get(text, path)``: the value at a path of object keys, or ``MISSING``; ``source`` its text;
- ``is_empty(text)``: the text holds only whitespace and comments;
- ``set_value(text, path, value)``: replace a value's span, or insert a member before the object's
  closing brace in the file's own indentation, line ending and comma style;
- ``remove(text, path)``: remove a member with its comma (and its own line, when it has one).

A document made only of whitespace and comments counts as an empty object for ``get``,
``set_value`` and ``remove``. Every edit is checked by parsing its result again: the new document
must be the old one with exactly that change. Anything that cannot be edited safely (broken
JSONC, a top level that is not an object, a key on the path that appears twice, a value on the
path that is not an object) raises ``JsoncError`` and no text is returned.
"""

from __future__ import annotations

import bisect
import copy
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MISSING", "JsoncError", "get", "is_empty", "loads", "remove", "set_value", "source"]


class JsoncError(ValueError):
    """The text is not JSONC we can edit safely; the message says where and why."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""What ``get`` returns for a path that is not in the document."""

_TOKEN = re.compile(
    r"""
     (?P<nl>\r\n|\n|\r)
    |(?P<ws>[ \t]+)
    |(?P<line>//[^\r\n]*)
    |(?P<block>/\*.*?\*/)
    |(?P<string>"(?:[^"\\\x00-\x1f]|\\.)*")
    |(?P<punct>[{}\[\]:,])
    |(?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
    |(?P<word>[A-Za-z_$][A-Za-z0-9_$]*)
    """,
    re.VERBOSE | re.DOTALL,
)
_TRIVIA = frozenset({"nl", "ws", "line", "block"})
_WORDS = {"true": True, "false": False, "null": None}


@dataclass(frozen=True)
class _Token:
    kind: str
    start: int
    end: int


@dataclass
class _Node:
    kind: str  # object, array, string, number, word
    start: int
    end: int
    members: list[_Member] = field(default_factory=list)
    items: list[_Node] = field(default_factory=list)


@dataclass
class _Member:
    key: str
    key_start: int
    key_end: int
    value: _Node
    comma: int | None  # offset of the comma after the value


def _position(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"line {line} column {column}"


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 1 if text.startswith("\ufeff") else 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            if text.startswith("/*", pos):
                what = "a /* comment that is never closed"
            elif text.startswith('"', pos):
                what = "a string that is never closed (or holds a raw control character)"
            else:
                what = f"unexpected character {text[pos]!r}"
            raise JsoncError(f"{_position(text, pos)}: {what}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append(_Token(kind, pos, match.end()))
        pos = match.end()
    return tokens


class _Parser:
    """Recursive descent over the significant tokens; keeps every value's span."""

    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.tokens = [t for t in tokens if t.kind not in _TRIVIA]
        self.index = 0

    def _describe(self, token: _Token | None) -> str:
        if token is None:
            return "the end of the text"
        snippet = self.text[token.start : token.end]
        if len(snippet) > 30:
            snippet = snippet[:27] + "..."
        return f"{snippet!r} at {_position(self.text, token.start)}"

    def _peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _fail(self, expected: str) -> JsoncError:
        return JsoncError(f"expected {expected}, found {self._describe(self._peek())}")

    def _is(self, token: _Token | None, punct: str) -> bool:
        return token is not None and token.kind == "punct" and self.text[token.start : token.end] == punct

    def parse(self) -> _Node | None:
        if not self.tokens:
            return None
        node = self._value()
        if self._peek() is not None:
            raise JsoncError(f"unexpected {self._describe(self._peek())} after the top-level value")
        return node

    def _value(self) -> _Node:
        token = self._peek()
        if token is None:
            raise self._fail("a value")
        if self._is(token, "{"):
            return self._object()
        if self._is(token, "["):
            return self._array()
        word = self.text[token.start : token.end]
        if token.kind in ("string", "number") or (token.kind == "word" and word in _WORDS):
            self.index += 1
            node = _Node(token.kind, token.start, token.end)
            if token.kind == "string":
                self._string(token)
            return node
        raise self._fail("a value")

    def _string(self, token: _Token) -> str:
        try:
            value = json.loads(self.text[token.start : token.end])
        except ValueError as exc:
            raise JsoncError(f"bad string at {_position(self.text, token.start)}: {exc}") from None
        assert isinstance(value, str)
        return value

    def _object(self) -> _Node:
        start = self._take().start
        node = _Node("object", start, start)
        while True:
            token = self._peek()
            if self._is(token, "}"):
                break
            if token is None or token.kind != "string":
                raise self._fail("a key in double quotes or '}'")
            self.index += 1
            key = self._string(token)
            if not self._is(self._peek(), ":"):
                raise self._fail("':'")
            self.index += 1
            member = _Member(key, token.start, token.end, self._value(), None)
            node.members.append(member)
            after = self._peek()
            if self._is(after, ","):
                assert after is not None
                member.comma = after.start
                self.index += 1
            elif not self._is(after, "}"):
                raise self._fail("',' or '}'")
        node.end = self._take().end
        return node

    def _array(self) -> _Node:
        start = self._take().start
        node = _Node("array", start, start)
        while not self._is(self._peek(), "]"):
            node.items.append(self._value())
            if self._is(self._peek(), ","):
                self.index += 1
            elif not self._is(self._peek(), "]"):
                raise self._fail("',' or ']'")
        node.end = self._take().end
        return node

    def _take(self) -> _Token:
        token = self._peek()
        assert token is not None
        self.index += 1
        return token


def _python(text: str, node: _Node) -> Any:
    if node.kind == "object":
        return {m.key: _python(text, m.value) for m in node.members}
    if node.kind == "array":
        return [_python(text, item) for item in node.items]
    source = text[node.start : node.end]
    if node.kind == "word":
        return _WORDS[source]
    return json.loads(source)


class _Document:
    """One parse of a text: the tree, the trivia, and the file's formatting conventions."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.starts = [t.start for t in self.tokens]
        self.root = _Parser(text, self.tokens).parse()
        newline = re.search(r"\r\n|\n|\r", text)
        self.eol = newline.group() if newline else "\n"

    def object_root(self) -> _Node | None:
        if self.root is not None and self.root.kind != "object":
            raise JsoncError("the top-level value is not an object")
        return self.root

    def line_start(self, offset: int) -> int:
        return max(self.text.rfind("\n", 0, offset), self.text.rfind("\r", 0, offset)) + 1

    def starts_line(self, offset: int) -> bool:
        return self.text[self.line_start(offset) : offset].strip(" \t\ufeff") == ""

    def indent_of(self, offset: int) -> str:
        """The leading whitespace of the line that holds ``offset``."""
        line = self.text[self.line_start(offset) :].lstrip("\ufeff")
        return line[: len(line) - len(line.lstrip(" \t"))]

    def end_of_line(self, offset: int) -> int:
        """Where the line goes on after ``offset`` past spaces and comments: a newline, a token, or EOF."""
        index = bisect.bisect_left(self.starts, offset)
        while index < len(self.tokens) and self.tokens[index].kind in ("ws", "line", "block"):
            index += 1
        return self.tokens[index].start if index < len(self.tokens) else len(self.text)

    def line_break_before(self, offset: int) -> int:
        """Where the newline that ends the line before ``offset``'s line starts."""
        start = self.line_start(offset)
        return start - 2 if self.text[max(start - 2, 0) : start] == "\r\n" else start - 1

    def newline_at(self, offset: int) -> int:
        """The length of the newline at ``offset`` (0 at the end of the text)."""
        match = re.match(r"\r\n|\n|\r", self.text[offset : offset + 2])
        return len(match.group()) if match else 0

    def objects(self) -> list[_Node]:
        """Every object in the document, outermost first."""
        found: list[_Node] = []
        pending = [self.root] if self.root is not None else []
        while pending:
            node = pending.pop(0)
            if node.kind == "object":
                found.append(node)
            pending.extend(m.value for m in node.members)
            pending.extend(node.items)
        return found

    def indent_unit(self) -> str:
        """One level of indentation as the file writes it (tabs or N spaces); four spaces if unknown."""
        for node in self.objects():
            outer = self.indent_of(node.start)
            for member in node.members:
                if self.starts_line(member.key_start):
                    inner = self.indent_of(member.key_start)
                    if inner.startswith(outer) and len(inner) > len(outer):
                        return inner[len(outer) :]
        return "    "

    def colon(self) -> str:
        """The text between a key and its value, as the file writes it (``": "`` if unknown)."""
        for node in self.objects():
            for member in node.members:
                between = self.text[member.key_end : member.value.start]
                if re.fullmatch(r"[ \t]*:[ \t]*", between):
                    return between
        return ": "

    def format(self, value: Any, indent: str | None) -> str:
        """``value`` as JSON; a non-empty object on lines of its own below ``indent`` (inline if None)."""
        if isinstance(value, dict) and value:
            if indent is None:
                parts = [json.dumps(k) + self.colon() + self.format(v, None) for k, v in value.items()]
                return "{" + ", ".join(parts) + "}"
            inner = indent + self.indent_unit()
            parts = [inner + json.dumps(k) + self.colon() + self.format(v, inner) for k, v in value.items()]
            return "{" + self.eol + ("," + self.eol).join(parts) + self.eol + indent + "}"
        try:
            return json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise JsoncError(f"cannot write {value!r} as JSON: {exc}") from None


def _find(node: _Node, key: str, path: Sequence[str]) -> _Member | None:
    found = [m for m in node.members if m.key == key]
    if len(found) > 1:
        raise JsoncError(f"the key {_dotted(path)} appears {len(found)} times")
    return found[0] if found else None


def _dotted(path: Sequence[str]) -> str:
    return " > ".join(json.dumps(k) for k in path)


def _walk(doc: _Document, path: Sequence[str]) -> tuple[_Node | None, _Member | None]:
    """The object that holds ``path[-1]`` (None if an object on the way is missing) and its member."""
    node = doc.object_root()
    if node is None:
        return None, None
    for depth, key in enumerate(path):
        member = _find(node, key, path[: depth + 1])
        if depth == len(path) - 1:
            return node, member
        if member is None:
            return None, None
        if member.value.kind != "object":
            raise JsoncError(f"{_dotted(path[: depth + 1])} is not an object")
        node = member.value
    raise AssertionError("unreachable")


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    """Apply non-overlapping edits; of two insertions at one offset, the first listed comes first."""
    for start, end, replacement in sorted(reversed(edits), key=lambda edit: edit[0], reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def _checked(new: str, expect: Any) -> str:
    """``new`` if it parses to ``expect``; a JsoncError otherwise (never a silently wrong file)."""
    doc = _Document(new)
    got = _python(new, doc.root) if doc.root is not None else {}
    if json.dumps(got, sort_keys=True) != json.dumps(expect, sort_keys=True):
        raise JsoncError("the edit did not give the expected document; the text is left unchanged")
    return new


def loads(text: str) -> Any:
    """The JSONC document as Python values; JsoncError if it is broken or holds no value."""
    root = _Document(text).root
    if root is None:
        raise JsoncError("the text holds no value")
    return _python(text, root)


def is_empty(text: str) -> bool:
    """True if the text holds only whitespace and comments (a settings file that counts as ``{}``)."""
    return _Document(text).root is None


def source(text: str, path: Sequence[str]) -> str | None:
    """The text of the value at ``path`` exactly as written, or None if it is not there."""
    if not path:
        raise ValueError("empty path")
    _, member = _walk(_Document(text), path)
    return None if member is None else text[member.value.start : member.value.end]


def get(text: str, path: Sequence[str]) -> Any:
    """The value at ``path`` (keys of nested objects), or MISSING."""
    if not path:
        raise ValueError("empty path")
    doc = _Document(text)
    _, member = _walk(doc, path)
    return MISSING if member is None else _python(text, member.value)


def _nest(path: Sequence[str], value: Any) -> Any:
    for key in reversed(path):
        value = {key: value}
    return value


def set_value(text: str, path: Sequence[str], value: Any) -> str:
    """``text`` with the value at ``path`` set to ``value``; objects missing on the way are made."""
    if not path:
        raise ValueError("empty path")
    doc = _Document(text)
    _walk(doc, path)  # raises if the path is unsafe: duplicate keys, or not an object on the way
    root = doc.object_root()
    expect = _python(text, root) if root is not None else {}
    target = expect
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = copy.deepcopy(value)
    if root is None:
        lead = "" if text == "" or doc.newline_at(len(text) - 1) else doc.eol
        new = text + lead + doc.format(_nest(path, value), "") + doc.eol
        return _checked(new, expect)
    node = root
    for depth, key in enumerate(path):
        member = _find(node, key, path[: depth + 1])
        if member is None:
            new = _apply(text, _insert(doc, node, key, _nest(path[depth + 1 :], value)))
            return _checked(new, expect)
        if depth == len(path) - 1:
            if json.dumps(_python(text, member.value), sort_keys=True) == json.dumps(value, sort_keys=True):
                return text
            indent = doc.indent_of(member.key_start) if doc.starts_line(member.key_start) else None
            new = _apply(text, [(member.value.start, member.value.end, doc.format(value, indent))])
            return _checked(new, expect)
        if member.value.kind != "object":
            raise JsoncError(f"{_dotted(path[: depth + 1])} is not an object")
        node = member.value
    raise AssertionError("unreachable")


def _insert(doc: _Document, node: _Node, key: str, value: Any) -> list[tuple[int, int, str]]:
    """The edits that add the member ``key: value`` at the end of the object ``node``."""
    text, eol = doc.text, doc.eol
    close = node.end - 1
    if node.members:
        last = node.members[-1]
        if doc.starts_line(last.key_start):
            indent = doc.indent_of(last.key_start)
            member = indent + json.dumps(key) + doc.colon() + doc.format(value, indent)
            if last.comma is not None:
                at = doc.end_of_line(last.comma + 1)
                return [(at, at, eol + member + ",")]
            at = doc.end_of_line(last.value.end)
            return [(last.value.end, last.value.end, ","), (at, at, eol + member)]
        member = json.dumps(key) + doc.colon() + doc.format(value, None)
        if last.comma is not None:
            return [(last.comma + 1, last.comma + 1, " " + member + ",")]
        return [(last.value.end, last.value.end, ", " + member)]
    outer = doc.indent_of(node.start)
    indent = outer + doc.indent_unit()
    member = indent + json.dumps(key) + doc.colon() + doc.format(value, indent)
    inner = text[node.start + 1 : close]
    if inner.strip(" \t") == "":
        return [(node.start + 1, close, eol + member + eol + outer)]
    if doc.starts_line(close):
        at = doc.line_break_before(close)
        return [(at, at, eol + member)]
    return [(close, close, eol + member + eol + outer)]


def remove(text: str, path: Sequence[str]) -> str:
    """``text`` without the member at ``path`` (unchanged if it is not there)."""
    if not path:
        raise ValueError("empty path")
    doc = _Document(text)
    node, member = _walk(doc, path)
    if node is None or member is None:
        return text
    root = doc.object_root()
    assert root is not None
    expect = _python(text, root)
    target = expect
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return _checked(_apply(text, _removal(doc, node, member)), expect)


def _removal(doc: _Document, node: _Node, member: _Member) -> list[tuple[int, int, str]]:
    """The edits that take ``member`` out of ``node`` with its comma, leaving the rest as it was."""
    text = doc.text
    index = node.members.index(member)
    previous = node.members[index - 1] if index > 0 else None
    following = node.members[index + 1] if index + 1 < len(node.members) else None
    after = member.comma + 1 if member.comma is not None else member.value.end
    eol_at = doc.end_of_line(after)
    own_lines = doc.starts_line(member.key_start) and (eol_at == len(text) or doc.newline_at(eol_at) > 0)
    if own_lines:  # the line break before it goes too: what an insertion adds
        start, end = doc.line_break_before(member.key_start), eol_at
        edits = [(start, end, "")]
        if following is None and member.comma is None and previous is not None:
            assert previous.comma is not None
            edits.append((previous.comma, previous.comma + 1, ""))
        if len(node.members) == 1:
            rest = text[node.start + 1 : start] + text[end : node.end - 1]
            if rest.strip(" \t\r\n") == "":
                return [(node.start + 1, node.end - 1, "")]
        return edits
    if following is not None:
        return [(member.key_start, following.key_start, "")]
    if previous is not None:
        assert previous.comma is not None
        if member.comma is not None:
            return [(previous.comma + 1, member.comma + 1, "")]
        return [(previous.comma, member.value.end, "")]
    return [(node.start + 1, node.end - 1, "")]
