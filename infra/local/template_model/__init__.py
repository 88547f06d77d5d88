"""The SAM template as the local stack reads it (CFN-aware YAML, intrinsics, functions, routes, schedules), as the
local stack, the admin CLI and tests import it."""

from infra.local.template_model.document import (
    DEFAULT_TEMPLATE,
    IAM_AUTHORIZER,
    LOCAL_ACCOUNT_ID,
    LOCAL_REGION,
    NOTHING,
    PhysicalResource,
    Template,
    TemplateError,
    load_yaml,
    synthesize_physical,
)
from infra.local.template_model.functions import FunctionSpec, HttpRoute, ScheduleSpec, merge_globals
from infra.local.template_model.resolver import Resolver

__all__ = [
    "DEFAULT_TEMPLATE",
    "IAM_AUTHORIZER",
    "LOCAL_ACCOUNT_ID",
    "LOCAL_REGION",
    "NOTHING",
    "FunctionSpec",
    "HttpRoute",
    "PhysicalResource",
    "Resolver",
    "ScheduleSpec",
    "Template",
    "TemplateError",
    "load_yaml",
    "merge_globals",
    "synthesize_physical",
]
