"""AWS's authorization decision for a request, by a maintained IAM policy simulator rather than our own evaluator.

@cloud-copilot/iam-simulate (Node, pinned with its integrity hashes in tests/support/iam_simulate/package-lock.json,
installed by `make iam-simulate`) evaluates identity policies and a resource policy the way IAM does: explicit deny
first, every condition operator, same-account rules, and KMS's rule that a key policy must allow a use itself (a
statement for the account's root hands the decision to IAM policies; one naming the principal needs no IAM grant).
It validates what it is given too: an unknown action or a context key the action does not take is an error here,
never a silent "denied". Only test code uses it: nothing of it ships or runs in Lambda."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SIMULATOR = Path(__file__).resolve().parent / "iam_simulate"
BRIDGE = SIMULATOR / "evaluate.mjs"
ALLOWED = "Allowed"


class SimulatorUnavailable(RuntimeError):
    """Node or the pinned simulator is missing: `make iam-simulate` installs it (make test does)."""


@dataclass(frozen=True)
class Request:
    """One API request as IAM sees it: who (an assumed-role session or a user), what, on which ARN, with which
    request context, under which identity policies and which resource policy (a key policy, a bus policy...)."""

    principal: str
    action: str
    resource: str
    identity_policies: Sequence[Mapping[str, Any]] = ()
    resource_policy: Mapping[str, Any] | None = None
    context: Mapping[str, str | Sequence[str]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "action": self.action,
            "resource": self.resource,
            "resourceAccount": self.resource.split(":")[4],
            "identityPolicies": [dict(policy) for policy in self.identity_policies],
            "resourcePolicy": dict(self.resource_policy) if self.resource_policy is not None else None,
            "context": dict(self.context),
        }


def decide(requests: Sequence[Request]) -> list[str]:
    """Each request's decision: "Allowed", "ExplicitlyDenied" or "ImplicitlyDenied" (one Node process per call)."""
    node = shutil.which("node")
    if node is None or not (SIMULATOR / "node_modules" / "@cloud-copilot" / "iam-simulate").is_dir():
        raise SimulatorUnavailable(
            f"the IAM simulator is not installed in {SIMULATOR}: run `make iam-simulate` (needs Node.js 20+ and npm)"
        )
    completed = subprocess.run(  # a fixed script of this repository, JSON on stdin
        [node, str(BRIDGE)],
        input=json.dumps([request.as_json() for request in requests]),
        capture_output=True,
        text=True,
        check=False,
        cwd=SIMULATOR,
        timeout=120,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the IAM simulator failed: {completed.stderr.strip()[-2000:]}")
    answers: list[dict[str, Any]] = json.loads(completed.stdout)
    decisions = []
    for request, answer in zip(requests, answers, strict=True):
        if "errors" in answer:
            raise ValueError(f"the IAM simulator refused {request.action} on {request.resource}: {answer['errors']}")
        decisions.append(str(answer["decision"]))
    return decisions


def allowed(request: Request) -> bool:
    [decision] = decide([request])
    return decision == ALLOWED
