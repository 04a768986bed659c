"""The API key cache never outlives a revocation it heard of, nor caches while deaf."""

from handoff_referral.adapters.key_cache import KeyCache
from handoff_referral.domain.referral import Site

SITE = Site("md-a", "A", "A ED", "MD", "America/New_York")


def _listening_cache() -> KeyCache:
    cache = KeyCache("postgresql://unused")
    cache._listening = True  # as once its LISTEN connection is up
    return cache


def test_nothing_is_cached_while_not_listening_for_revocations() -> None:
    cache = KeyCache("postgresql://unused")
    cache.put("k1", SITE, b"h", cache.revocations_seen())
    assert cache.get("k1") is None


def test_a_cached_key_is_dropped_when_its_revocation_arrives() -> None:
    cache = _listening_cache()
    cache.put("k1", SITE, b"h", cache.revocations_seen())
    cached = cache.get("k1")
    assert cached is not None
    assert cached.site == SITE
    cache._on_revoked(None, 0, "handoff_api_keys", "k1")  # type: ignore[arg-type]
    assert cache.get("k1") is None


def test_a_lookup_that_raced_a_revocation_is_not_cached() -> None:
    cache = _listening_cache()
    seen = cache.revocations_seen()
    cache._on_revoked(None, 0, "handoff_api_keys", "k1")  # type: ignore[arg-type]
    cache.put("k1", SITE, b"h", seen)
    assert cache.get("k1") is None


def test_entries_expire() -> None:
    cache = _listening_cache()
    cache.ttl_seconds = -1
    cache.put("k1", SITE, b"h", cache.revocations_seen())
    assert cache.get("k1") is None
