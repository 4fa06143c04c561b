DROP POLICY delivery_events_email_writer_insert ON email.delivery_events;

DROP POLICY delivery_events_email_writer_select ON email.delivery_events;

DROP POLICY delivery_events_email_reader_select ON email.delivery_events;

DROP POLICY deliveries_email_writer_update ON email.deliveries;

DROP POLICY deliveries_email_writer_insert ON email.deliveries;

DROP POLICY deliveries_email_writer_select ON email.deliveries;

DROP POLICY deliveries_email_reader_select ON email.deliveries;

DROP TRIGGER deliveries_audit_update ON email.deliveries;

DROP TRIGGER deliveries_audit_insert ON email.deliveries;

DROP TRIGGER deliveries_touch_updated_at ON email.deliveries;

DROP TRIGGER deliveries_guard_transition ON email.deliveries;

DROP FUNCTION email.record_delivery_event();

DROP FUNCTION email.touch_updated_at();

DROP FUNCTION email.guard_transition();

DROP FUNCTION email.is_allowed_transition(old_status email.delivery_status, new_status email.delivery_status);

DROP INDEX email.ix_delivery_events_delivery_id_id;

DROP TABLE email.delivery_events;

DROP INDEX email.ix_deliveries_status_updated_at;

DROP INDEX email.ix_deliveries_recipient_updated_at;

DROP TABLE email.deliveries;

DROP TYPE email.delivery_status;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'email_writer') THEN
        REVOKE USAGE ON SCHEMA email FROM "email_writer";
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'email_reader') THEN
        REVOKE USAGE ON SCHEMA email FROM "email_reader";
    END IF;
END
$$;

DO $$
DECLARE
    role_oid oid := (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = 'email_reader');
BEGIN
    IF role_oid IS NULL THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_shdepend
               WHERE refclassid = 'pg_catalog.pg_authid'::regclass AND refobjid = role_oid
                 AND deptype <> 'p') THEN
        RAISE NOTICE 'keeping role %: it still holds privileges or objects', 'email_reader';
    ELSIF EXISTS (SELECT FROM pg_catalog.pg_auth_members m
                  JOIN pg_catalog.pg_roles r ON r.oid = m.member
                  WHERE m.roleid = role_oid AND r.rolname <> current_user) THEN
        RAISE NOTICE 'keeping role %: logins are members of it', 'email_reader';
    ELSE
        BEGIN
            DROP ROLE "email_reader";
        EXCEPTION WHEN insufficient_privilege OR dependent_objects_still_exist THEN
            RAISE NOTICE 'keeping role %: %', 'email_reader', SQLERRM;
        END;
    END IF;
END
$$;

DO $$
DECLARE
    role_oid oid := (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = 'email_writer');
BEGIN
    IF role_oid IS NULL THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_shdepend
               WHERE refclassid = 'pg_catalog.pg_authid'::regclass AND refobjid = role_oid
                 AND deptype <> 'p') THEN
        RAISE NOTICE 'keeping role %: it still holds privileges or objects', 'email_writer';
    ELSIF EXISTS (SELECT FROM pg_catalog.pg_auth_members m
                  JOIN pg_catalog.pg_roles r ON r.oid = m.member
                  WHERE m.roleid = role_oid AND r.rolname <> current_user) THEN
        RAISE NOTICE 'keeping role %: logins are members of it', 'email_writer';
    ELSE
        BEGIN
            DROP ROLE "email_writer";
        EXCEPTION WHEN insufficient_privilege OR dependent_objects_still_exist THEN
            RAISE NOTICE 'keeping role %: %', 'email_writer', SQLERRM;
        END;
    END IF;
END
$$;
