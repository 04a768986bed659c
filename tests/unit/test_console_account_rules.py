"""What a console account may be named and scoped to (pure rules, no I/O)."""

import pytest

from handoff_console.domain.account_rules import (
    InvalidAccount,
    site_ids,
    state_codes,
    username_key,
)
from handoff_schemas.vocabulary import US_STATES


def test_a_username_is_stored_trimmed_and_lower_cased() -> None:
    assert username_key(" Dana ") == "dana"
    assert username_key("MD-Coordinator") == "md-coordinator"
    assert username_key("d.reyes@example") == "d.reyes@example"


@pytest.mark.parametrize("bad", ["", "   ", "dana reyes", "-dana", "x" * 65, "da\nna", "dana\t1"])
def test_a_username_that_cannot_be_typed_on_one_line_is_refused(bad: str) -> None:
    with pytest.raises(InvalidAccount) as refused:
        username_key(bad)
    assert refused.value.option == "--username"


def test_states_are_the_50_states_dc_and_the_inhabited_territories() -> None:
    assert len(US_STATES) == 56
    assert {"MD", "RI", "VT", "DC", "PR", "GU", "VI", "AS", "MP"} <= US_STATES
    assert state_codes(["md", "VT", "MD"]) == ["MD", "VT"]
    for bad in ("ZZ", "AA", "M", "Maryland"):
        with pytest.raises(InvalidAccount) as refused:
            state_codes(["MD", bad])
        assert refused.value.option == "--state"
        assert repr(bad.upper()) in refused.value.message


def test_site_ids_take_the_referral_services_form() -> None:
    assert site_ids(["md-mercy", "md-mercy", "ri-bay"]) == ["md-mercy", "ri-bay"]
    for bad in ("MD-Mercy", "-md", "m", "md mercy", "x" * 41):
        with pytest.raises(InvalidAccount) as refused:
            site_ids([bad])
        assert refused.value.option == "--site"
