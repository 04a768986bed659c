"""bench/profiles.py reads py-spy's collapsed stacks into shares by package and function."""

from pathlib import Path

from bench.profiles import Profile, package_of

COLLAPSED = """\
main (handoff_cli/__main__.py:3);run (asyncio/runners.py:190);fetch (asyncpg/connection.py:690) 30
<module> (handoff_cli/__main__.py:3);run (asyncio/runners.py:190);dumps (json/__init__.py:231) 10
<module> (handoff_cli/__main__.py:3);rank (handoff_matching/domain/ranking.py:88) 60
"""


def test_self_time_is_counted_against_the_innermost_frames_package(tmp_path: Path) -> None:
    path = tmp_path / "matching.txt"
    path.write_text(COLLAPSED)

    profile = Profile.read(path)

    assert profile.samples == 100
    assert profile.by_package == {"handoff": 60, "asyncpg": 30, "json": 10}
    assert profile.by_function.most_common(1) == [("rank (handoff_matching/domain/ranking.py)", 60)]
    assert profile.summary(packages=2, functions=1) == (
        "handoff 60%, asyncpg 30% | rank (handoff_matching/domain/ranking.py) 60%"
    )


def test_a_profile_py_spy_never_wrote_is_empty_not_an_error(tmp_path: Path) -> None:
    profile = Profile.read(tmp_path / "absent.txt")

    assert profile.samples == 0
    assert profile.summary() == "no samples"


def test_packages_are_named_as_py_spy_shortens_their_files() -> None:
    assert package_of("asyncpg/pool.py") == "asyncpg"
    assert package_of("handoff_notify/delivery.py") == "handoff"
    assert package_of("<frozen importlib._bootstrap>") == "<frozen importlib._bootstrap>"
    assert package_of("typing.py") == "typing"
