-- Load-aware dispatch and the waiting line (docs/decisions/0014).
ALTER TABLE site_settings
    ADD COLUMN page_deadline_seconds integer NOT NULL DEFAULT 60
        CHECK (page_deadline_seconds > 0),
    ADD COLUMN reoffer_every_seconds integer NOT NULL DEFAULT 300
        CHECK (reoffer_every_seconds > 0),
    ADD COLUMN give_up_after_seconds integer NOT NULL DEFAULT 14400
        CHECK (give_up_after_seconds > 0);

-- holding: the coaches whose capacity the referral holds (its open offers' coaches and
-- its assigned coach), so a coach's load is one indexed count across every site.
-- line_priority: the waiting line's order is urgency, then arrival (created_at).
ALTER TABLE dispatches
    ADD COLUMN holding uuid[] NOT NULL DEFAULT '{}',
    ADD COLUMN line_priority smallint NOT NULL DEFAULT 1;
UPDATE dispatches SET line_priority = CASE document->'facts'->>'urgency'
        WHEN 'emergent' THEN 0 WHEN 'urgent' THEN 1 ELSE 2 END;
UPDATE dispatches SET holding = ARRAY[assigned_coach] WHERE state = 'assigned';
UPDATE dispatches d SET holding = coalesce((
        SELECT array_agg((o->>'coach_id')::uuid) FROM jsonb_array_elements(d.document->'offers') o
        WHERE o->>'state' = 'open'), '{}')
    WHERE state = 'offering';
CREATE INDEX dispatches_holding ON dispatches USING gin (holding);
CREATE INDEX dispatches_in_line ON dispatches (line_priority, created_at, referral_id)
    WHERE state IN ('waiting', 'unassigned');
