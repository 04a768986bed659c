-- The referrals still waiting for a coach, counted every few seconds for the SREs' alert.
CREATE INDEX dispatches_offering ON dispatches (created_at) WHERE state = 'offering';
