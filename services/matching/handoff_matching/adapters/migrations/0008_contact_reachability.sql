-- Contact methods notify no longer sends to, as notify reported them
-- (ContactMethodReachabilityChanged, docs/decisions/0019). A coach all of whose roster
-- methods are unreachable is asked nothing; one who is reachable again (START, a
-- coordinator's clearing) frees a slot, and `changed_at` tells which bounced offers came
-- before it. A method never reported has no row: in good standing.
CREATE TABLE contact_reachability (
    channel     text NOT NULL,
    destination text NOT NULL,
    reachable   boolean NOT NULL,
    reason      text NOT NULL,  -- stop_keyword | start_keyword | provider:<code> | admin
    changed_at  timestamptz NOT NULL,
    PRIMARY KEY (channel, destination)
);
