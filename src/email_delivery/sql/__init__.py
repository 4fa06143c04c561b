"""The SQL of schema ``email``: one ``.sql`` file per function, trigger, policy and view, and
named statement blocks for the tracker and retention.

Layout (read with ``importlib.resources``, so it works from a wheel too)::

    functions/<name>.sql   CREATE OR REPLACE FUNCTION email.<name>(…) …;
    triggers/<name>.sql    CREATE OR REPLACE TRIGGER <name> … ON email.<table> …;
    policies/<name>.sql    CREATE POLICY <name> ON email.<table> …;
    views/<name>.sql       CREATE OR REPLACE VIEW email.<name> WITH (security_invoker = true) AS …;
    queries.sql            -- name: <block> … statements the tracker runs
    retention.sql          -- name: <block> … statements retention runs

Each file is a complete statement that psql can run as it stands. Values that come from
Python (``email_delivery.rules``) sit between placeholder markers, carrying their current
rendering so the file stays runnable::

    IN /*{active_statuses}*/('queued', 'in_progress', 'retrying')/*{end}*/

Loading replaces every marked region with the rendering from ``rules.placeholders()`` and
drops the markers. ``python -m email_delivery.sql --write`` rewrites stale regions in place;
``--check`` exits 1 when any region is stale (a test runs the same check).

These files are the HEAD definitions: drift detection (``alembic check``, ``email-delivery
verify``) and the head-built test schema use them. Alembic revisions never read them: each
revision carries frozen copies of the objects it creates (see ``migration_ops``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Literal

__all__ = [
    "KINDS",
    "SqlFileError",
    "SqlObject",
    "blocks",
    "head_objects",
    "parse_object",
    "read",
    "render",
    "stale_regions",
]

Kind = Literal["function", "trigger", "policy", "view"]
KINDS: dict[str, Kind] = {
    "functions": "function",
    "triggers": "trigger",
    "policies": "policy",
    "views": "view",
}
"""Directory → kind, in creation order (functions before what calls them)."""

PLACEHOLDER = re.compile(r"/\*\{(?P<name>[a-z0-9_]+)\}\*/(?P<value>.*?)/\*\{end\}\*/", re.DOTALL)
"""A marked region: ``/*{name}*/current rendering/*{end}*/``."""
_OPENING = re.compile(r"/\*\{[a-z0-9_]+\}\*/")


class SqlFileError(ValueError):
    """A SQL file does not follow the layout above (names the file and what is wrong)."""


def read(relative: str) -> str:
    """The raw text of ``email_delivery/sql/<relative>``, markers included."""
    return resources.files(__name__).joinpath(relative).read_text(encoding="utf-8")


def _values(values: Mapping[str, str] | None) -> Mapping[str, str]:
    if values is not None:
        return values
    from email_delivery import rules  # rules imports models; keep this module import-light

    return rules.placeholders()


def render(text: str, values: Mapping[str, str] | None = None, *, where: str = "SQL") -> str:
    """``text`` with every marked region replaced by its rendering, markers dropped."""
    rendered = _values(values)

    def substitute(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in rendered:
            raise SqlFileError(f"{where}: unknown placeholder {{{name}}}")
        return rendered[name]

    result = PLACEHOLDER.sub(substitute, text)
    if _OPENING.search(result):
        raise SqlFileError(f"{where}: a placeholder marker without its /*{{end}}*/")
    return result


def refresh(text: str, values: Mapping[str, str] | None = None, *, where: str = "SQL") -> str:
    """``text`` with every marked region's rendering brought up to date, markers kept."""
    rendered = _values(values)

    def substitute(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in rendered:
            raise SqlFileError(f"{where}: unknown placeholder {{{name}}}")
        return f"/*{{{name}}}*/{rendered[name]}/*{{end}}*/"

    return PLACEHOLDER.sub(substitute, text)


def placeholders_in(text: str) -> set[str]:
    return {match["name"] for match in PLACEHOLDER.finditer(text)}


def stale_regions(text: str, values: Mapping[str, str] | None = None) -> list[str]:
    """Names of the regions whose inline rendering differs from the current one."""
    rendered = _values(values)
    return [
        match["name"]
        for match in PLACEHOLDER.finditer(text)
        if match["name"] in rendered and match["value"] != rendered[match["name"]]
    ]


# ---------------------------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------------------------

_IDENT = r'"?[A-Za-z_][A-Za-z0-9_]*"?'
_HEADERS: dict[Kind, re.Pattern[str]] = {
    "function": re.compile(
        rf"CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+(?P<schema>{_IDENT})\.(?P<name>{_IDENT})\s*\(",
        re.IGNORECASE,
    ),
    "trigger": re.compile(
        rf"CREATE\s+(?:OR\s+REPLACE\s+)?TRIGGER\s+(?P<name>{_IDENT})\s+(?P<body>.*?\bON\s+"
        rf"(?P<on>{_IDENT}\.{_IDENT})\b.*)",
        re.IGNORECASE | re.DOTALL,
    ),
    "policy": re.compile(
        rf"CREATE\s+POLICY\s+(?P<name>{_IDENT})\s+ON\s+(?P<on>{_IDENT}\.{_IDENT})\s+(?P<body>.*)",
        re.IGNORECASE | re.DOTALL,
    ),
    "view": re.compile(
        rf"CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+(?P<schema>{_IDENT})\.(?P<name>{_IDENT})\s+"
        r"WITH\s*\(\s*security_invoker\s*=\s*true\s*\)\s+AS\s+(?P<body>.*)",
        re.IGNORECASE | re.DOTALL,
    ),
}
_LEADING_COMMENTS = re.compile(r"\A(?:\s*--[^\n]*\n|\s+)*")


@dataclass(frozen=True, kw_only=True)
class SqlObject:
    """One function, trigger, policy or view: its rendered statement and what identifies it.

    ``signature`` is ``name(argument list)`` for a function (as written, so as alembic_utils
    names it) and the bare name otherwise; ``on`` is the table of a trigger or policy;
    ``definition`` is what follows the name (what alembic_utils calls the definition).
    """

    kind: Kind
    name: str
    signature: str
    on: str | None
    definition: str
    statement: str

    @property
    def identity(self) -> str:
        """``name(argument types)`` for a function, as ``pg_get_function_identity_arguments``
        gives them (no DEFAULT clauses); the bare name otherwise."""
        if self.kind == "function":
            return f"{self.name}({_argument_types(self.signature)})"
        return self.name

    @property
    def result_columns(self) -> tuple[str, ...]:
        """The column names of a function's ``RETURNS TABLE(…)``, in order."""
        match = re.match(r"RETURNS\s+TABLE\s*\(", self.definition, re.IGNORECASE)
        if self.kind != "function" or match is None:
            raise SqlFileError(f"{self.name} does not return a table")
        inner = self.definition[match.end() : _closing_paren(self.definition, match.end() - 1)]
        return tuple(column.split()[0] for column in _split_top_level(inner))

    @property
    def drop_statement(self) -> str:
        if self.kind == "function":
            return f"DROP FUNCTION email.{self.identity}"
        if self.kind == "view":
            return f"DROP VIEW email.{self.name}"
        return f"DROP {self.kind.upper()} {self.name} ON {self.on}"


def _closing_paren(text: str, start: int) -> int:
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return index
    raise SqlFileError("unbalanced parentheses in the argument list")


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        depth += char == "("
        depth -= char == ")"
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _argument_types(signature: str) -> str:
    """The argument list of ``name(args)`` without DEFAULT clauses (DROP FUNCTION's form)."""
    inner = signature[signature.index("(") + 1 : signature.rindex(")")]
    return ", ".join(
        re.split(r"\s+(?:DEFAULT\b|=)", argument, maxsplit=1, flags=re.IGNORECASE)[0].strip()
        for argument in _split_top_level(inner)
    )


def _unquote(identifier: str) -> str:
    return identifier.strip('"')


def parse_object(kind: Kind, statement: str, *, where: str = "SQL") -> SqlObject:
    """Parse one rendered ``CREATE …`` statement of ``kind`` (leading ``--`` comments and a
    trailing semicolon allowed)."""
    text = _LEADING_COMMENTS.sub("", statement, count=1).strip()
    text = text.removesuffix(";").rstrip()
    match = _HEADERS[kind].match(text)
    if match is None:
        raise SqlFileError(f"{where}: not a CREATE {kind.upper()} statement of schema email")
    name = _unquote(match["name"])
    if kind == "function":
        open_paren = match.end() - 1
        close_paren = _closing_paren(text, open_paren)
        signature = f"{name}{text[open_paren : close_paren + 1]}"
        definition = text[close_paren + 1 :].strip()
        on = None
    else:
        signature = name
        definition = match["body"].strip()
        on = match.groupdict().get("on")
    if kind in ("function", "view") and _unquote(match["schema"]) != "email":
        raise SqlFileError(f"{where}: {kind} {name} is not in schema email")
    if on is not None and not on.startswith("email."):
        raise SqlFileError(f"{where}: {kind} {name} is not on a table of schema email")
    return SqlObject(
        kind=kind,
        name=name,
        signature=signature,
        on=on,
        definition=definition,
        statement=text + ";\n",
    )


def head_objects(values: Mapping[str, str] | None = None) -> list[SqlObject]:
    """Every object under ``functions/``, ``triggers/``, ``policies/`` and ``views/``,
    rendered, in creation order (by kind, then by file name)."""
    rendered = _values(values)
    objects = []
    root = resources.files(__name__)
    for directory, kind in KINDS.items():
        folder = root.joinpath(directory)
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir(), key=lambda item: item.name):
            if not entry.name.endswith(".sql"):
                continue
            where = f"sql/{directory}/{entry.name}"
            sql = parse_object(
                kind, render(entry.read_text(encoding="utf-8"), rendered, where=where), where=where
            )
            if sql.name != entry.name.removesuffix(".sql"):
                raise SqlFileError(f"{where}: defines {sql.name}, not {entry.name[:-4]}")
            objects.append(sql)
    return objects


# ---------------------------------------------------------------------------------------------
# Named statement blocks
# ---------------------------------------------------------------------------------------------

_BLOCK = re.compile(r"^-- name: (?P<name>[a-z][a-z0-9_]*)[ \t]*$", re.MULTILINE)
_INCLUDE = re.compile(r"/\*\{block:(?P<name>[a-z][a-z0-9_]*)\}\*/")


def blocks(relative: str, values: Mapping[str, str] | None = None) -> dict[str, str]:
    """The named statements of ``relative`` (``-- name: x`` starts block ``x``), rendered,
    without their trailing semicolon; describe a block in comments right after its name.

    ``/*{block:y}*/`` inside a block stands for block ``y`` of the same file (a shared
    fragment, e.g. retention's batch walk), so no statement text is written twice.
    """
    raw = _split_blocks(render(read(relative), values, where=f"sql/{relative}"), relative)

    def expand(name: str, seen: tuple[str, ...]) -> str:
        if name in seen:
            raise SqlFileError(f"sql/{relative}: block {name} includes itself")

        def include(match: re.Match[str]) -> str:
            if match["name"] not in raw:
                raise SqlFileError(f"sql/{relative}: block {name} includes unknown {match['name']}")
            # A fragment's description (its leading comment lines) stays in its own block.
            return _LEADING_COMMENTS.sub("", expand(match["name"], (*seen, name)), count=1)

        return _INCLUDE.sub(include, raw[name])

    return {name: expand(name, ()) for name in raw}


def _split_blocks(text: str, relative: str) -> dict[str, str]:
    found: dict[str, str] = {}
    starts = list(_BLOCK.finditer(text))
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(text)
        body = text[match.end() : end].strip().removesuffix(";").rstrip()
        if match["name"] in found:
            raise SqlFileError(f"sql/{relative}: block {match['name']} defined twice")
        if not body:
            raise SqlFileError(f"sql/{relative}: block {match['name']} is empty")
        found[match["name"]] = body
    return found
