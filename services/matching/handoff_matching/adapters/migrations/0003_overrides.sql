-- Changes to the rota for a window: a coach added, removed, or replacing another.
CREATE TABLE overrides (
    override_id uuid PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('add', 'remove', 'replace')),
    pool_kind   text NOT NULL CHECK (pool_kind IN ('site', 'state')),
    pool_key    text NOT NULL,
    coach_id    uuid NOT NULL REFERENCES coaches ON DELETE CASCADE,
    replaces    uuid REFERENCES coaches ON DELETE CASCADE,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL CHECK (ends_at > starts_at),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((kind = 'replace') = (replaces IS NOT NULL))
);
CREATE INDEX overrides_by_pool ON overrides (pool_kind, pool_key, ends_at);
