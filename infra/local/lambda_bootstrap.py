"""Inside a local Lambda worker: import the handler once (the cold start), then answer one event at a time over the
pipes the local runtime (lambda_runtime.py) passed, with a Lambda-like context.

Run as a script with -I: standard library only, because a worker's sys.path is the function's CodeUri (Lambda's
/var/task) and site-packages, never this repository."""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any, Final

MAX_RESPONSE_BYTES: Final = 6 * 1024 * 1024  # Lambda's synchronous response payload limit
# Printed after each invocation's output, before its answer; the runtime keeps it out of the logs and waits for it,
# so an invocation's lines are all in the function's logs when it returns (lambda_runtime.LOGGED_MARKER).
LOGGED_MARKER: Final = "\x1elocal-runtime:logged "


class LambdaContext:
    """The context object Lambda passes to a Python handler."""

    def __init__(self, request_id: str, deadline_ms: int) -> None:
        env = os.environ
        self.aws_request_id = request_id
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = int(env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.invoked_function_arn = env.get("LOCAL_LAMBDA_FUNCTION_ARN", "")
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def _error(exc: BaseException, error_type: str | None = None) -> dict[str, Any]:
    return {
        "type": "error",
        "errorType": error_type or type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


def _print_error(exc: BaseException) -> None:
    # The same shape the Lambda Python runtime writes to the function's log.
    print(f"[ERROR] {type(exc).__name__}: {exc}", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)


def _bootstrap(code_dir: str, handler_name: str, request_fd: int, response_fd: int) -> int:
    responses = os.fdopen(response_fd, "wb", buffering=0)
    requests = os.fdopen(request_fd, "rb")

    def answer(message: Mapping[str, Any]) -> None:
        responses.write(json.dumps(message).encode() + b"\n")

    # Ctrl-C in a terminal reaches the whole process group; like a Lambda environment, the worker
    # ignores it and ends when its caller closes the request pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.path.insert(0, code_dir)
    module_name, _, attribute = handler_name.rpartition(".")
    started = time.monotonic()
    try:
        handler = getattr(importlib.import_module(module_name), attribute)
    except Exception as exc:
        _print_error(exc)
        answer(_error(exc, "Runtime.ImportModuleError") | {"type": "init_error"})
        return 1
    answer({"type": "ready", "init_ms": round((time.monotonic() - started) * 1000, 1)})
    for line in requests:
        request = json.loads(line)
        context = LambdaContext(request["request_id"], request["deadline_ms"])
        try:
            result = handler(request["event"], context)
        except Exception as exc:
            _print_error(exc)
            answer(_error(exc))
            continue
        finally:
            print(LOGGED_MARKER + str(request["request_id"]), flush=True)
        try:
            payload = json.dumps({"type": "result", "payload": result})
        except (TypeError, ValueError) as exc:
            _print_error(exc)
            answer(_error(exc, "Runtime.MarshalError"))
            continue
        if len(payload) > MAX_RESPONSE_BYTES:
            print("[ERROR] Function.ResponseSizeTooLarge", file=sys.stderr)
            answer({"type": "error", "errorType": "Function.ResponseSizeTooLarge", "errorMessage": ""})
            continue
        responses.write(payload.encode() + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(_bootstrap(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
