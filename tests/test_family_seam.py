"""The family seam: every family in the registry has every member of roadbuddy.families.protocol.Family, with
the protocol's parameters, so the pipeline can call any family the same way."""
from __future__ import annotations

import inspect

import pytest

from roadbuddy.families import protocol, registry


@pytest.mark.parametrize("name", sorted(registry.FAMILIES))
def test_each_family_has_the_protocols_members_with_its_parameters(name):
    family = registry.ops(name)
    assert family.name == name
    declared = {n for n in vars(protocol.Family) if not n.startswith("_")} | set(protocol.Family.__annotations__)
    assert declared == set(protocol.MEMBERS)
    for member in protocol.MEMBERS:
        assert hasattr(family, member), f"{name} lacks {member}"
        wanted = getattr(protocol.Family, member, None)
        if callable(wanted):
            have = list(inspect.signature(getattr(family, member)).parameters)
            assert have == list(inspect.signature(wanted).parameters)[1:], (name, member)
