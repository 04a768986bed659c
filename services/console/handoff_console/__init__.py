"""The coordinator console: a web app for program coordinators and supervisors over the
referral, matching and notify services' admin APIs (decision 0023)."""

SCHEMA = "console"
