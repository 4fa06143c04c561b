CREATE POLICY provider_rollup_state_email_writer_select ON email.provider_rollup_state
    AS PERMISSIVE FOR SELECT TO email_writer USING (true);
