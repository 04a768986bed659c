-- Follow-ups after the bedside visit (issue #16, decision 0025).

-- Days after a visit each follow-up window opens; validated 1..365 ascending by the
-- service. The program's usual schedule is the default.
ALTER TABLE sites ADD COLUMN follow_up_days integer[] NOT NULL DEFAULT '{1,30,90}';

-- The offer each referral's coach accepted (CoachAssigned): the visit page's link names
-- the offer, and only the accepted offer's coach records the visit.
CREATE TABLE accepted_offers (
    offer_id    uuid PRIMARY KEY,
    referral_id uuid NOT NULL REFERENCES referrals,
    coach_id    uuid NOT NULL,
    assigned_at timestamptz NOT NULL
);
CREATE INDEX accepted_offers_by_referral ON accepted_offers (referral_id);

-- One visit record per referral: the primary key is what makes a second submit unable to
-- publish a second VisitRecorded. Outcomes are 42 CFR Part 2 data: kept here for the
-- record, sent only in VisitRecorded (for the reports read model).
CREATE TABLE visits (
    referral_id        uuid PRIMARY KEY REFERENCES referrals,
    offer_id           uuid NOT NULL,
    coach_id           uuid NOT NULL,
    site_id            text NOT NULL REFERENCES sites,
    follow_up_consent  boolean NOT NULL,
    outcomes           text[] NOT NULL,
    recorded_at        timestamptz NOT NULL,
    consent_revoked_at timestamptz
);

-- The patient's callback number and preferred times: the most sensitive data Handoff
-- keeps. One Fernet token (MultiFernet, FOLLOW_UP_KEYS) of their JSON; the row is deleted
-- when consent is revoked or a result ends follow-up (not flagged: gone).
CREATE TABLE follow_up_contacts (
    referral_id uuid PRIMARY KEY REFERENCES visits,
    sealed      bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One task per window of the site's schedule. `attempt` is the current attempt (from 1);
-- `due_at` its due time (the window's opening for attempt 1). state: scheduled (timer
-- set), due (FollowUpDue sent, waiting for the coach's result), reached, readmitted,
-- not_reached, closed (a result ended every task), cancelled (consent revoked).
CREATE TABLE follow_up_tasks (
    task_id         uuid PRIMARY KEY,
    referral_id     uuid NOT NULL REFERENCES visits,
    site_id         text NOT NULL REFERENCES sites,
    coach_id        uuid NOT NULL,
    window_days     integer NOT NULL CHECK (window_days BETWEEN 1 AND 365),
    window_opens_at timestamptz NOT NULL,
    window_ends_at  timestamptz NOT NULL,
    attempt         integer NOT NULL DEFAULT 1,
    due_at          timestamptz NOT NULL,
    state           text NOT NULL DEFAULT 'scheduled',
    closed_at       timestamptz,
    UNIQUE (referral_id, window_days)
);

-- Who matching gave each attempt to (FollowUpAssigned); the latest per (task, attempt)
-- is the one whose link shows the number, an older one says "given to another coach".
CREATE TABLE follow_up_assignments (
    assignment_id uuid PRIMARY KEY,
    task_id       uuid NOT NULL,
    attempt       integer NOT NULL,
    coach_id      uuid NOT NULL,
    assigned_at   timestamptz NOT NULL
);
CREATE INDEX follow_up_assignments_by_attempt
    ON follow_up_assignments (task_id, attempt, assigned_at DESC);

-- Each attempt's result, as the coach recorded it; one per (task, attempt).
CREATE TABLE follow_up_attempts (
    task_id      uuid NOT NULL REFERENCES follow_up_tasks,
    attempt      integer NOT NULL,
    coach_id     uuid NOT NULL,
    result       text NOT NULL,
    outcomes     text[] NOT NULL,
    attempted_at timestamptz NOT NULL,
    PRIMARY KEY (task_id, attempt)
);
