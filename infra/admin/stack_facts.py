"""What a broker stack says about itself: its name, outputs and parameters, and clients of the AWS it runs in."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StackFacts:
    """A deployed stack's CloudFormation outputs and parameters, or what `make dev` has of them (locally there is
    no schedule, alarm, topic or function version: those outputs are absent and `local` says why)."""

    name: str
    region: str
    outputs: Mapping[str, str]
    parameters: Mapping[str, str]  # the values the stack was deployed (or make dev started) with
    client: Callable[[str], Any]  # a boto3 client of the stack's AWS: the operator's session, or the embedded AWS
    local: bool
