"""make doctor: after a deploy, whether the stack really works, without a user: a checklist, a fix for each failure.

It reads the stack through the admin CLI's target (CloudFormation outputs and parameters, or make dev's state file)
and never prints a token or the client secret. What it reads on AWS: docs/operations.md, "make doctor"."""

from __future__ import annotations

import time
from collections.abc import Callable

from infra.admin.doctor.alarms import check_alarm_topic, check_alarms
from infra.admin.doctor.checklist import ALL_PASSED, SOME_FAILED, SOME_UNCHECKED, UNUSABLE, Examination
from infra.admin.doctor.credentials import check_client_secret
from infra.admin.doctor.readings import StackReader
from infra.admin.doctor.sign_in import HttpAnswer, check_sign_in, fetch, settings_of
from infra.admin.doctor.sweeps import check_schedule, check_sweeps
from infra.admin.doctor.versions import check_live_versions
from infra.admin.target import Target

__all__ = ["ALL_PASSED", "HELP", "SOME_FAILED", "SOME_UNCHECKED", "UNUSABLE", "Examination", "examine"]

HELP = """\
checks, each ✓ passed, ✗ failed (with its fix), ? could not be checked, - not applicable here:
  sign-in          GET LoginUrl answers 302 to the region's authorize page with the stack's client id,
                   scopes and redirect (with AnonymousLogin=disabled: /login refuses, 403)
  client secret    the app credentials secret is no longer CloudFormation's placeholder (never shown)
  live alias       each function's live alias runs the configuration its $LATEST has
  schedule         the refresh schedule is enabled and invokes the live alias
  last sweep ran   a sweep started within two schedule periods (its heartbeat metric)
  last sweep succeeded   no Lambda error since, FailedSweepQueue and RefreshDeadLetterQueue empty
  alarms           none of the stack's alarms is in ALARM
  alarm topic      the alarm topic has a confirmed subscription
and the callback URL to register in Smartsheet. A webhook receiver (WebhookUrl) is not tried: `test-webhook` POSTs
it a signed test event. Locally (no --stack) the doctor runs one sweep (there is no
timer) and says which checks have nothing to look at.

exit status: 0 every check passed, 1 a check failed, 2 the stack cannot be used (credentials, name,
make dev not running) or a usage error, 3 nothing failed but something could not be checked (a stack
deployed minutes ago that has not swept yet, a read the credentials may not make).
`make doctor` itself exits 2 whenever the doctor does not exit 0 (make's status for any failed command);
its line "make: *** [Makefile:NN: doctor] Error N" shows the doctor's N. Scripts that act on it run
  PYTHONPATH=functions .venv/bin/python -m infra.admin --stack NAME doctor
"""


def examine(target: Target, *, get: Callable[[str], HttpAnswer] = fetch, now: float | None = None) -> Examination:
    """Every check, in the order an operator fixes things: sign-in, its secret, what runs, the sweep, the alarms."""
    reader = StackReader(target.stack, now=time.time() if now is None else now)
    settings = settings_of(target.stack, target.config)
    checks = [
        check_sign_in(settings, get),
        check_client_secret(reader),
        check_live_versions(reader),
        check_schedule(reader),
        *check_sweeps(reader, target.run_sweep),
        check_alarms(reader),
        check_alarm_topic(reader),
    ]
    return Examination(target=target.description, checks=checks, callback_url=settings.callback_url or None)
