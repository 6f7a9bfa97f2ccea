"""User queries (`otel-cost sql`, `POST /v1/sql`, `otel-cost review`) are one read statement, checked
before they run.

The engine's session already runs them with `readonly` and the limits of `base.USER_QUERY_LIMITS`, but
`readonly` alone leaves a few doors open in the embedded engine (chDB runs ClickHouse's local,
client-side mode): `SELECT ... INTO OUTFILE` writes a file on the server, the `file()` function reads
any file the process can, `KILL QUERY` stops the server's own inserts, `USE` changes the session's
database. On a ClickHouse server, reads run with `readonly=2` (the driver sends settings with each
request), which allows `SET`, a `SETTINGS` clause and table functions such as `url()` and `remote()`.

So the query is first normalized by the engine's own parser (`formatQuery`: exactly one statement,
comments gone, keywords upper-case, literals quoted one way), the normalized text is checked, and it is
the normalized text that runs, so what was checked is what runs:

- the statement is a SELECT, WITH, SHOW, DESCRIBE, EXISTS or EXPLAIN;
- no `INTO OUTFILE`, no `SETTINGS` clause (the limits are fixed), no `FORMAT` clause (the caller
  chooses the format);
- no table function other than those that generate or reshape data in the engine
  (`SAFE_TABLE_FUNCTIONS`), and no `file()` function: nothing reads files, URLs or other servers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from ..errors import QueryError

__all__ = ["READ_STATEMENTS", "SAFE_TABLE_FUNCTIONS", "check_statement", "format_error"]

READ_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "EXISTS", "EXPLAIN")

#: Table functions that only generate or reshape data inside the engine (lower-case). Every other
#: table function the engine knows (`system.table_functions`) is refused: file, url, s3, remote,
#: cluster, mysql, postgresql, executable, python, hdfs, azureBlobStorage, ...
SAFE_TABLE_FUNCTIONS = frozenset(
    {
        "numbers",
        "numbers_mt",
        "zeros",
        "zeros_mt",
        "generate_series",
        "generateseries",
        "generaterandom",
        "values",
        "view",
        "merge",
        "null",
        "format",  # also the string function format(pattern, ...); the table function parses given text
        "dictionary",
        "loop",
    }
)
#: Plain functions that read outside the engine.
_DENIED_FUNCTIONS = frozenset({"file", "catboostevaluate"})

_TOKEN = re.compile(
    r"""\s+
    |(?P<string>'(?:[^'\\]|\\.|'')*')
    |(?P<quoted>`(?:[^`\\]|\\.|``)*`|"(?:[^"\\]|\\.|"")*")
    |(?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    |(?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    """(kind, text) of the normalized query: word (bare), name (quoted identifier, unquoted), other."""
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind is None or kind == "string":
            continue
        value = match.group()
        if kind == "quoted":
            yield "name", value[1:-1]
        else:
            yield kind, value


def check_statement(formatted: str, table_functions: Iterable[str]) -> None:
    """Raise QueryError unless `formatted` (formatQuery's text) is a read the API may run. `table_functions`:
    every table function the engine knows."""
    tokens = list(_tokens(formatted))
    if not tokens:
        raise QueryError("the query is empty")
    kind, first = tokens[0]
    if kind != "word" or first.upper() not in READ_STATEMENTS:
        raise QueryError(
            f"{first.upper()} is refused: queries run in readonly mode "
            f"(one {', '.join(READ_STATEMENTS[:-1])} or {READ_STATEMENTS[-1]} statement); nothing was changed"
        )
    denied = ({name.lower() for name in table_functions} - SAFE_TABLE_FUNCTIONS) | _DENIED_FUNCTIONS
    for index, (kind, text) in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else ("", "")
        if kind in ("word", "name") and following == ("other", "(") and text.lower() in denied:
            raise QueryError(
                f"{text}() is refused: queries may not read files, URLs or other servers "
                "(readonly mode; the tables and views of the store are all there is)"
            )
        if kind != "word":
            continue
        if text == "OUTFILE" and index and tokens[index - 1] == ("word", "INTO"):
            raise QueryError("INTO OUTFILE is refused: results go to the caller, never to a file on the server")
        if text == "SETTINGS" and following != ("other", "("):
            raise QueryError(
                "a SETTINGS clause is refused: queries run in readonly mode with fixed limits "
                "(time, memory and result size)"
            )
        if text == "FORMAT" and following != ("other", "("):
            raise QueryError(
                "a FORMAT clause is refused: the caller chooses the output (otel-cost sql --format, "
                'or "format" in the POST /v1/sql body)'
            )


def format_error(message: str) -> str:
    """formatQuery's refusal of the user's text, without the wrapper query it was echoed in."""
    cut = message.find("In scope SELECT formatQuery(")
    if cut != -1:
        message = message[:cut].rstrip(" :")
    return message
