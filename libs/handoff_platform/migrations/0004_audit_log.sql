-- The audit trail of every look at patient data and every disclosure of it (decision 0024):
-- append-only. Ids and field NAMES only, never the values seen.
CREATE TABLE audit_log (
    entry_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor_kind     text NOT NULL,
    actor_id       text NOT NULL,
    record_kind    text NOT NULL,
    record_id      text NOT NULL,
    fields         text[] NOT NULL,
    purpose        text NOT NULL CHECK (purpose IN ('treatment', 'operations', 'disclosure')),
    client_address text
);
CREATE INDEX audit_log_by_time ON audit_log (at, entry_id);

-- The service's role owns this table (it ran this migration), and an owner may grant itself
-- back what is revoked: the trigger is what makes the refusal hold for every role, the
-- owner and a superuser included. Dropping the trigger takes a migration, which is reviewed.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM CURRENT_USER;

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
