"""SnapStart runtime hooks: registered with the runtime's module when there is one, nothing random before the
snapshot, `random` (and the one library secret made at import) renewed after a restore."""

from __future__ import annotations

import multiprocessing
import os
import random
import sys
import types
from collections.abc import Callable

import pytest
from smartsheet_oauth import aws, snapstart


def test_without_the_runtime_module_nothing_is_registered() -> None:
    assert snapstart.register(module="no_such_snapshot_module") is False


def test_with_the_runtime_module_both_hooks_are_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    before: list[Callable[[], None]] = []
    after: list[Callable[[], None]] = []
    runtime = types.ModuleType("fake_snapshot_restore_py")
    runtime.register_before_snapshot = before.append  # type: ignore[attr-defined]
    runtime.register_after_restore = after.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_snapshot_restore_py", runtime)

    assert snapstart.register(module="fake_snapshot_restore_py") is True
    assert before == [snapstart.before_snapshot]
    assert after == [snapstart.after_restore]


def test_before_snapshot_builds_the_clients_without_making_a_random_value(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in snapstart.PRELOADED_MODULES:
        __import__(name)  # imports happen in the init phase anyway; the hook's own work is what is checked
    calls: list[int] = []
    real_urandom = os.urandom

    def counted(size: int) -> bytes:
        calls.append(size)
        return real_urandom(size)

    monkeypatch.setattr(os, "urandom", counted)
    seeded: list[object] = []
    real_seed = random.Random.seed

    def counted_seed(self: random.Random, a: object = None, version: int = 2) -> None:
        seeded.append(a)
        real_seed(self, a, version)  # type: ignore[arg-type]

    monkeypatch.setattr(random.Random, "seed", counted_seed)
    aws.reset()
    try:
        snapstart.before_snapshot()
        assert aws.dynamodb.cache_info().currsize == 1
        assert aws.secretsmanager.cache_info().currsize == 1
    finally:
        aws.reset()
    assert calls == []
    assert seeded == []


def test_after_restore_reseeds_random_and_renews_the_multiprocessing_authkey() -> None:
    random.seed(1234)  # as if every restored environment resumed with this same state
    cloned_state = random.getstate()
    cloned_authkey = bytes(multiprocessing.current_process().authkey)

    snapstart.after_restore()

    assert random.getstate() != cloned_state
    assert bytes(multiprocessing.current_process().authkey) != cloned_authkey
