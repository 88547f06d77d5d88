"""The embedded AWS (a moto server on loopback holding what template.yaml defines), as the local stack and tests
import it."""

from infra.local.aws.local_aws import LOCAL_CREDENTIALS, LocalAws
from infra.local.aws.moto_server import OneRequestAtATime
from infra.local.aws.provisioners import PROVISIONERS, generate_password

__all__ = ["LOCAL_CREDENTIALS", "PROVISIONERS", "LocalAws", "OneRequestAtATime", "generate_password"]
