"""SQL read as PostgreSQL reads it: `?` to `$n` outside strings and comments, once per statement."""

from __future__ import annotations

import pytest

from server.models.sqltext import SqlTextError, leading_words, numbered_placeholders


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM t WHERE a = ? AND b IN (?, ?)", "SELECT * FROM t WHERE a = $1 AND b IN ($2, $3)"),
        ("SELECT '?', ? FROM t", "SELECT '?', $1 FROM t"),
        ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', $1"),
        ("SELECT E'\\'?', ?", "SELECT E'\\'?', $1"),  # E'\'?' is one string: the backslash escapes the quote
        ('SELECT "odd?name" FROM t WHERE x = ?', 'SELECT "odd?name" FROM t WHERE x = $1'),
        ("SELECT ? -- why?\n, ?", "SELECT $1 -- why?\n, $2"),
        ("SELECT /* ? /* nested ? */ ? */ ?", "SELECT /* ? /* nested ? */ ? */ $1"),
        ("SELECT $$ ? $$, $tag$ ? $tag$, ?", "SELECT $$ ? $$, $tag$ ? $tag$, $1"),
        ("x LIKE ? ESCAPE '\\' AND y = ?", "x LIKE $1 ESCAPE '\\' AND y = $2"),
        ("SELECT 1", "SELECT 1"),
    ],
)
def test_placeholders_are_numbered_outside_strings_and_comments(sql, expected):
    assert numbered_placeholders(sql) == expected


def test_each_distinct_statement_is_rewritten_once():
    numbered_placeholders.cache_clear()
    sql = "SELECT id FROM users WHERE name = ? AND id > ?"
    first = numbered_placeholders(sql)
    assert numbered_placeholders(sql) is first
    info = numbered_placeholders.cache_info()
    assert (info.hits, info.misses) == (1, 1)


@pytest.mark.parametrize("sql", ["SELECT 'open ?", 'SELECT "open ?', "SELECT ? /* open", "SELECT $x$ open ?"])
def test_text_that_never_ends_is_an_error(sql):
    with pytest.raises(SqlTextError):
        numbered_placeholders(sql)


def test_leading_words_skip_comments():
    assert leading_words("-- a\n/* b */  begin transaction;") == ["BEGIN", "TRANSACTION"]
    assert leading_words("(SELECT 1)") == []
