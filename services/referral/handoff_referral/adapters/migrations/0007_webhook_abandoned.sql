-- Deliveries dropped because the site's callback was removed (`webhooks remove`, or DELETE
-- on the admin API) are `abandoned`, not `failed`: nobody gave up on a site that answered
-- badly. Replayable like failed ones once a callback is set again.
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_state_check;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_state_check
    CHECK (state IN ('pending', 'delivered', 'failed', 'abandoned'));

-- False until a sender has counted the row in handoff_webhook_deliveries_total
-- {outcome="abandoned"}: the CLI that abandons it runs in a process of its own, whose
-- counters nobody scrapes, so a serving process counts it (once: an UPDATE … RETURNING).
ALTER TABLE webhook_deliveries ADD COLUMN abandon_counted boolean NOT NULL DEFAULT true;
CREATE INDEX webhook_deliveries_abandon_uncounted ON webhook_deliveries (site_id)
    WHERE NOT abandon_counted;
