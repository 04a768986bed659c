-- Contact methods whose offer pages are over OFFERS_PER_15_MINUTES, until a slot of the
-- window frees (fresh28, break 2): matching is told once that the method is out of good
-- standing, and once that it is back (a timer at `until`), so it asks other coaches
-- meanwhile instead of holding a referral on a page that cannot leave (decision 0032).
CREATE TABLE notify.throttled_methods (
    channel     text NOT NULL,
    destination text NOT NULL,
    until       timestamptz NOT NULL,
    since       timestamptz NOT NULL,
    PRIMARY KEY (channel, destination)
);
