-- Follow-up attempts (issue #16): who each one was given to. One row per (task, attempt):
-- a FollowUpDue heard again (redelivered, or published twice) finds its row and assigns
-- nothing more. `assignment_id` is NULL while nobody could be given it (a timer tries
-- again until `window_ends_at`); a re-assignment gives the row a new one.
CREATE TABLE follow_ups (
    task_id        uuid NOT NULL,
    attempt        int NOT NULL,
    referral_id    uuid NOT NULL,
    correlation_id text NOT NULL,
    site_id        text NOT NULL,
    window_days    int NOT NULL,
    visiting_coach uuid NOT NULL,
    due_at         timestamptz NOT NULL,
    window_ends_at timestamptz NOT NULL,
    state          text NOT NULL CHECK (state IN ('waiting', 'assigned', 'attempted', 'lapsed', 'cancelled')),
    assignment_id  uuid UNIQUE,
    coach_id       uuid,
    assignee       text,
    assigned_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, attempt)
);
CREATE INDEX follow_ups_assigned_coach ON follow_ups (coach_id) WHERE state = 'assigned';
