"""`bench/e2e.py --statements`: whose each statement is, and the lines a step prints."""

from bench.e2e import StatementFigures, statement_lines


def test_each_statement_is_put_to_the_schema_it_names() -> None:
    owners = {
        StatementFigures(query, 1, 0.1).owner
        for query in (
            "BEGIN",
            "commit",
            'INSERT INTO "notify".processed_events (consumer_group) VALUES ($1)',
            "SELECT coach_id FROM matching.dispatches, unnest(holding) AS coach_id",
            "WITH entry AS (INSERT INTO referral.timeline (referral_id) VALUES ($1))",
            "SELECT pg_advisory_xact_lock(key) FROM unnest($1::bigint[]) AS key",
        )
    }
    assert owners == {"transaction", "notify", "matching", "referral", "other"}


def test_a_column_named_like_a_schema_is_not_a_schema() -> None:
    """`o.referral_id` names a column of alias `o`, not the referral schema."""
    figures = StatementFigures("SELECT o.referral_id FROM notify.offers o", 1, 0.1)
    assert figures.owner == "notify"


def test_the_lines_give_statements_per_referral_and_the_costliest_first() -> None:
    lines = statement_lines(
        [
            StatementFigures("BEGIN", 200, 2.0),
            StatementFigures("SELECT pg_advisory_xact_lock(1)", 100, 1150.0),
            StatementFigures("SELECT 1 FROM matching.dispatches", 300, 30.0),
        ],
        referrals=100,
        top=2,
    )
    assert lines[0] == (
        "    statements per referral: 6.0 (matching 3.0, transaction 2.0, other 1.0)"
    )
    assert "11.50 ms per referral ( 1.00 x  11.50 ms)  SELECT pg_advisory_xact_lock(1)" in lines[1]
    assert "matching.dispatches" in lines[2]
    assert len(lines) == 3
