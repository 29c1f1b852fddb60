"""The collector policy: freeze while sessions accumulate, collect when the process is idle."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from voxline.conversation.collector import CollectorPolicy


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_freezes_as_sessions_accumulate_and_collects_when_idle() -> None:
    policy = CollectorPolicy(growth=2.0, min_sessions=4)
    for _ in range(3):
        policy.session_started()
    assert gc.get_freeze_count() == 0
    policy.session_started()
    assert policy.frozen_at == 4 and gc.get_freeze_count() > 0
    for _ in range(3):
        policy.session_started()
    assert policy.frozen_at == 4  # 7 < 4 * 2: no second freeze yet
    policy.session_started()
    assert policy.frozen_at == 8

    Cycle()  # garbage made while calls run...
    for _ in range(8):
        policy.session_closed()
    assert policy.live == 0 and policy.frozen_at == 0
    assert gc.get_freeze_count() == 0  # ...unfrozen and collected once nobody is on a call
    assert not any(isinstance(o, Cycle) for o in gc.get_objects())


def test_a_never_idle_process_still_reclaims_after_enough_churn() -> None:
    policy = CollectorPolicy(growth=1.25, min_sessions=2)
    for _ in range(4):
        policy.session_started()
    frozen = policy.frozen_at
    assert frozen == 4
    for _ in range(70):  # calls come and go, four always live
        policy.session_started()
        policy.session_closed()
    assert policy.closed_since_freeze < 70 - 64  # a release happened along the way
    assert policy.frozen_at >= 4 and gc.get_freeze_count() > 0  # and it froze again
