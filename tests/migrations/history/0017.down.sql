SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

DROP TRIGGER deliveries_reference_truncate ON email.deliveries;

DROP FUNCTION email.check_truncated_deliveries();
