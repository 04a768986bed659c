"""The SMS reply spool (issue 13): what a reply was read as survives a round trip through the
file without its text, and a replay cut short by another outage applies nothing twice."""

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from handoff_notify.adapters.reply_spool import ReplySpool, SpooledReply
from handoff_notify.app import reply_spool_path
from handoff_notify.domain.replies import (
    Answer,
    Keyword,
    NotUnderstood,
    ReplyReading,
    SeveralCodes,
    Unclear,
    read_reply,
)
from handoff_notify.settings import NotifySettings
from handoff_schemas.vocabulary import CoachResponse

TYPED = [
    "1",
    "yes B",
    "2 C",
    "no ok",
    "STOP",
    "yes",
    "start",
    "HELP",
    "OFF",
    "my patient J.D.",
    "1E 1F",
]


@pytest.mark.parametrize("typed", TYPED)
def test_a_reading_round_trips_through_json_without_the_text(typed: str) -> None:
    reading = read_reply(typed)
    line = SpooledReply("+14105550100", reading, datetime.now(UTC)).to_line()
    assert SpooledReply.from_line(line).reading == reading
    assert "patient" not in line.lower()  # free text a coach typed is never kept


def test_a_reply_naming_several_codes_kept_before_each_had_its_own_answer_still_reads() -> None:
    """A spool written by the previous release ("several": codes and one answer) is
    replayed by this one after an upgrade; losing the coach's reply is not an option."""
    several = '{"kind": "several", "codes": ["B", "C"], "response": "declined"}'
    line = (
        f'{{"phone": "+14105550100", "reading": {{"usual": {several}, "if_opted_out": '
        f'{several}}}, "received_at": "2026-12-02T05:34:57+00:00"}}'
    )
    declined = CoachResponse.DECLINED
    assert SpooledReply.from_line(line).reading.usual == SeveralCodes(
        (("B", declined), ("C", declined))
    )


def test_a_bare_yes_is_read_both_ways_for_the_senders_standing() -> None:
    reading = read_reply("yes")
    assert reading.for_standing(opted_out=False) == Answer(CoachResponse.ACCEPTED)
    assert reading.for_standing(opted_out=True) == Keyword.OPT_IN


def test_every_kind_of_reply_is_kept() -> None:
    kinds = {type(read_reply(typed).usual) for typed in TYPED}
    assert kinds == {Answer, Keyword, NotUnderstood, Unclear, SeveralCodes}


def _reply(code: str) -> SpooledReply:
    reading = ReplyReading(Answer(CoachResponse.ACCEPTED, code), Keyword.OPT_IN)
    return SpooledReply("+14105550100", reading, datetime.now(UTC))


async def test_a_replay_cut_short_resumes_after_the_last_reply_applied(tmp_path: Path) -> None:
    spool = ReplySpool(tmp_path / "sms-replies.jsonl")
    for code in "BCD":
        await spool.keep(_reply(code))
    applied: list[str | None] = []

    async def fails_on_d(reply: SpooledReply) -> None:
        answer = reply.reading.usual
        assert isinstance(answer, Answer)
        if answer.code == "D":
            raise ConnectionRefusedError("the database went away again")
        applied.append(answer.code)

    with pytest.raises(ConnectionRefusedError):
        await spool.replay(fails_on_d)
    await spool.keep(_reply("E"))  # arrives during the second outage
    assert spool.waiting()

    async def record(reply: SpooledReply) -> None:
        answer = reply.reading.usual
        assert isinstance(answer, Answer)
        applied.append(answer.code)

    assert await spool.replay(record) == 1  # D, from the interrupted file
    assert await spool.replay(record) == 1  # E, from the new one
    assert applied == ["B", "C", "D", "E"]
    assert not spool.waiting()


async def test_an_unreadable_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "sms-replies.jsonl"
    spool = ReplySpool(path)
    await spool.keep(_reply("B"))
    with path.open("a") as spooled:
        spooled.write('{"phone": "+1", "reading": {"usual": {"kind": "mystery"}}}\n')
    await spool.keep(_reply("C"))
    seen: list[SpooledReply] = []

    async def record(reply: SpooledReply) -> None:
        seen.append(reply)

    assert await spool.replay(record) == 2
    assert len(seen) == 2


def test_an_unwritable_spool_directory_is_one_line_and_exit_2_at_start(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("")
    env = {
        **os.environ,
        "DATABASE_URL": "postgresql://notify@127.0.0.1:1/handoff",
        "NOTIFY_LINK_SECRET": "secret",
        "NOTIFY_REPORT_SPOOL": str(not_a_directory / "spool" / "delivery-reports.jsonl"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "handoff_cli", "notify", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("configuration error: NOTIFY_REPORT_SPOOL:")
    assert "not a directory" in line


async def test_a_spool_in_a_folder_not_made_yet_makes_it_when_it_first_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18, finding 6: `NOTIFY_REPORT_SPOOL=/nonexistent/dir/x` starts without a word.
    That is right as long as the folder can be made (the settings refuse one that cannot,
    above): the spool makes it when an outage first gives it something to keep."""
    report_spool = tmp_path / "not" / "made" / "delivery-reports.jsonl"
    monkeypatch.setenv("DATABASE_URL", "postgresql://notify@127.0.0.1:1/handoff")
    monkeypatch.setenv("NOTIFY_LINK_SECRET", "secret")
    monkeypatch.setenv("NOTIFY_DELIVERY", "sandbox")
    monkeypatch.setenv("NOTIFY_REPORT_SPOOL", str(report_spool))
    settings = NotifySettings()
    assert not report_spool.parent.exists()

    spool = ReplySpool(reply_spool_path(settings))
    await spool.keep(_reply("B"))
    seen: list[SpooledReply] = []

    async def record(reply: SpooledReply) -> None:
        seen.append(reply)

    assert await spool.replay(record) == 1
    assert report_spool.parent.is_dir()
