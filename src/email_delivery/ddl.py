"""Functions, triggers, roles, grants and policies of schema ``email``, as plain data.

Migrations create these objects from here and ``alembic/env.py`` registers the same objects
for drift detection, so ``alembic check`` reports a function, trigger or policy that was
changed by hand. These are the head definitions: a revision that changes one of them must
copy the previous definition into itself for its downgrade.

Every function has ``SET search_path = ''`` and names everything schema-qualified, so no
caller's search_path can redirect it, and EXECUTE is revoked from PUBLIC.
"""

from __future__ import annotations

from collections.abc import Generator

from alembic_utils.pg_function import PGFunction
from alembic_utils.pg_policy import PGPolicy
from alembic_utils.pg_trigger import PGTrigger
from alembic_utils.pg_view import PGView
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause

from email_delivery import validation as _v
from email_delivery.base import SCHEMA
from email_delivery.transitions import ATTEMPTS_DECREASED_SQLSTATE, ILLEGAL_TRANSITION_SQLSTATE

WRITER_ROLE = "email_writer"
"""Group role of the worker: reads, inserts and updates deliveries, inserts events."""
READER_ROLE = "email_reader"
"""Group role of dashboards, analytics and support tools: reads both tables."""
ROLES = (WRITER_ROLE, READER_ROLE)

SUPABASE_API_ROLES = ("anon", "authenticated")
"""Supabase's Data API roles: they get nothing here, explicitly, where they exist."""

EVENT_PAYLOAD_SETTING = "email.event_payload"
"""Transaction-local setting whose JSON object becomes the payload of the next audit event."""

TABLE_PRIVILEGES: dict[str, dict[str, tuple[str, ...]]] = {
    "deliveries": {READER_ROLE: ("SELECT",), WRITER_ROLE: ("SELECT", "INSERT", "UPDATE")},
    "delivery_events": {READER_ROLE: ("SELECT",), WRITER_ROLE: ("SELECT", "INSERT")},
}
"""Who may do what: the grants, and one permissive policy per (table, role, command)."""

_TRANSITION_SIGNATURE = (
    "is_allowed_transition(old_status email.delivery_status, new_status email.delivery_status)"
)

FUNCTION_EXECUTE: dict[str, tuple[str, ...]] = {_TRANSITION_SIGNATURE: (WRITER_ROLE, READER_ROLE)}
"""Non-trigger functions and the roles that may call them (triggers need no EXECUTE)."""

is_allowed_transition = PGFunction(
    schema=SCHEMA,
    signature=_TRANSITION_SIGNATURE,
    definition="""
RETURNS boolean
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
    -- The SQL copy of email_delivery.transitions.TRANSITIONS.
    SELECT old_status = new_status
        OR (old_status::text, new_status::text) IN (VALUES
            ('queued', 'in_progress'), ('queued', 'sent'), ('queued', 'failed'),
            ('queued', 'dead_letter'),
            ('in_progress', 'sent'), ('in_progress', 'retrying'), ('in_progress', 'failed'),
            ('in_progress', 'dead_letter'),
            ('retrying', 'in_progress'), ('retrying', 'sent'), ('retrying', 'failed'),
            ('retrying', 'dead_letter'),
            ('failed', 'queued'), ('failed', 'sent'),
            ('dead_letter', 'queued'), ('dead_letter', 'sent'))
$$""",
)

guard_transition = PGFunction(
    schema=SCHEMA,
    signature="guard_transition()",
    definition=f"""
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    IF NEW.status = 'sent' AND NEW.sent_at IS NULL THEN
        NEW.sent_at := now();
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NOT email.is_allowed_transition(OLD.status, NEW.status) THEN
            RAISE EXCEPTION 'illegal delivery status transition from % to %', OLD.status, NEW.status
                USING ERRCODE = '{ILLEGAL_TRANSITION_SQLSTATE}',
                      DETAIL = format('delivery_id=%s', OLD.delivery_id),
                      HINT = 'sent is final; failed and dead_letter move only to queued or sent';
        END IF;
        IF NEW.attempts < OLD.attempts THEN
            RAISE EXCEPTION 'delivery attempts may not decrease (from % to %)',
                OLD.attempts, NEW.attempts
                USING ERRCODE = '{ATTEMPTS_DECREASED_SQLSTATE}',
                      DETAIL = format('delivery_id=%s', OLD.delivery_id);
        END IF;
    END IF;
    RETURN NEW;
END
$$""",
)

touch_updated_at = PGFunction(
    schema=SCHEMA,
    signature="touch_updated_at()",
    definition="""
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$""",
)

record_delivery_event = PGFunction(
    schema=SCHEMA,
    signature="record_delivery_event()",
    definition=f"""
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    attached text := current_setting('{EVENT_PAYLOAD_SETTING}', true);
BEGIN
    IF attached <> '' THEN
        -- A payload belongs to one event: consume it so the next change does not reuse it.
        PERFORM set_config('{EVENT_PAYLOAD_SETTING}', '', true);
    END IF;
    INSERT INTO email.delivery_events
        (delivery_id, status, attempt, error_code, error_message, payload)
    VALUES
        (NEW.delivery_id, NEW.status, NEW.attempts, NEW.last_error_code,
         NEW.last_error_message, nullif(attached, '')::jsonb);
    RETURN NULL;
END
$$""",
)

FUNCTIONS = (is_allowed_transition, guard_transition, touch_updated_at, record_delivery_event)

_DELIVERIES = f"{SCHEMA}.deliveries"

TRIGGERS = (
    PGTrigger(
        schema=SCHEMA,
        signature="deliveries_guard_transition",
        on_entity=_DELIVERIES,
        definition=f"BEFORE INSERT OR UPDATE ON {_DELIVERIES} "
        "FOR EACH ROW EXECUTE FUNCTION email.guard_transition()",
    ),
    PGTrigger(
        schema=SCHEMA,
        signature="deliveries_touch_updated_at",
        on_entity=_DELIVERIES,
        definition=f"BEFORE UPDATE ON {_DELIVERIES} "
        "FOR EACH ROW EXECUTE FUNCTION email.touch_updated_at()",
    ),
    PGTrigger(
        schema=SCHEMA,
        signature="deliveries_audit_insert",
        on_entity=_DELIVERIES,
        definition=f"AFTER INSERT ON {_DELIVERIES} "
        "FOR EACH ROW EXECUTE FUNCTION email.record_delivery_event()",
    ),
    PGTrigger(
        schema=SCHEMA,
        signature="deliveries_audit_update",
        on_entity=_DELIVERIES,
        definition=f"AFTER UPDATE ON {_DELIVERIES} FOR EACH ROW WHEN "
        "(OLD.status IS DISTINCT FROM NEW.status OR OLD.attempts IS DISTINCT FROM NEW.attempts) "
        "EXECUTE FUNCTION email.record_delivery_event()",
    ),
)

_POLICY_CLAUSE = {
    "SELECT": "USING (true)",
    "INSERT": "WITH CHECK (true)",
    "UPDATE": "USING (true) WITH CHECK (true)",
}

POLICIES = tuple(
    PGPolicy(
        schema=SCHEMA,
        signature=f"{table}_{role}_{command.lower()}",
        on_entity=f"{SCHEMA}.{table}",
        definition=f"AS PERMISSIVE FOR {command} TO {role} {_POLICY_CLAUSE[command]}",
    )
    for table, grants in TABLE_PRIVILEGES.items()
    for role, commands in grants.items()
    for command in commands
)

ENTITIES = (*FUNCTIONS, *TRIGGERS, *POLICIES)
"""Everything alembic_utils watches for drift, in creation order."""


# =========================================================================================
# Worker lifecycle functions (issue 3; created by revision 0002)
#
# The worker contract for any language: each function is one atomic statement whose
# precondition sits in its WHERE clause, so concurrent callers serialise on the row lock and
# re-check it (exactly one claimer wins) and nothing is read before it is written. They are
# SECURITY INVOKER: the caller's grants and RLS policies apply as if it ran the statement.
# Each returns the row as it is afterwards plus ``changed`` (no row: unknown delivery_id).
#
# Decisions: a claim's lease ends at last_attempted_at + lease (no lease column), so every
# worker and reaper must pass the same lease. failed -> dead_letter is not a transition, so
# mark_delivery_dead_letter leaves a failed delivery failed and only records the reference.
# attempts never decrease, so a requeue stores the attempts it started from in metadata and
# the retry budget counts from there. requeue_delivery is for operators: no group role may
# execute it, only the owner (Supabase's postgres). The mark and enqueue functions repeat
# the Python input rules that a database can check (secrets: SQLSTATE ED003).
# =========================================================================================

_ROW_COLUMNS = (
    ("delivery_id", "text"),
    ("workflow", "text"),
    ("recipient", "text"),
    ("status", "email.delivery_status"),
    ("attempts", "integer"),
    ("last_error_code", "text"),
    ("last_error_message", "text"),
    ("last_attempted_at", "timestamp with time zone"),
    ("queued_at", "timestamp with time zone"),
    ("sent_at", "timestamp with time zone"),
    ("metadata", "jsonb"),
    ("created_at", "timestamp with time zone"),
    ("updated_at", "timestamp with time zone"),
)
ROW_COLUMN_NAMES = tuple(name for name, _ in _ROW_COLUMNS)
"""The delivery columns every lifecycle function returns first, in this order."""

_OUT = ", ".join(f"{name} {type_}" for name, type_ in _ROW_COLUMNS)
_D = ", ".join(f"d.{name}" for name in ROW_COLUMN_NAMES)
_ACTIVE = "('queued', 'in_progress', 'retrying')"

DEAD_LETTER_REFERENCE_KEY = "dead_letter_reference"
"""Metadata key holding the dead-letter topic's message id (``mark_delivery_dead_letter``)."""
REQUEUED_AT_ATTEMPT_KEY = "requeued_at_attempt"
"""Metadata key set by a requeue: ``attempts`` then; the retry budget counts from there."""
LEASE_EXPIRED_CODE = "LEASE_EXPIRED"
"""``last_error_code`` written when a reaper takes back an expired claim."""

# Attempts since the last requeue: attempts never decrease, so a requeued delivery would
# otherwise have no retry budget left.
_ATTEMPTS_IN_BUDGET = (
    f"d.attempts - coalesce((d.metadata->>'{REQUEUED_AT_ATTEMPT_KEY}')::integer, 0)"
)

# Ends every conditional transition: an unconsumed payload must not attach to a later
# statement's event, and when nothing changed the row is returned as it is (none: unknown id).
_UNCHANGED_ROW_TAIL = f"""hit := FOUND;
    PERFORM set_config('{EVENT_PAYLOAD_SETTING}', '', true);
    IF NOT hit THEN
        RETURN QUERY
        SELECT {_D}, false FROM email.deliveries AS d WHERE d.delivery_id = p_delivery_id;
    END IF;"""

_SIG_SANITIZE = "sanitize_error_message(message text)"
_SIG_ENQUEUE = (
    "enqueue_delivery(p_delivery_id text, p_workflow text, p_recipient text, "
    "p_metadata jsonb, p_queued_at timestamp with time zone)"
)
_SIG_ENQUEUE_MANY = (
    "enqueue_deliveries(p_delivery_ids text[], p_workflows text[], p_recipients text[], "
    "p_metadata jsonb[], p_queued_ats timestamp with time zone[])"
)
_SIG_CLAIM = "claim_delivery(p_delivery_id text, p_lease interval)"
_SIG_SENT = "mark_delivery_sent(p_delivery_id text, p_attempt integer, p_payload jsonb)"
_SIG_FAILED = (
    "mark_delivery_failed(p_delivery_id text, p_attempt integer, p_error_code text, "
    "p_error_message text, p_retryable boolean, p_max_attempts integer, p_payload jsonb)"
)
_SIG_DEAD_LETTER = "mark_delivery_dead_letter(p_delivery_id text, p_reference text)"
_SIG_REQUEUE = "requeue_delivery(p_delivery_id text, p_reason text)"
_SIG_REAP = "reap_stale_deliveries(p_lease interval, p_max_attempts integer, p_limit integer)"

sanitize_error_message = PGFunction(
    schema=SCHEMA,
    signature=_SIG_SANITIZE,
    definition=r"""
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
BEGIN
    -- The database's copy of email_delivery.validation.sanitize_error_message, applied to
    -- every stored message so a client in any language cannot store an address or a token.
    -- PL/pgSQL, not SQL: a SQL function with a SET clause is planned anew on every call.
    RETURN left(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(
        regexp_replace(message,
            '[[:cntrl:]]', ' ', 'g'),
            '(https?://[^[:space:]?#]*)\?[^[:space:]#]*', '\1?[redacted]', 'gi'),
            '[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}', '[email]', 'g'),
            '(bearer|basic)[[:space:]]+[^[:space:]]+', '\1 [redacted]', 'gi'),
            '(password|passwd|pwd|secret|token|api[_-]?key|apikey|authorization|code|otp)([[:space:]]*[:=][[:space:]]*)[^[:space:],;]+',
            '\1\2[redacted]', 'gi'),
            '(^|[^A-Za-z0-9_+/=-])(?=[A-Za-z0-9_+/=-]*[0-9])(?=[A-Za-z0-9_+/=-]*[A-Za-z])[A-Za-z0-9_+/=-]{24,}',
            '\1[token]', 'g'),
        2000);
END
$$""",
)

SECRET_IN_INPUT_SQLSTATE = "ED003"
"""SQLSTATE raised when metadata or a payload carries a secret (any client)."""


def _sql_list(words: frozenset[str] | tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{w}'" for w in sorted(words)) + ")"


def _alternation(words: frozenset[str]) -> str:
    return "|".join(sorted(words))


_SIG_FIND_SECRET = "find_secret(value jsonb)"
# Every key or value the rules can flag contains one of these (case-insensitively).
_SECRET_PREFILTER = "|".join(
    sorted({*_v.SECRET_WORDS, "code", "key", "http", *(s.strip("_") for s in _v.HASH_SUFFIXES)})
)

find_secret = PGFunction(
    schema=SCHEMA,
    signature=_SIG_FIND_SECRET,
    definition=rf"""
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
BEGIN
    -- The database's copy of email_delivery.validation.find_secret (the key rules and the
    -- link-with-a-token rule): the first key holding a secret, or NULL.
    -- Most objects mention none of the words the rules look for (even across separators,
    -- as in "pass-word"): skip the walk.
    IF value IS NULL
       OR regexp_replace(value::text, '[^A-Za-z0-9]+', '', 'g') !~* '{_SECRET_PREFILTER}' THEN
        RETURN NULL;
    END IF;
    -- Each key as _word_word_ (camelCase split, lower-cased), tested with regular
    -- expressions equivalent to the word rules.
    RETURN (
    SELECT k.key FROM (
        SELECT kv->>'key' AS key, kv->'value' AS val,
               '_' || btrim(regexp_replace(
                   lower(regexp_replace(kv->>'key', '([a-z0-9])([A-Z])', '\1_\2', 'g')),
                   '[^a-z0-9]+', '_', 'g'), '_') || '_' AS n
        FROM jsonb_path_query(value, 'strict $.** ? (@.type() == "object").keyvalue()') AS kv
    ) AS k
    WHERE CASE
        WHEN lower(k.key) ~ '({"|".join(_v.HASH_SUFFIXES)})$' THEN
            NOT (jsonb_typeof(k.val) = 'string'
                 AND k.val #>> '{{}}' ~ '{_v.HASH_VALUE_PATTERN}')
        WHEN k.n = '__' OR k.n ~ '_({_alternation(_v.HARMLESS_LAST_WORDS)})_$' THEN false
        ELSE replace(k.n, '_', '') IN {_sql_list(_v.SECRET_WORDS)}
            OR k.n ~ '_({_alternation(_v.SECRET_WORDS)})_'
            OR k.n ~ '^_code_'
            OR k.n ~ '_(?!({_alternation(_v.HARMLESS_CODE_QUALIFIERS)})_)[a-z0-9]+_code_'
            OR k.n ~ '_({_alternation(_v.SECRET_KEY_QUALIFIERS)})_key_'
    END
    UNION ALL
    SELECT 'a link with a token'
    FROM jsonb_path_query(value, 'strict $.** ? (@.type() == "string")') AS s
    WHERE s #>> '{{}}' ~* '{_v.LINK_SECRET_PARAMETER_PATTERN}'
       OR s #>> '{{}}' ~* '{_v.LINK_LONG_TOKEN_PATTERN}'
    LIMIT 1);
END
$$""",
)


def _reject_secrets(value: str, what: str) -> str:
    """PL/pgSQL raising ED003 when ``value`` (a jsonb expression) holds a secret."""
    return f"""secret := email.find_secret({value});
    IF secret IS NOT NULL THEN
        RAISE EXCEPTION '{what} holds a secret (%); store a hash under a key ending in _sha256',
            secret USING ERRCODE = '{SECRET_IN_INPUT_SQLSTATE}';
    END IF;"""


def _transition_function(signature: str, *, body: str, declare: str = "") -> PGFunction:
    """A conditional transition: ``body`` ends in ``RETURN QUERY WITH updated AS (UPDATE …
    RETURNING …)``; the row comes back with ``changed``, or as it is when nothing changed."""
    return PGFunction(
        schema=SCHEMA,
        signature=signature,
        definition=f"""
RETURNS TABLE({_OUT}, changed boolean)
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    hit boolean;
    {declare}
BEGIN
{body.strip(chr(10))}
    SELECT updated.*, true FROM updated;
    {_UNCHANGED_ROW_TAIL}
END
$$""",
    )


def _reject_caller_json(value: str, what: str, *, metadata: bool, array: bool = False) -> str:
    """PL/pgSQL rejecting what Python's validation rejects in a caller's object: a secret
    (ED003), more than its share of 16 KiB, and in metadata the lifecycle's own keys."""

    def any_of(condition: str) -> str:
        if array:
            return f"EXISTS (SELECT FROM unnest({value}) AS m WHERE {condition.format(v='m')})"
        return condition.format(v=value)

    secrets_in = f"(SELECT jsonb_agg(m) FROM unnest({value}) AS m)" if array else value
    checks = [
        _reject_secrets(secrets_in, what),
        f"""IF {any_of(f"octet_length({{v}}::text) > {_v.MAX_CALLER_JSON_BYTES}")} THEN
        RAISE EXCEPTION '{what} is larger than {_v.MAX_CALLER_JSON_BYTES} bytes as JSON'
            USING ERRCODE = '22023';
    END IF;""",
    ]
    if metadata:
        reserved = f"ARRAY['{DEAD_LETTER_REFERENCE_KEY}', '{REQUEUED_AT_ATTEMPT_KEY}']"
        checks.append(f"""IF {any_of(f"{{v}} ?| {reserved}")} THEN
        RAISE EXCEPTION '{what} may not set the lifecycle''s keys %', {reserved}
            USING ERRCODE = '22023';
    END IF;""")
    return "\n    ".join(checks)


enqueue_delivery = PGFunction(
    schema=SCHEMA,
    signature=_SIG_ENQUEUE,
    definition=f"""
RETURNS TABLE({_OUT}, created boolean, conflicts text[])
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    secret text;
BEGIN
    {_reject_caller_json("p_metadata", "metadata", metadata=True)}
    -- Insert or nothing: a redelivered event never changes the row nor writes an event.
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO email.deliveries AS d (delivery_id, workflow, recipient, metadata, queued_at)
        VALUES (p_delivery_id, p_workflow, p_recipient, coalesce(p_metadata, '{{}}'::jsonb),
                coalesce(p_queued_at, now()))
        ON CONFLICT (delivery_id) DO NOTHING
        RETURNING {_D})
    SELECT inserted.*, true, '{{}}'::text[] FROM inserted;
    IF FOUND THEN
        RETURN;
    END IF;
    -- ON CONFLICT waited for a concurrent inserter, so the row is committed and visible now.
    RETURN QUERY
    SELECT {_D}, false,
           array_remove(ARRAY[
               CASE WHEN d.workflow IS DISTINCT FROM p_workflow THEN 'workflow' END,
               CASE WHEN d.recipient IS DISTINCT FROM p_recipient THEN 'recipient' END],
               NULL)
    FROM email.deliveries AS d
    WHERE d.delivery_id = p_delivery_id;
END
$$""",
)

enqueue_deliveries = PGFunction(
    schema=SCHEMA,
    signature=_SIG_ENQUEUE_MANY,
    definition=f"""
RETURNS TABLE({_OUT}, created boolean, conflicts text[])
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    created_ids text[];
    secret text;
BEGIN
    {_reject_caller_json("p_metadata", "metadata", metadata=True, array=True)}
    -- One row per input position, in input order; a repeated id is created at most once.
    -- Inserting in key order keeps concurrent overlapping batches from deadlocking.
    WITH input AS (
        SELECT i.*
        FROM unnest(p_delivery_ids, p_workflows, p_recipients, p_metadata, p_queued_ats)
             WITH ORDINALITY AS i(delivery_id, workflow, recipient, metadata, queued_at, pos)
    ),
    inserted AS (
        INSERT INTO email.deliveries AS d (delivery_id, workflow, recipient, metadata, queued_at)
        SELECT DISTINCT ON (input.delivery_id)
               input.delivery_id, input.workflow, input.recipient,
               coalesce(input.metadata, '{{}}'::jsonb), coalesce(input.queued_at, now())
        FROM input
        ORDER BY input.delivery_id, input.pos
        ON CONFLICT (delivery_id) DO NOTHING
        RETURNING d.delivery_id
    )
    SELECT coalesce(array_agg(inserted.delivery_id), '{{}}') INTO created_ids FROM inserted;

    RETURN QUERY
    WITH input AS (
        SELECT i.*,
               row_number() OVER (PARTITION BY i.delivery_id ORDER BY i.pos) AS nth
        FROM unnest(p_delivery_ids, p_workflows, p_recipients)
             WITH ORDINALITY AS i(delivery_id, workflow, recipient, pos)
    )
    SELECT {_D},
           input.nth = 1 AND d.delivery_id = ANY (created_ids),
           array_remove(ARRAY[
               CASE WHEN d.workflow IS DISTINCT FROM input.workflow THEN 'workflow' END,
               CASE WHEN d.recipient IS DISTINCT FROM input.recipient THEN 'recipient' END],
               NULL)
    FROM input
    JOIN email.deliveries AS d ON d.delivery_id = input.delivery_id
    ORDER BY input.pos;
END
$$""",
)

claim_delivery = PGFunction(
    schema=SCHEMA,
    signature=_SIG_CLAIM,
    definition=f"""
RETURNS TABLE({_OUT}, changed boolean, attempt integer)
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
BEGIN
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, not %', p_lease
            USING ERRCODE = '22023';
    END IF;
    -- A claim's lease ends at last_attempted_at + lease: every worker must use the same lease.
    -- A second claimer blocks on the row lock, then re-checks this WHERE on the new row
    -- version (in_progress, fresh stamp) and updates nothing.
    RETURN QUERY
    WITH claimed AS (
        UPDATE email.deliveries AS d
        SET status = 'in_progress', attempts = d.attempts + 1, last_attempted_at = now()
        WHERE d.delivery_id = p_delivery_id
          AND (d.status IN ('queued', 'retrying')
               OR (d.status = 'in_progress'
                   AND coalesce(d.last_attempted_at, '-infinity') <= now() - p_lease))
        RETURNING {_D})
    SELECT claimed.*, true, claimed.attempts FROM claimed;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT {_D}, false, NULL::integer FROM email.deliveries AS d
        WHERE d.delivery_id = p_delivery_id;
    END IF;
END
$$""",
)

mark_delivery_sent = _transition_function(
    _SIG_SENT,
    declare="secret text;",
    body=f"""
    {_reject_caller_json("p_payload", "payload", metadata=False)}
    -- Any attempt's success is the truth, even a superseded one or after failed/dead_letter.
    PERFORM set_config('{EVENT_PAYLOAD_SETTING}',
        (coalesce(p_payload, '{{}}'::jsonb)
         || jsonb_build_object('reported_attempt', p_attempt))::text,
        true);
    RETURN QUERY
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = 'sent', last_error_code = NULL, last_error_message = NULL
        WHERE d.delivery_id = p_delivery_id AND d.status <> 'sent'
        RETURNING {_D})
""",
)

mark_delivery_failed = _transition_function(
    _SIG_FAILED,
    declare="secret text;",
    body=f"""
    IF p_max_attempts IS NULL OR p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, not %', p_max_attempts
            USING ERRCODE = '22023';
    END IF;
    {_reject_caller_json("p_payload", "payload", metadata=False)}
    PERFORM set_config('{EVENT_PAYLOAD_SETTING}', coalesce(p_payload::text, ''), true);
    -- Only the live attempt may report a failure: a superseded attempt changes nothing.
    RETURN QUERY
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = CASE
                WHEN NOT coalesce(p_retryable, true) THEN 'failed'
                WHEN {_ATTEMPTS_IN_BUDGET} >= p_max_attempts THEN 'dead_letter'
                ELSE 'retrying'
            END::email.delivery_status,
            last_error_code = p_error_code,
            last_error_message = email.sanitize_error_message(p_error_message)
        WHERE d.delivery_id = p_delivery_id
          AND d.status = 'in_progress' AND d.attempts = p_attempt
        RETURNING {_D})
""",
)

mark_delivery_dead_letter = _transition_function(
    _SIG_DEAD_LETTER,
    body=f"""
    -- queued/in_progress/retrying move to dead_letter with the reference in metadata (and on
    -- the event). failed and dead_letter keep their status (failed -> dead_letter is not a
    -- transition) and only record a reference they lack. sent never changes.
    IF p_reference IS NULL
       OR p_reference !~ '^[^[:space:][:cntrl:]]{{1,{_v.MAX_REFERENCE_LENGTH}}}$' THEN
        RAISE EXCEPTION 'reference must be 1-% printable characters without spaces',
            {_v.MAX_REFERENCE_LENGTH} USING ERRCODE = '22023';
    END IF;
    PERFORM set_config('{EVENT_PAYLOAD_SETTING}',
        jsonb_build_object('{DEAD_LETTER_REFERENCE_KEY}', p_reference)::text, true);
    RETURN QUERY
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = CASE WHEN d.status IN {_ACTIVE} THEN 'dead_letter' ELSE d.status END
                ::email.delivery_status,
            metadata = d.metadata || jsonb_build_object('{DEAD_LETTER_REFERENCE_KEY}', p_reference)
        WHERE d.delivery_id = p_delivery_id
          AND (d.status IN {_ACTIVE}
               OR (d.status IN ('failed', 'dead_letter')
                   AND d.metadata->'{DEAD_LETTER_REFERENCE_KEY}' IS NULL))
        RETURNING {_D})
""",
)

requeue_delivery = _transition_function(
    _SIG_REQUEUE,
    body=f"""
    IF p_reason IS NULL OR btrim(p_reason) = '' THEN
        RAISE EXCEPTION 'a requeue needs a reason' USING ERRCODE = '22023';
    END IF;
    PERFORM set_config('{EVENT_PAYLOAD_SETTING}',
        jsonb_build_object('reason', email.sanitize_error_message(p_reason),
                           'requeued_by', session_user::text)::text,
        true);
    RETURN QUERY
    WITH updated AS (
        UPDATE email.deliveries AS d
        SET status = 'queued',
            metadata = d.metadata || jsonb_build_object('{REQUEUED_AT_ATTEMPT_KEY}', d.attempts)
        WHERE d.delivery_id = p_delivery_id AND d.status IN ('failed', 'dead_letter')
        RETURNING {_D})
""",
)

reap_stale_deliveries = PGFunction(
    schema=SCHEMA,
    signature=_SIG_REAP,
    definition=f"""
RETURNS TABLE({_OUT}, changed boolean)
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
BEGIN
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, not %', p_lease
            USING ERRCODE = '22023';
    END IF;
    IF p_max_attempts IS NULL OR p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, not %', p_max_attempts
            USING ERRCODE = '22023';
    END IF;
    -- SKIP LOCKED: concurrent reapers (and a claimer taking the row over) split the work;
    -- the lock re-checks the expiry on the newest row version.
    RETURN QUERY
    WITH stale AS (
        SELECT d.delivery_id FROM email.deliveries AS d
        WHERE d.status = 'in_progress'
          AND coalesce(d.last_attempted_at, '-infinity') <= now() - p_lease
        ORDER BY d.last_attempted_at
        LIMIT greatest(p_limit, 0)
        FOR UPDATE SKIP LOCKED
    ),
    reaped AS (
        UPDATE email.deliveries AS d
        SET status = CASE WHEN {_ATTEMPTS_IN_BUDGET} >= p_max_attempts THEN 'dead_letter'
                          ELSE 'retrying' END::email.delivery_status,
            last_error_code = '{LEASE_EXPIRED_CODE}',
            last_error_message = format(
                'attempt %s claimed at %s got no report within the lease of %s',
                d.attempts, d.last_attempted_at, p_lease)
        FROM stale
        WHERE d.delivery_id = stale.delivery_id
        RETURNING {_D})
    SELECT reaped.*, true FROM reaped;
END
$$""",
)

LIFECYCLE_FUNCTIONS = (
    sanitize_error_message,
    find_secret,
    enqueue_delivery,
    enqueue_deliveries,
    claim_delivery,
    mark_delivery_sent,
    mark_delivery_failed,
    mark_delivery_dead_letter,
    requeue_delivery,
    reap_stale_deliveries,
)
"""Created by revision 0002, in this order (the mark functions call the sanitiser)."""

LIFECYCLE_FUNCTION_EXECUTE: dict[str, tuple[str, ...]] = {
    _SIG_SANITIZE: (WRITER_ROLE, READER_ROLE),
    _SIG_FIND_SECRET: (WRITER_ROLE, READER_ROLE),
    _SIG_ENQUEUE: (WRITER_ROLE,),
    _SIG_ENQUEUE_MANY: (WRITER_ROLE,),
    _SIG_CLAIM: (WRITER_ROLE,),
    _SIG_SENT: (WRITER_ROLE,),
    _SIG_FAILED: (WRITER_ROLE,),
    _SIG_DEAD_LETTER: (WRITER_ROLE,),
    _SIG_REAP: (WRITER_ROLE,),
    # Operators only: no group role; the owner (Supabase's postgres, the CLI's login) runs it.
    _SIG_REQUEUE: (),
}
FUNCTION_EXECUTE.update(LIFECYCLE_FUNCTION_EXECUTE)
ENTITIES = (*ENTITIES, *LIFECYCLE_FUNCTIONS)


# ---------------------------------------------------------------------------------------------
# Dashboard views (read side, issue 4)
# ---------------------------------------------------------------------------------------------
# Views for dashboards (Supabase, Grafana, Metabase) over the same statistics that
# email_delivery.queries builds. Each is created WITH (security_invoker = true), so a reader
# goes through the tables' grants and RLS policies as themselves, and only email_reader may
# SELECT them: anon and authenticated see nothing. alembic_utils' PGView cannot say
# security_invoker, so SecurityInvokerView adds it to every CREATE and folds the view's
# reloptions into the reflected definition: `alembic check` then also reports a view whose
# security_invoker was switched off by hand.

_VIEW_OPTIONS = "security_invoker = true"


class SecurityInvokerView(PGView):
    """A ``PGView`` created ``WITH (security_invoker = true)``; drift in its options shows."""

    @property
    def identity(self) -> str:
        # The same identity as a plain PGView, so a view reflected by PGView (which
        # alembic_utils uses to spot views to drop) matches this local one.
        return f"PGView: {self.schema}.{self.signature}"

    def to_sql_statement_create(self) -> TextClause:
        return sql_text(
            f'CREATE VIEW {self.literal_schema}."{self.signature}" '
            f"WITH ({_VIEW_OPTIONS}) AS {self.definition};"
        )

    def to_sql_statement_create_or_replace(self) -> Generator[TextClause, None, None]:
        # CREATE OR REPLACE VIEW without WITH would reset the options, so it is always given.
        yield sql_text(
            f'CREATE OR REPLACE VIEW {self.literal_schema}."{self.signature}" '
            f"WITH ({_VIEW_OPTIONS}) AS {self.definition};"
        )

    @classmethod
    def from_database(  # type: ignore[override]  # the base's return type is a bare TypeVar
        cls, sess: Session, schema: str = "%"
    ) -> list[SecurityInvokerView]:
        rows = sess.execute(
            sql_text(
                """
                SELECT n.nspname, c.relname, pg_catalog.pg_get_viewdef(c.oid),
                       coalesce(array_to_string(
                           ARRAY(SELECT o FROM unnest(c.reloptions) AS o ORDER BY o), ','), '')
                FROM pg_catalog.pg_class c
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind = 'v' AND n.nspname::text LIKE :schema
                """
            ),
            {"schema": schema},
        ).fetchall()
        return [
            cls(schema=row[0], signature=row[1], definition=f"/* WITH ({row[3]}) */ {row[2]}")
            for row in rows
        ]


STATS_BUCKET_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"
"""Buckets are UTC hours and days whatever the session's TimeZone (``date_bin`` origin)."""
TOP_ERROR_CODES = 3
"""How many error codes ``top_error_codes`` lists per group."""


def stats_view_sql(*, window: str, bucket: str | None) -> str:
    """Per-workflow statistics of deliveries queued within ``window`` before now().

    Kept in step with ``email_delivery.queries.workflow_stats`` (a test compares them).
    """
    bucket_column = (
        f"date_bin(interval '1 {bucket}', queued_at, {STATS_BUCKET_ORIGIN}) AS bucket"
        if bucket
        else "NULL::timestamptz AS bucket"
    )
    keys = "workflow, bucket" if bucket else "workflow"
    select_keys = "s.workflow, s.bucket" if bucket else "s.workflow"
    return f"""
WITH base AS (
    SELECT workflow, {bucket_column}, status, attempts, last_error_code,
           EXTRACT(EPOCH FROM sent_at - queued_at)::double precision AS latency_s
    FROM email.deliveries
    WHERE queued_at >= now() - interval '{window}'
), ranked AS (
    SELECT {keys}, last_error_code AS code, count(*) AS n,
           row_number() OVER (PARTITION BY {keys} ORDER BY count(*) DESC, last_error_code) AS rank
    FROM base
    WHERE last_error_code IS NOT NULL
    GROUP BY {keys}, last_error_code
), errors AS (
    SELECT {keys},
           jsonb_agg(jsonb_build_object('code', code, 'count', n) ORDER BY n DESC, code)
               AS top_error_codes
    FROM ranked
    WHERE rank <= {TOP_ERROR_CODES}
    GROUP BY {keys}
), s AS (
    SELECT {keys},
           count(*) AS total,
           count(*) FILTER (WHERE status = 'sent') AS sent,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'dead_letter') AS dead_letter,
           count(*) FILTER (WHERE status IN ('queued', 'in_progress', 'retrying')) AS in_flight,
           count(*) FILTER (WHERE attempts > 1) AS retried,
           avg(attempts)::double precision AS mean_attempts,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_s) AS latency_p50_s,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_s) AS latency_p95_s,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_s) AS latency_p99_s
    FROM base
    GROUP BY {keys}
)
SELECT {select_keys}, s.total, s.sent, s.failed, s.dead_letter, s.in_flight,
       s.sent::double precision / nullif(s.sent + s.failed + s.dead_letter, 0) AS success_rate,
       s.retried::double precision / s.total AS retry_rate,
       s.mean_attempts, s.latency_p50_s, s.latency_p95_s, s.latency_p99_s,
       coalesce(e.top_error_codes, '[]'::jsonb) AS top_error_codes
FROM s
LEFT JOIN errors e USING ({keys})"""


VIEWS = (
    SecurityInvokerView(
        schema=SCHEMA,
        signature="delivery_stats_24h",
        definition=stats_view_sql(window="24 hours", bucket=None),
    ),
    SecurityInvokerView(
        schema=SCHEMA,
        signature="delivery_stats_hourly",
        definition=stats_view_sql(window="7 days", bucket="hour"),
    ),
    SecurityInvokerView(
        schema=SCHEMA,
        signature="delivery_stats_daily",
        definition=stats_view_sql(window="90 days", bucket="day"),
    ),
    SecurityInvokerView(
        schema=SCHEMA,
        signature="pending_deliveries",
        definition="""
SELECT delivery_id, workflow, recipient, status, attempts, last_error_code,
       queued_at, last_attempted_at, updated_at, now() - updated_at AS idle_for
FROM email.deliveries
WHERE status IN ('queued', 'in_progress', 'retrying')""",
    ),
)

VIEW_PRIVILEGES: dict[str, dict[str, tuple[str, ...]]] = {
    view.signature: {READER_ROLE: ("SELECT",)} for view in VIEWS
}
"""Grants on the views: email_reader reads them; nobody else, anon included."""

ENTITIES = (*ENTITIES, *VIEWS)
