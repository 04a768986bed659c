-- What a timeline step says beyond its name (issue #12): an `offered` step stands for one
-- batch of offers made at once (a broadcast), `coaches` of them, found again by
-- `batch_id` so the batch's later offers add no step; an `accepted` step names the coach
-- who accepted and the time the ED expects them (`arrive_by`). Older rows carry none.
ALTER TABLE timeline
    ADD COLUMN coaches int,
    ADD COLUMN batch_id uuid,
    ADD COLUMN coach_id uuid,
    ADD COLUMN arrive_by timestamptz;
CREATE UNIQUE INDEX timeline_offer_batch ON timeline (referral_id, batch_id)
    WHERE batch_id IS NOT NULL;
