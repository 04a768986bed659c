-- The timeline records each occurrence of a step, not each step once: a referral can be
-- offered, wait in line and be offered again, and every offer that ends without a coach
-- is an entry of its own. seq orders entries that share a time.
ALTER TABLE timeline ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE timeline DROP CONSTRAINT timeline_pkey;
ALTER TABLE timeline ADD PRIMARY KEY (referral_id, seq);
