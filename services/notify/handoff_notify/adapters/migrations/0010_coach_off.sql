-- A coach's own OFF as notify last sent it (CoachAvailabilityChanged), by phone: so ON can
-- say whether anything was off (issue #15: "you were not marked off" rather than a false
-- "available again"), and the coach's page can show "off call until ...". Matching keeps
-- the override itself; this is only what notify needs to answer truthfully.
CREATE TABLE notify.coach_off (
    phone      text PRIMARY KEY,
    off_until  timestamptz NOT NULL,
    changed_at timestamptz NOT NULL
);
