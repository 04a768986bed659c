-- The phones each coach's roster entry lists (CoachPhonesChanged from matching): a text
-- from a number on none of them is told it is not registered, not answered as a coach's.
-- A coach's rows are replaced by each event; an inactive coach has none.
CREATE TABLE notify.coach_phones (
    coach_id   uuid NOT NULL,
    phone      text NOT NULL,
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (coach_id, phone)
);
CREATE INDEX coach_phones_phone ON notify.coach_phones (phone);
