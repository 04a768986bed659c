-- Follow-up reminders (issue #16): one per FollowUpAssigned and contact method reminded
-- (the coach's first SMS, first email and first webhook), with the send state machine of
-- the supervisors' notices: pending -> sending -> sent | failed | cancelled. Sent at most
-- once: a send whose outcome was lost is failed, never repeated. No patient data: the
-- body is rendered at send time from the site's short name, the window and the link.
CREATE TABLE notify.reminders (
    reminder_id      uuid PRIMARY KEY,
    event_id         uuid NOT NULL,
    contact_index    int NOT NULL,
    assignment_id    uuid NOT NULL,
    task_id          uuid NOT NULL,
    attempt          int NOT NULL,
    referral_id      uuid NOT NULL,
    coach_id         uuid NOT NULL,
    correlation_id   text NOT NULL,
    site_short_name  text NOT NULL,
    window_days      int NOT NULL,
    channel          text NOT NULL,
    destination      text NOT NULL,
    state            text NOT NULL,   -- pending | sending | sent | failed | cancelled
    attempts         int NOT NULL DEFAULT 0,
    due_at           timestamptz NOT NULL DEFAULT now(),
    sending_deadline timestamptz,
    provider_ref     text,
    sent_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (event_id, contact_index)
);
CREATE INDEX reminders_due ON notify.reminders (due_at) WHERE state = 'pending';
CREATE INDEX reminders_sending ON notify.reminders (sending_deadline) WHERE state = 'sending';
CREATE INDEX reminders_of_task ON notify.reminders (task_id, attempt);
CREATE INDEX reminders_of_referral ON notify.reminders (referral_id);
CREATE INDEX reminders_recent ON notify.reminders (destination, sent_at) WHERE sent_at IS NOT NULL;

-- Attempts no reminder is sent for any more: recorded (FollowUpAttempted), or every one of
-- a referral's when its follow-up consent was revoked (attempt 0, task NULL). Kept so a
-- FollowUpAssigned heard after them (another topic, another partition) queues nothing.
CREATE TABLE notify.follow_ups_closed (
    referral_id uuid NOT NULL,
    task_id     uuid,
    attempt     int NOT NULL,
    closed_at   timestamptz NOT NULL,
    reason      text NOT NULL  -- attempted | consent_revoked
);
CREATE UNIQUE INDEX follow_ups_closed_key
    ON notify.follow_ups_closed (referral_id, coalesce(task_id, '00000000-0000-0000-0000-000000000000'::uuid), attempt);
CREATE INDEX follow_ups_closed_task ON notify.follow_ups_closed (task_id, attempt);
