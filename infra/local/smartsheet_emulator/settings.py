"""The emulator's behaviour knobs, mostly for what SMARTSHEET.md marks as unconfirmed; changeable at run time."""

from __future__ import annotations

from dataclasses import dataclass

from infra.local.smartsheet_emulator.validation import check_bool, check_choice, check_int, check_number


@dataclass
class Settings:
    """Behaviour knobs, mostly for what SMARTSHEET.md marks as unconfirmed; changeable at run time."""

    access_lifetime: int = 604799
    code_lifetime: float = 600.0
    # Smartsheet does not document a refresh-token lifetime; None means refresh tokens never expire.
    refresh_lifetime: float | None = None
    # Per access token on /users/me and revoke, as documented; None disables.
    rate_limit_per_minute: int | None = 300
    # Per client_id on the token endpoint: undocumented, so off unless a test asks for it.
    token_rate_limit_per_minute: int | None = None
    retry_after: int | None = None
    wrapped_token_response: bool = False
    error_message_field: str = "message"
    # SMARTSHEET.md lists a hash mismatch under both 1071 and 1072.
    hash_mismatch_error_code: int = 1072
    # Undocumented whether the old access token survives a refresh; the strict answer is the default.
    revoke_old_access_on_refresh: bool = True
    # Commas between scope names, as the official Java SDK sends them (authorize.py, SCOPES_EVIDENCE); a space,
    # `%20` or `+`, is always accepted.
    comma_separated_scopes: bool = True
    # "allow" or "deny": GET /b/authorize answers at once, as if the user had clicked.
    auto_consent: str | None = None
    auto_consent_user_id: int | None = None

    def __post_init__(self) -> None:
        check_int("access_lifetime", self.access_lifetime, low=1)
        check_number("code_lifetime", self.code_lifetime)
        if self.refresh_lifetime is not None:
            check_number("refresh_lifetime", self.refresh_lifetime)
        check_int("rate_limit_per_minute", self.rate_limit_per_minute, low=1, optional=True)
        check_int("token_rate_limit_per_minute", self.token_rate_limit_per_minute, low=1, optional=True)
        check_int("retry_after", self.retry_after, optional=True)
        check_bool("wrapped_token_response", self.wrapped_token_response)
        check_choice("error_message_field", self.error_message_field, ("message", "error_description"))
        check_choice("hash_mismatch_error_code", self.hash_mismatch_error_code, (1071, 1072))
        check_bool("revoke_old_access_on_refresh", self.revoke_old_access_on_refresh)
        check_bool("comma_separated_scopes", self.comma_separated_scopes)
        check_choice("auto_consent", self.auto_consent, (None, "allow", "deny"))
        if isinstance(self.auto_consent_user_id, str):
            self.auto_consent_user_id = int(self.auto_consent_user_id)
        check_int("auto_consent_user_id", self.auto_consent_user_id, optional=True)
