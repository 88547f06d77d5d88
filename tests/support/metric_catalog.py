"""Every metric the broker's code can emit: the one list the template's alarms and dashboard are held to.

tests/conftest.py fails any test during which the code emits a metric not listed here, and tests/ops/test_template.py
fails when a listed metric is neither alarmed nor on the dashboard, or when an alarm or widget reads a metric not
listed. A new metric: add it here, then to an alarm or to a widget of OperationsDashboard in template.yaml, and to
docs/operations.md's Metrics table. Names are Powertools EMF metrics in the SmartsheetOAuthBroker namespace."""

from __future__ import annotations

from typing import Final

# GET /login (smartsheet_oauth.edge.web.count("login", outcome) and its resolver's error handlers)
LOGIN: Final = frozenset(
    {
        "login_started",
        "login_bad_session",
        "login_anonymous_refused",
        "login_bad_request",
        "login_region_not_allowed",  # ?region= (or a connect session's) not among AllowedRegions
        "login_storage_error",
        "login_internal_error",
        "login_connect_page",  # a connect link's page (GET /login?session=)
        "login_bad_connect_form",  # its button posted without the page's binding (POST /login)
    }
)
# GET /callback
CALLBACK: Final = frozenset(
    {
        "callback_success",
        "callback_denied",
        "callback_bad_state",
        "callback_invalid_code",
        "callback_bad_request",
        "callback_authorize_error",
        "callback_binding_conflict",
        "callback_region_conflict",  # the user id is connected from another Smartsheet region
        "callback_smartsheet_error",
        "callback_smartsheet_unavailable",
        "callback_storage_error",
        "callback_internal_error",
        "callback_awaiting_confirmation",  # a connect-session sign-in held for the integrator's completion code
    }
)
# The sweep (smartsheet_oauth.flows.sweep_metrics): refreshes by outcome, and its own figures
SWEEP: Final = frozenset(
    {
        *(f"refresh_{outcome}" for outcome in ("ok", "transient", "needs_reauth", "lease_busy", "raced", "error")),
        *(f"refresh_{outcome}" for outcome in ("kept", "resumed", "lost", "deferred")),  # lost_in_flight: lost
        "sweep_dispatched",  # first a 0 as each sweep starts (its heartbeat), then the dispatches as they go
        "sweep_duration",
        "sweep_backlog",
        "sweep_lag",
        "sweep_skipped",
    }
)
# The management API (smartsheet_oauth.edge.management_api.count): answers by route, on-demand refreshes by outcome,
# errors by code
MANAGEMENT: Final = frozenset(
    {
        "management_listed",
        "management_read",
        "management_disconnected",
        "management_reconnect_not_needed",  # a reconnect link asked for a connection that is not needs_reauth
        "management_tags_set",  # PUT /connections/{id}/tags
        "management_connect_session_created",
        "management_connect_session_completed",
        "management_no_iam_caller",
        "management_not_from_api_gateway",
        *(f"management_refresh_{outcome}" for outcome in ("refreshed", "fresh", "resumed")),
        *(
            f"management_{code}"
            for code in (
                "refresh_failed",
                "refresh_cooldown",
                "refresh_rate_limited",
                "refresh_kept",
                "refresh_lost",
                "refresh_in_progress",
                "needs_reauth",
                "revoked",
                "changed_meanwhile",
                "not_found",
                "invalid_request",
                "region_not_allowed",
                "no_such_route",
                "smartsheet_refused",
                "smartsheet_unavailable",
                "storage_unavailable",
                "internal_error",
                # POST /connect-sessions/complete's refusals
                "unknown_completion_code",
                "completion_code_used",
                "completion_code_expired",
                "end_user_mismatch",
                "binding_conflict",
                "completion_in_progress",
                # POST /connections/import: imported grants by outcome, and its refusals
                "import_created",
                "import_reconnected",
                "import_already_present",
                "grant_refused",
                "lost_in_flight",
                "imported_connection_gone",
                "import_in_progress",
                "connection_busy",
                "region_conflict",
            )
        ),
    }
)
# Connection events sent to the integrator's bus (smartsheet_oauth.stores.events)
EVENTS: Final = frozenset({"events_published", "events_publish_failed"})

# Not the code's: the API's access log through the template's metric filter (ApiThrottledMetricFilter): requests API
# Gateway refused with 429 because their route's limit was used up
ACCESS_LOG: Final = frozenset({"api_throttled"})

EMITTED: Final = LOGIN | CALLBACK | SWEEP | MANAGEMENT | EVENTS | ACCESS_LOG

WHERE_TO_ADD: Final = (
    "add it to tests/support/metric_catalog.py, then alarm it (an AWS::CloudWatch::Alarm in template.yaml) or show "
    "it on the OperationsDashboard, and describe it in docs/operations.md's Metrics table"
)
