"""Reading SQL text as PostgreSQL does: `?` placeholders to `$n`, and a script split into statements.

Both skip what is not code: '...' and E'...' strings, "..." identifiers, $tag$...$tag$ bodies,
-- and (nested) /* */ comments. SQL in this project is written once with `?` (SQLite's
placeholder; `$1` on SQLite is deprecated in Python 3.12 and an error in 3.14); the PostgreSQL
backend rewrites each distinct statement once and keeps the result. A `?` meant as an operator
(jsonb's `?`, `?|`, `?&`) cannot be written: use the functions (jsonb_exists, ...) instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache

_DOLLAR_TAG_RE = re.compile(r"\$([A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)?\$")
_WORD_RE = re.compile(r"[A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*")
_IDENTIFIER_CHAR_RE = re.compile(r"[A-Za-z0-9_$\x80-\uffff]")


class SqlTextError(ValueError):
    """The text ends inside a string, identifier, comment or $$ body."""


def _tokens(sql: str) -> Iterator[tuple[str, int, int]]:
    """(kind, start, end) for each piece: 'code' characters one by one, 'word', or 'skip' for the rest."""
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "'" or (c in "eE" and sql[i + 1 : i + 2] == "'" and not _after_identifier(sql, i)):
            backslash = c != "'"
            j = i + (2 if backslash else 1)
            while True:
                if j >= n:
                    raise SqlTextError("unterminated string literal")
                if backslash and sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == "'":
                    if sql[j + 1 : j + 2] == "'":
                        j += 2
                        continue
                    break
                j += 1
            yield "skip", i, j + 1
            i = j + 1
        elif c == '"':
            j = i + 1
            while True:
                j = sql.find('"', j)
                if j < 0:
                    raise SqlTextError("unterminated quoted identifier")
                if sql[j + 1 : j + 2] == '"':
                    j += 2
                    continue
                break
            yield "skip", i, j + 1
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            yield "skip", i, j
            i = j
        elif sql.startswith("/*", i):
            depth, j = 1, i + 2
            while depth:
                if j >= n:
                    raise SqlTextError("unterminated /* comment")
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            yield "skip", i, j
            i = j
        elif c == "$" and not _after_identifier(sql, i) and (tag := _DOLLAR_TAG_RE.match(sql, i)):
            end = sql.find(tag.group(0), tag.end())
            if end < 0:
                raise SqlTextError(f"unterminated {tag.group(0)} body")
            yield "skip", i, end + len(tag.group(0))
            i = end + len(tag.group(0))
        elif (word := _WORD_RE.match(sql, i)) is not None and not _after_identifier(sql, i):
            yield "word", i, word.end()
            i = word.end()
        else:
            yield "code", i, i + 1
            i += 1


def _after_identifier(sql: str, i: int) -> bool:
    return i > 0 and _IDENTIFIER_CHAR_RE.match(sql[i - 1]) is not None


@lru_cache(maxsize=2048)
def numbered_placeholders(sql: str) -> str:
    """`sql` with each `?` outside strings and comments replaced by $1, $2, ... in order."""
    if "?" not in sql:
        return sql
    parts: list[str] = []
    last = 0
    number = 0
    for kind, start, end in _tokens(sql):
        if kind == "code" and sql[start] == "?":
            number += 1
            parts.append(sql[last:start])
            parts.append(f"${number}")
            last = end
    parts.append(sql[last:])
    return "".join(parts)


def split_script(script: str) -> list[str]:
    """The statements of a PostgreSQL script, split at semicolons that end a statement.

    Semicolons inside strings, comments, $$ bodies and `BEGIN ATOMIC ... END` function bodies
    do not split. Chunks of only comments and whitespace are dropped.
    """
    statements: list[str] = []
    start = 0
    code_seen = False
    atomic_depth = 0
    previous_word = ""
    for kind, begin, end in _tokens(script):
        if kind == "skip":
            continue
        text = script[begin:end]
        if kind == "word":
            code_seen = True
            word = text.upper()
            if (word == "ATOMIC" and previous_word == "BEGIN") or (atomic_depth and word == "CASE"):
                atomic_depth += 1
            elif atomic_depth and word == "END":
                atomic_depth -= 1
            previous_word = word
        elif text == ";" and not atomic_depth:
            if code_seen:
                statements.append(script[start:end].strip())
            start, code_seen, previous_word = end, False, ""
        elif not text.isspace():
            code_seen = True
    if code_seen:
        statements.append(script[start:].strip())
    return statements


def leading_words(statement: str, count: int = 2) -> list[str]:
    """The first `count` words of a statement's code (comments skipped), upper-cased."""
    words: list[str] = []
    for kind, begin, end in _tokens(statement):
        if kind == "word":
            words.append(statement[begin:end].upper())
            if len(words) == count:
                break
        elif kind == "code" and not statement[begin].isspace():
            break
    return words
