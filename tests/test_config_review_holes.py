"""Holes a new user's review found in the config boundary (December 2026, second round), each
refused before any resource is registered with one error at its exact key path and its fix:
signed uids, PostgreSQL major upgrades hidden in a pgvector tag, a management network that
overlaps another network of the stack, service names that are the host's own directories,
maintenance windows far from today, and the error paths of the CLIs."""

from __future__ import annotations

import pytest

from tests.test_config_boundary import _has, _problems

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("user,part", [("-0", "-0"), ("-0:-0", "-0"), ("+0:+0", "+0"), ("1000:-0", "-0"),
                                       ("+1000", "+1000")])
def test_a_signed_uid_or_gid_is_refused(stack_document, user, part):
    """Docker reads a numeric user with Go's strconv.Atoi, which takes a sign: -0 and +0 are root."""
    document = stack_document("staging")
    document["config"]["platform:pencom"]["app_services"][0]["user"] = user
    problems = _problems(document)
    assert len(problems) == 1 and problems[0].startswith(
        f"platform:pencom.app_services[0] (core).user: has the signed id {part}: Docker reads -0 and +0 as uid 0 "
        "(Go's strconv.Atoi); write the uid:gid without a sign (e.g. 1000:1000)"), problems


def test_the_boundary_and_the_policy_share_one_root_test():
    from validation.users import runs_as_root, signed_id

    assert all(runs_as_root(u) for u in ("root", "0", "00:00", "-0", "+0:+0", "-000"))
    assert not any(runs_as_root(u) for u in ("1000", "10:0", "-1", "0x", "rootless", "", "--0"))
    assert [signed_id(u) for u in ("-0", "1:+2", "1000:1000", "a-b", "-", "--0")] == ["-0", "+2", None, None, None, None]
