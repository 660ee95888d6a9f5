"""Credentials: made here, stored as hashes, parsed strictly; principals reach only their own."""

from __future__ import annotations

import pytest

from outpost.fleet.credentials import (
    Kind,
    Principal,
    check_device_id,
    hash_secret,
    make_credential,
    parse_credential,
    secret_matches,
)
from outpost.fleet.errors import ForbiddenError, InvalidError


@pytest.mark.parametrize("name", ["gw-1", "a.b:c@d$e", "x" * 128, "ünï"])
def test_a_credential_round_trips_and_names_its_owner(name: str) -> None:
    credential = make_credential(Kind.DEVICE, name)
    parsed = parse_credential(str(credential))
    assert parsed == credential
    assert secret_matches(parsed.secret, hash_secret(credential.secret))


@pytest.mark.parametrize("text", ["", "x", "dev..s", "dev.@@@.s", "adm.Z3c.s", "op.Z3c.", "dev.Z3c.s.t"])
def test_malformed_credentials_are_none(text: str) -> None:
    assert parse_credential(text) is None


def test_stored_hash_is_not_the_secret_and_a_wrong_secret_fails() -> None:
    credential = make_credential(Kind.OPERATOR, "admin")
    stored = hash_secret(credential.secret)
    assert credential.secret not in stored
    assert not secret_matches("guess", stored)
    assert not secret_matches(credential.secret, None)


def test_principals_reach_only_their_own() -> None:
    device = Principal(Kind.DEVICE, "a")
    operator = Principal(Kind.OPERATOR, "admin")
    device.require_device("a")
    device.require_this_device("a")
    operator.require_device("b")
    operator.require_operator()
    with pytest.raises(ForbiddenError):
        device.require_device("b")
    with pytest.raises(ForbiddenError):
        device.require_operator()
    with pytest.raises(ForbiddenError):
        operator.require_this_device("a")


@pytest.mark.parametrize("bad", ["", "has space", "slash/y", "x" * 129, "new\nline"])
def test_device_ids_follow_iot_hubs_rules(bad: str) -> None:
    with pytest.raises(InvalidError, match="invalid device id"):
        check_device_id(bad)
