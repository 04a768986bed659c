-- Schedules as prioritized layers, rotations, imported calendars, temporary schedules,
-- calendar subscription tokens, and a version that any schedule change bumps
-- (docs/decisions/0017).

CREATE TABLE layers (
    layer_id   uuid PRIMARY KEY,
    pool_kind  text NOT NULL CHECK (pool_kind IN ('site', 'state')),
    pool_key   text NOT NULL,
    name       text NOT NULL,
    priority   integer NOT NULL DEFAULT 0,
    kind       text NOT NULL CHECK (kind IN ('weekly', 'rotation', 'calendar')),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (pool_kind, pool_key, name)
);
-- A pool's weekly shifts are one layer (the shifts keep their pool columns).
CREATE UNIQUE INDEX layers_one_weekly ON layers (pool_kind, pool_key) WHERE kind = 'weekly';

-- The weekly shifts of today become each pool's "weekly shifts" layer: nothing is lost.
INSERT INTO layers (layer_id, pool_kind, pool_key, name, priority, kind)
    SELECT gen_random_uuid(), pool_kind, pool_key, 'weekly shifts', 0, 'weekly'
    FROM shifts GROUP BY pool_kind, pool_key;

CREATE TABLE rotations (
    layer_id     uuid PRIMARY KEY REFERENCES layers ON DELETE CASCADE,
    time_zone    text NOT NULL,
    start_date   date NOT NULL,
    handoff      time NOT NULL,
    shift_length integer NOT NULL CHECK (shift_length > 0),
    shift_unit   text NOT NULL CHECK (shift_unit IN ('hours', 'days', 'weeks')),
    participants uuid[] NOT NULL CHECK (cardinality(participants) > 0)
);
CREATE INDEX rotations_by_participant ON rotations USING gin (participants);

-- An imported calendar, expanded at import over its horizon.
CREATE TABLE calendar_shifts (
    layer_id  uuid NOT NULL REFERENCES layers ON DELETE CASCADE,
    coach_id  uuid NOT NULL REFERENCES coaches ON DELETE CASCADE,
    starts_at timestamptz NOT NULL,
    ends_at   timestamptz NOT NULL CHECK (ends_at > starts_at)
);
CREATE INDEX calendar_shifts_by_layer ON calendar_shifts (layer_id, ends_at);
CREATE INDEX calendar_shifts_by_coach ON calendar_shifts (coach_id);

CREATE TABLE temporary_schedules (
    temporary_id uuid PRIMARY KEY,
    pool_kind    text NOT NULL CHECK (pool_kind IN ('site', 'state')),
    pool_key     text NOT NULL,
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL CHECK (ends_at > starts_at),
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX temporary_schedules_by_pool ON temporary_schedules (pool_kind, pool_key, ends_at);
CREATE TABLE temporary_shifts (
    temporary_id uuid NOT NULL REFERENCES temporary_schedules ON DELETE CASCADE,
    coach_id     uuid NOT NULL REFERENCES coaches ON DELETE CASCADE,
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL CHECK (ends_at > starts_at)
);
CREATE INDEX temporary_shifts_by_schedule ON temporary_shifts (temporary_id);
CREATE INDEX temporary_shifts_by_coach ON temporary_shifts (coach_id);

-- A private iCalendar feed per coach or per site: only the token's SHA-256 is kept.
CREATE TABLE calendar_tokens (
    token_id   uuid PRIMARY KEY,
    token_hash bytea NOT NULL UNIQUE,
    coach_id   uuid REFERENCES coaches ON DELETE CASCADE,
    site_id    text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((coach_id IS NULL) <> (site_id IS NULL))
);

-- An override without a pool applies to every pool (a coach who texted OFF); only a
-- remove may. `source` tells a coach's own OFF (sms) from a coordinator's change.
ALTER TABLE overrides
    ALTER COLUMN pool_kind DROP NOT NULL,
    ALTER COLUMN pool_key DROP NOT NULL,
    ADD COLUMN source text NOT NULL DEFAULT 'admin' CHECK (source IN ('admin', 'sms')),
    ADD CONSTRAINT overrides_every_pool_only_removes CHECK (
        (pool_kind IS NULL) = (pool_key IS NULL) AND (pool_kind IS NOT NULL OR kind = 'remove'));
CREATE INDEX overrides_every_pool ON overrides (ends_at) WHERE pool_kind IS NULL;

-- Bumped by any change to what decides the on-call, so each process's cache of computed
-- on-call knows when to recompute; `epoch` tells one database from another.
CREATE TABLE schedule_version (
    single  boolean PRIMARY KEY DEFAULT true CHECK (single),
    epoch   uuid NOT NULL DEFAULT gen_random_uuid(),
    version bigint NOT NULL DEFAULT 0
);
INSERT INTO schedule_version DEFAULT VALUES;

CREATE FUNCTION bump_schedule_version() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE schedule_version SET version = version + 1;
    RETURN NULL;
END $$;

CREATE TRIGGER shifts_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON shifts
    FOR EACH STATEMENT EXECUTE FUNCTION bump_schedule_version();
CREATE TRIGGER overrides_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON overrides
    FOR EACH STATEMENT EXECUTE FUNCTION bump_schedule_version();
CREATE TRIGGER layers_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON layers
    FOR EACH STATEMENT EXECUTE FUNCTION bump_schedule_version();
CREATE TRIGGER rotations_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON rotations
    FOR EACH STATEMENT EXECUTE FUNCTION bump_schedule_version();
CREATE TRIGGER calendar_shifts_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON calendar_shifts FOR EACH STATEMENT EXECUTE FUNCTION bump_schedule_version();
CREATE TRIGGER temporary_schedules_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON temporary_schedules FOR EACH STATEMENT EXECUTE FUNCTION bump_schedule_version();
CREATE TRIGGER temporary_shifts_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON temporary_shifts FOR EACH STATEMENT EXECUTE FUNCTION bump_schedule_version();
