CREATE OR REPLACE FUNCTION email.is_owner_session()
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Whether the login (session_user: not the definer a lifecycle function runs as, nor a
    -- role SET ROLE switched to) is the schema owner or a member of it, as Supabase's
    -- postgres owns what its migrations create. What only the owner may do is checked here.
    SELECT pg_has_role(session_user, c.relowner, 'MEMBER')
    FROM pg_class AS c
    WHERE c.oid = 'email.deliveries'::regclass
$$;
