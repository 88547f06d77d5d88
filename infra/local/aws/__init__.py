"""The embedded AWS (a moto server on loopback holding what template.yaml defines), as the local stack and tests
import it."""

from infra.local.aws.local_aws import (
    LOCAL_CREDENTIALS,
    PROVISIONERS,
    LocalAws,
    OneRequestAtATime,
    generate_password,
)

__all__ = ["LOCAL_CREDENTIALS", "PROVISIONERS", "LocalAws", "OneRequestAtATime", "generate_password"]
