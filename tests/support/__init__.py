"""What the tests share: a real PostgreSQL (provisioning), the Supabase-shaped cluster and its
template (cluster), PgBouncer in transaction mode (pgbouncer), direct database helpers (db),
seeded read-side data (seed), catalog fingerprints (fingerprint) and the fixtures."""
