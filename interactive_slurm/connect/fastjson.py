"""JSON reading for the proxy's fast path (endpoint records, the config cache).

Importing :mod:`json` compiles regular expressions: ~5 ms of every fast-path connect. CPython's
C scanner (the one json itself uses, with json's defaults) reads the same JSON without that.
"""

from __future__ import annotations


def loads(text: str) -> object:
    """``json.loads(text)``, without importing json where CPython's C scanner (the one json
    itself uses, with json's defaults) is there: json's import compiles regular expressions,
    ~5 ms of every fast-path connect. Raises ValueError for anything json.loads refuses, and for
    input nested too deeply to read; never another exception."""
    try:
        from _json import make_scanner
    except ImportError:  # another Python: the json module then
        return _slow(text)
    body = text.strip(" \t\n\r")
    try:
        value, end = make_scanner(_JsonDefaults)(body, 0)  # type: ignore[arg-type]
    except StopIteration:
        raise ValueError("expecting a value at the start") from None
    except ValueError:
        raise
    except Exception:
        # through json.decoder, which is not loaded here; json itself then says what is wrong.
        return _slow(text)
    if end != len(body):
        raise ValueError(f"extra data at character {end}")
    return value


def _slow(text: str) -> object:
    """``json.loads``, with nesting too deep for the interpreter reported as ValueError."""
    import json

    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


class _JsonDefaults:
    """What ``json.JSONDecoder()`` gives its scanner: no hooks, plain types, strict strings."""

    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                      "NaN": float("nan")}.__getitem__
