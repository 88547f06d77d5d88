"""Tags on connections: the integrator's own labels (a JSON object of string keys and values), their bounds, and the
form a listing filters by (`key=value`). What a tag may hold is checked here, once, for every way tags come in (a
connect session, PUT /connections/{id}/tags, the admin CLI)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from smartsheet_oauth.domain.errors import BadRequest

MAX_TAGS = 10
MAX_KEY_LENGTH = 64
MAX_VALUE_LENGTH = 256
# Keys: ASCII letters, digits and _ . : / @ + - (never '=': a filter is key=value, split at the first '='). Values:
# any printable characters (Unicode included), no control characters, possibly empty.
KEY = re.compile(rf"[A-Za-z0-9_.:/@+-]{{1,{MAX_KEY_LENGTH}}}")
RULES = (
    f"tags must be a JSON object of at most {MAX_TAGS} tags: keys 1 to {MAX_KEY_LENGTH} characters of letters, digits"
    f" and _ . : / @ + -, values strings of at most {MAX_VALUE_LENGTH} printable characters"
)


def _value_ok(value: str) -> bool:
    return len(value) <= MAX_VALUE_LENGTH and all(c.isprintable() or c == " " for c in value)


def checked_tags(raw: object, *, quote_keys: bool = True) -> dict[str, str]:
    """The tags of a request body, or BadRequest naming what is wrong (and the rules). Without `quote_keys` the
    message names no key (an import's refusal names a line by number and reason, never by its content)."""
    if not isinstance(raw, Mapping):
        raise BadRequest(RULES)
    if len(raw) > MAX_TAGS:
        raise BadRequest(f"{len(raw)} tags: at most {MAX_TAGS}; {RULES}")
    tags: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not KEY.fullmatch(key):
            named = f"tag key {str(key)[:80]!r}" if quote_keys else "a tag key"
            raise BadRequest(f"{named} is not allowed; {RULES}")
        if not isinstance(value, str) or not _value_ok(value):
            named = f"the value of tag {key!r}" if quote_keys else "the value of a tag"
            raise BadRequest(f"{named} is not allowed; {RULES}")
        tags[key] = value
    return tags


def checked_filter(raw: str) -> tuple[str, str]:
    """A listing's `tag=key=value` filter as (key, value), or BadRequest."""
    key, separator, value = raw.partition("=")
    if not separator or not KEY.fullmatch(key) or not _value_ok(value):
        raise BadRequest(
            f"tag must be key=value (a key of 1 to {MAX_KEY_LENGTH} letters, digits and _ . : / @ + -, a value of at"
            f" most {MAX_VALUE_LENGTH} printable characters)"
        )
    return key, value


def index_key(key: str, value: str) -> str:
    """The tag index's partition key for one tag (keys hold no '=', so it splits back unambiguously)."""
    return f"{key}={value}"
