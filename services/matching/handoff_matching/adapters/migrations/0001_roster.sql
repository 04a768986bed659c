CREATE TABLE coaches (
    coach_id        uuid PRIMARY KEY,
    display_name    text NOT NULL,
    contact_methods jsonb NOT NULL,  -- in order of preference
    languages       text[] NOT NULL,
    gender          text,
    lived_experience text[] NOT NULL,
    veteran         boolean NOT NULL,
    lgbtq_affirming boolean NOT NULL,
    telehealth      boolean NOT NULL,
    max_concurrent  integer NOT NULL CHECK (max_concurrent > 0),
    home_sites      text[] NOT NULL,
    active          boolean NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE certifications (
    coach_id   uuid NOT NULL REFERENCES coaches ON DELETE CASCADE,
    state      char(2) NOT NULL,
    credential text NOT NULL,
    expires_on date NOT NULL,
    PRIMARY KEY (coach_id, state, credential)
);

-- Weekly shifts in the rota's wall-clock time zone; see domain/schedules.py.
CREATE TABLE shifts (
    shift_id  bigserial PRIMARY KEY,
    coach_id  uuid NOT NULL REFERENCES coaches ON DELETE CASCADE,
    pool_kind text NOT NULL CHECK (pool_kind IN ('site', 'state')),
    pool_key  text NOT NULL,
    weekday   smallint NOT NULL CHECK (weekday BETWEEN 0 AND 6),
    starts    time NOT NULL,
    ends      time NOT NULL,
    time_zone text NOT NULL
);
CREATE INDEX shifts_by_pool ON shifts (pool_kind, pool_key);
