"""A follow-up reminder's text (issue #16): the window, the site and the link, no patient
data, one GSM-7 segment however long the site's name and the public URL allowed."""

from uuid import uuid4

import pytest
from pydantic import ValidationError

from handoff_notify.domain import content
from handoff_notify.settings import NotifySettings
from handoff_platform.links import FOLLOW_UP_LINK, LinkSigner
from handoff_platform.sms_text import GSM7


def _link(base: str) -> str:
    return f"{base}/f/{LinkSigner('s', FOLLOW_UP_LINK).token(uuid4())}"


def test_the_reminder_reads_as_promised() -> None:
    link = _link("https://r.example.org")
    reminder = content.reminder("St. Elsewhere ED", 30, link)
    assert reminder.text == (
        f"Handoff: a 30-day follow-up call for St. Elsewhere ED is due. Open: {link}"
    )
    assert len(reminder.text) <= content.SMS_SEGMENT
    assert set(reminder.text) <= GSM7
    assert "30-day follow-up" in reminder.subject


def test_a_long_site_name_is_shortened_to_keep_one_segment_with_the_longest_url() -> None:
    longest = "https://" + "r" * (content.reminder_link_room() - 41 - 8)
    link = _link(longest)
    reminder = content.reminder("Johns Hopkins Bayview Medical Center ED", 365, link)
    assert len(reminder.text) <= content.SMS_SEGMENT
    assert reminder.text.endswith(link)
    assert "Johns " in reminder.text  # shortened, never below six characters
    assert "Bayview" not in reminder.text


def test_a_referral_url_too_long_for_one_segment_reminders_is_refused_at_start_up() -> None:
    fits = "https://" + "r" * (content.reminder_link_room() - 41 - 8)
    NotifySettings(
        database_url="postgresql://x/y",
        notify_link_secret="s",
        notify_delivery="sandbox",
        referral_public_url=fits,
    )
    with pytest.raises(ValidationError, match="REFERRAL_PUBLIC_URL is"):
        NotifySettings(
            database_url="postgresql://x/y",
            notify_link_secret="s",
            notify_delivery="sandbox",
            referral_public_url=fits + "r",
        )


def test_the_answer_to_a_reply_points_to_the_link_in_one_segment() -> None:
    longest = "https://" + "r" * (content.reminder_link_room() - 41 - 8)
    answer = content.reminder_reply(_link(longest))
    assert len(answer) <= content.SMS_SEGMENT
    assert "/f/" in answer
    assert len(content.reminder_reply(None)) <= content.SMS_SEGMENT
