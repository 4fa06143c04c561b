"""Functions, triggers, roles, grants and policies of schema ``email``, as plain data.

Migrations create these objects from here and ``alembic/env.py`` registers the same objects
for drift detection, so ``alembic check`` reports a function, trigger or policy that was
changed by hand. These are the head definitions: a revision that changes one of them must
copy the previous definition into itself for its downgrade.

Every function has ``SET search_path = ''`` and names everything schema-qualified, so no
caller's search_path can redirect it, and EXECUTE is revoked from PUBLIC.
"""

from __future__ import annotations

from alembic_utils.pg_function import PGFunction
from alembic_utils.pg_policy import PGPolicy
from alembic_utils.pg_trigger import PGTrigger

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
