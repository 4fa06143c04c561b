"""Catalog fingerprints: what a schema looks like to PostgreSQL, as comparable plain data.

Two databases built differently (online upgrade, the ``--sql`` script through psql, a
downgrade and upgrade again) must have equal fingerprints. OIDs, and anything else that
differs between equal schemas, are left out; the rest is rendered by the server itself
(``pg_get_constraintdef``, ``pg_get_indexdef``, ``pg_get_functiondef``, ...).
"""

from __future__ import annotations

from typing import Any

import asyncpg

Fingerprint = dict[str, list[tuple[Any, ...]]]

# Each query takes the schema name as $1 and returns rows in a stable order.
_SCHEMA_QUERIES = {
    "schema": """
        SELECT n.nspname, pg_get_userbyid(n.nspowner),
               ARRAY(SELECT a.grantee::regrole::text || ':' || a.privilege_type
                     FROM aclexplode(n.nspacl) a ORDER BY 1)
        FROM pg_namespace n WHERE n.nspname = $1""",
    "relations": """
        SELECT c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity,
               pg_get_userbyid(c.relowner),
               ARRAY(SELECT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
                            || ':' || a.privilege_type
                     FROM aclexplode(c.relacl) a ORDER BY 1)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 ORDER BY c.relname""",
    "views": """
        SELECT c.relname, c.reloptions, pg_get_viewdef(c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind IN ('v', 'm') ORDER BY 1""",
    "columns": """
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, a.attidentity, pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = $1 AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY c.relname, a.attnum""",
    "constraints": """
        SELECT con.conrelid::regclass::text, con.conname, con.contype,
               pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
        WHERE n.nspname = $1 ORDER BY 1, 2""",
    "indexes": """
        SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY 1""",
    "functions": """
        SELECT p.oid::regprocedure::text, p.prokind,
               CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END,
               p.proconfig,
               pg_get_userbyid(p.proowner),
               ARRAY(SELECT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
                            || ':' || a.privilege_type
                     FROM aclexplode(p.proacl) a ORDER BY 1)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = $1 ORDER BY 1""",
    "triggers": """
        SELECT t.tgrelid::regclass::text, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND NOT t.tgisinternal ORDER BY 1, 2""",
    "policies": """
        SELECT tablename, policyname, permissive, roles::text[], cmd, qual, with_check
        FROM pg_policies WHERE schemaname = $1 ORDER BY 1, 2""",
    "types": """
        SELECT t.typname, t.typtype,
               ARRAY(SELECT e.enumlabel FROM pg_enum e
                     WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder)
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = $1 ORDER BY 1""",
}


async def fingerprint(conn: asyncpg.Connection, schema: str = "email") -> Fingerprint:
    """Everything PostgreSQL knows about ``schema``'s objects, minus OIDs."""
    return {
        name: [tuple(row) for row in await conn.fetch(query, schema)]
        for name, query in _SCHEMA_QUERIES.items()
    }


async def public_objects(conn: asyncpg.Connection) -> set[tuple[str, str]]:
    """Relations, functions and types in schema ``public``, by kind and name."""
    rows = await conn.fetch(
        """
        SELECT 'class', relname FROM pg_class
        WHERE relnamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'proc', oid::regprocedure::text FROM pg_proc
        WHERE pronamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'type', typname FROM pg_type
        WHERE typnamespace = 'public'::regnamespace
        """
    )
    return {(kind, name) for kind, name in rows}
