-- How many times in a row a timer's firing was put off because the row its handler acts
-- on was held (decision 0033): each deferral waits twice as long, up to a second, so a
-- row held for long is not retried twenty times a second. Setting the timer resets it.
ALTER TABLE timers ADD COLUMN deferrals integer NOT NULL DEFAULT 0;
