SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

ALTER TYPE "email"."delivery_status" ADD VALUE 'suppressed';
