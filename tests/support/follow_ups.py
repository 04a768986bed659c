"""Follow-up test settings and the consenting patient's number, which must never show up
in an event, a log line, a metric or a message body (only sealed in the referral schema)."""

FOLLOW_UP_KEYS = "cbvUsSD0F6ZBAOSX5puB1XJzLvq_EI9CAdSinaCLHdo="
"""A Fernet key for tests only."""
NEXT_FOLLOW_UP_KEY = "9RuZLi4R21PI4BqKPkWSgvd31kEdrdqj8Yratug13Ng="
"""A second test key, for rotation."""
FOLLOW_UP_LINK_SECRET = "follow-up-links-in-tests"

FOLLOW_UP_PHONE_TYPED = "(443) 555-0187"
FOLLOW_UP_PHONE = "+14435550187"
FOLLOW_UP_PHONE_DIGITS = "4435550187"
"""Found in any format the number could leak in (E.164, digits)."""

FOLLOW_UP_ENV = {"FOLLOW_UP_KEYS": FOLLOW_UP_KEYS, "FOLLOW_UP_LINK_SECRET": FOLLOW_UP_LINK_SECRET}
