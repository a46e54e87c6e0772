"""laptop/jsonc.py: parsing JSONC, and edits that change only the bytes they must."""

from __future__ import annotations

import pytest

from interactive_slurm.laptop import jsonc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('{\n  // line\n  "a": /* block */ 1,\n}', {"a": 1}),
        ('{"a": [1, 2,], "b": {"c": null,},}', {"a": [1, 2], "b": {"c": None}}),
        ('{"url": "http://example.org//x"}', {"url": "http://example.org//x"}),
        ('{"glob": "src/*.py /* not a comment */"}', {"glob": "src/*.py /* not a comment */"}),
        ('{"q": "say \\"hi\\" // not a comment", "b": 1}', {"q": 'say "hi" // not a comment', "b": 1}),
        ('{"back": "c:\\\\", "n": -1.5e3}', {"back": "c:\\", "n": -1500.0}),
        ('{"a": 1, "a": 2}', {"a": 2}),
        ("\ufeff{}", {}),
        ("/* only */ [1, false]", [1, False]),
    ],
)
def test_loads(text: str, expected: object) -> None:
    assert jsonc.loads(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1', "expected ',' or '}', found the end of the text"),
        ('{"a": 1,,}', "expected a key in double quotes or '}', found ',' at line 1 column 9"),
        ('{"a": 1}}', "unexpected '}' at line 1 column 9 after the top-level value"),
        ('{\n  "a": 1 /* never closed\n}', "line 2 column 10: a /* comment that is never closed"),
        ('{"a": "open}', "line 1 column 7: a string that is never closed"),
        ("{'a': 1}", 'line 1 column 2: unexpected character "\'"'),
        ('{"a": tru}', "expected a value, found 'tru' at line 1 column 7"),
        ('{"a": 01}', "expected ',' or '}', found '1' at line 1 column 8"),
        ('{"a": "\\x"}', "bad string at line 1 column 7"),
        ("{a: 1}", "expected a key in double quotes or '}', found 'a' at line 1 column 2"),
        ("// nothing else\n", "the text holds no value"),
    ],
)
def test_loads_rejects_broken_text(text: str, message: str) -> None:
    with pytest.raises(jsonc.JsoncError, match=None) as info:
        jsonc.loads(text)
    assert message in str(info.value)


def test_get_and_source() -> None:
    text = '{\n  "a": {"b": [1, 2] /* c */},\n  "s": "x" // d\n}'
    assert jsonc.get(text, ["a", "b"]) == [1, 2]
    assert jsonc.source(text, ["a"]) == '{"b": [1, 2] /* c */}'
    assert jsonc.get(text, ["a", "zz"]) is jsonc.MISSING
    assert jsonc.get(text, ["zz", "b"]) is jsonc.MISSING
    assert jsonc.source(text, ["zz"]) is None
    assert jsonc.get("", ["a"]) is jsonc.MISSING
    assert jsonc.is_empty(" // only a comment\n") and not jsonc.is_empty("{}")
    with pytest.raises(jsonc.JsoncError, match='"s" is not an object'):
        jsonc.get(text, ["s", "x"])
    with pytest.raises(jsonc.JsoncError, match='the key "a" appears 2 times'):
        jsonc.get('{"a": 1, "\\u0061": 2}', ["a"])


# (text before, path, value, exact text after): only the value or the new member differs.
SET_CASES = [
    pytest.param(
        '{\n    // keep me\n    "a": 1, /* and me */\n    "b": "x"\n}\n',
        ["b"],
        "y",
        '{\n    // keep me\n    "a": 1, /* and me */\n    "b": "y"\n}\n',
        id="replace-value-only",
    ),
    pytest.param(
        '{\n    "a": 1 // why\n}\n',
        ["b"],
        2,
        '{\n    "a": 1, // why\n    "b": 2\n}\n',
        id="insert-after-line-comment",
    ),
    pytest.param(
        '{\n  "a": 1,\n}',
        ["b"],
        True,
        '{\n  "a": 1,\n  "b": true,\n}',
        id="trailing-comma-style-kept",
    ),
    pytest.param(
        '{\r\n\t"a": 1\r\n}\r\n',
        ["o", "k"],
        "v",
        '{\r\n\t"a": 1,\r\n\t"o": {\r\n\t\t"k": "v"\r\n\t}\r\n}\r\n',
        id="crlf-and-tabs",
    ),
    pytest.param(
        '{\n  "o": {\n    "x": 1\n  }\n}',
        ["o", "y"],
        2,
        '{\n  "o": {\n    "x": 1,\n    "y": 2\n  }\n}',
        id="nested-insert",
    ),
    pytest.param(
        '{\n  "o": {}\n}',
        ["o", "y"],
        2,
        '{\n  "o": {\n    "y": 2\n  }\n}',
        id="nested-empty-object",
    ),
    pytest.param('{"a":1}', ["b"], [1, 2], '{"a":1, "b":[1, 2]}', id="inline-object-colon-style"),
    pytest.param('{"a": 1,}', ["b"], 2, '{"a": 1, "b": 2,}', id="inline-trailing-comma"),
    pytest.param("{}", ["a"], 1, '{\n    "a": 1\n}', id="empty-object"),
    pytest.param("{\n}", ["a"], 1, '{\n    "a": 1\n}', id="empty-object-on-two-lines"),
    pytest.param(
        "{\n    // settings go here\n}",
        ["a"],
        1,
        '{\n    // settings go here\n    "a": 1\n}',
        id="empty-object-with-comment",
    ),
    pytest.param("", ["a"], 1, '{\n    "a": 1\n}\n', id="empty-text"),
    pytest.param("// hello", ["a"], 1, '// hello\n{\n    "a": 1\n}\n', id="comment-only-text"),
    pytest.param(
        '{\n  "s": "a // b /* c", "t": "\\"}" /* x */\n}',
        ["t"],
        "z",
        '{\n  "s": "a // b /* c", "t": "z" /* x */\n}',
        id="strings-that-look-like-comments",
    ),
    pytest.param('{\n  "a": 1\n}', ["a"], 1, '{\n  "a": 1\n}', id="same-value-unchanged"),
]


@pytest.mark.parametrize(("before", "path", "value", "after"), SET_CASES)
def test_set_value_exact(before: str, path: list[str], value: object, after: str) -> None:
    assert jsonc.set_value(before, path, value) == after


# (text, path, exact text after): the member goes with its comma and its own line.
REMOVE_CASES = [
    pytest.param('{\n    "a": 1,\n    "b": 2\n}', ["b"], '{\n    "a": 1\n}', id="last"),
    pytest.param('{\n    "a": 1,\n    "b": 2\n}', ["a"], '{\n    "b": 2\n}', id="first"),
    pytest.param('{\n    "a": 1,\n    "b": 2,\n}', ["b"], '{\n    "a": 1,\n}', id="trailing-comma"),
    pytest.param(
        '{\n    // about a\n    "a": 1,\n    "b": 2 // about b\n}',
        ["b"],
        '{\n    // about a\n    "a": 1\n}',
        id="comments",
    ),
    pytest.param('{"a": 1, "b": 2, "c": 3}', ["b"], '{"a": 1, "c": 3}', id="inline-middle"),
    pytest.param('{"a": 1, "b": 2}', ["b"], '{"a": 1}', id="inline-last"),
    pytest.param('{"a": 1, "b": 2,}', ["b"], '{"a": 1,}', id="inline-last-trailing-comma"),
    pytest.param('{\n    "a": 1\n}', ["a"], "{}", id="only-member"),
    pytest.param('{\n    // keep\n    "a": 1\n}', ["a"], "{\n    // keep\n}", id="only-member-with-comment"),
    pytest.param('{\n  "o": {"x": 1, "y": 2}\n}', ["o", "x"], '{\n  "o": {"y": 2}\n}', id="nested"),
    pytest.param('{"a": 1}', ["zz"], '{"a": 1}', id="absent"),
    pytest.param('{\r\n\t"a": 1,\r\n\t"b": 2\r\n}\r\n', ["b"], '{\r\n\t"a": 1\r\n}\r\n', id="crlf-tabs"),
]


@pytest.mark.parametrize(("before", "path", "after"), REMOVE_CASES)
def test_remove_exact(before: str, path: list[str], after: str) -> None:
    assert jsonc.remove(before, path) == after


@pytest.mark.parametrize(
    "text",
    [
        '{\n    "a": 1\n}',
        '{\n    "a": 1,\n}',
        '{\n    "a": 1 // c\n}\n',
        '{\r\n\t"a": {\r\n\t\t"b": 1\r\n\t}\r\n}\r\n',
        '{"a": 1}',
        '{"a": 1,}',
        "{}",
        "{\n    /* nothing */\n}",
        '{\r\n\t"a": 1,\r\n\t"b": null\n}',
    ],
)
def test_remove_undoes_set(text: str) -> None:
    added = jsonc.set_value(text, ["new"], {"k": "v"})
    assert jsonc.remove(added, ["new"]) == text
    nested = jsonc.set_value(text, ["a", "new"], 1) if isinstance(jsonc.get(text, ["a"]), dict) else None
    if nested is not None:
        assert jsonc.remove(nested, ["a", "new"]) == text


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("[1]", ["a"], "the top-level value is not an object"),
        ('{"a": 1}', ["a", "b"], '"a" is not an object'),
        ('{"a": 1, "a": 2}', ["a"], 'the key "a" appears 2 times'),
        ('{"a": {"b": 1, "b": 1}}', ["a", "b"], 'the key "a" > "b" appears 2 times'),
        ('{"a": 1', ["a"], "expected ',' or '}'"),
    ],
)
def test_unsafe_edits_raise(text: str, path: list[str], message: str) -> None:
    for edit in (lambda: jsonc.set_value(text, path, 3), lambda: jsonc.remove(text, path)):
        with pytest.raises(jsonc.JsoncError) as info:
            edit()
        assert message in str(info.value)


def test_values_that_are_not_json_are_refused() -> None:
    with pytest.raises(jsonc.JsoncError, match="cannot write"):
        jsonc.set_value("{}", ["a"], float("nan"))


def test_an_emptied_object_closes_up() -> None:
    """``{}`` and ``{\n}`` both take a member the same way, so both come back as ``{}``."""
    for empty in ("{}", "{\n}", "{ \n  \n}"):
        assert jsonc.remove(jsonc.set_value(empty, ["a"], 1), ["a"]) == "{}"
