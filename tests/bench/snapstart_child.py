"""SnapStart in a fresh interpreter, as Lambda runs it: import every handler (the init phase), run the hooks they
registered before the snapshot, and count the random values made meanwhile (os.urandom, which secrets and uuid4
read, and `random` seeded from the OS); then run the after-restore hooks and check `random` was re-seeded.
Run as a script by tests/bench/snapstart.py with the functions' environment; prints one result line."""

import importlib
import json
import os
import random
import sys
import types

made = {"urandom": 0, "random_seeded": 0}
callers: list[str] = []  # where each os.urandom call came from
_urandom = os.urandom
_seed = random.Random.seed


def counted_urandom(size: int) -> bytes:
    made["urandom"] += 1
    callers.append(sys._getframe(1).f_code.co_filename)
    return _urandom(size)


def counted_seed(self: random.Random, a: object = None, version: int = 2) -> None:
    if a is None:
        made["random_seeded"] += 1
    _seed(self, a, version)  # type: ignore[arg-type]


before: list[object] = []
after: list[object] = []
runtime_hooks = types.ModuleType("snapshot_restore_py")
runtime_hooks.register_before_snapshot = lambda f, *a, **k: before.append(f)  # type: ignore[attr-defined]
runtime_hooks.register_after_restore = lambda f, *a, **k: after.append(f)  # type: ignore[attr-defined]
sys.modules["snapshot_restore_py"] = runtime_hooks

os.urandom = counted_urandom
random.Random.seed = counted_seed  # type: ignore[method-assign]
for handler in sys.argv[1:]:
    importlib.import_module(f"{handler}.app")
# The runtime runs before-snapshot hooks in the reverse order of registration.
for hook in reversed(before):
    hook()  # type: ignore[operator]
at_snapshot = dict(made)
os.urandom = _urandom
random.Random.seed = _seed  # type: ignore[method-assign]

state = random.getstate()
authkey = bytes(sys.modules["multiprocessing"].current_process().authkey) if "multiprocessing" in sys.modules else None
for hook in after:
    hook()  # type: ignore[operator]
ours = [c for c in callers if os.sep + "smartsheet_oauth" + os.sep in c or c.endswith(os.sep + "app.py")]
result = {
    "urandom_callers": sorted({os.path.relpath(c, os.path.dirname(os.__file__)) for c in callers}),
    "urandom_by_broker": len(ours),
    "authkey_renewed": authkey is None or bytes(sys.modules["multiprocessing"].current_process().authkey) != authkey,
    "before_hooks": len(before),
    "after_hooks": len(after),
    "random_values_before_snapshot": at_snapshot,
    "reseeded_after_restore": random.getstate() != state,
}
print("BENCH-RESULT " + json.dumps(result), file=sys.__stdout__, flush=True)
