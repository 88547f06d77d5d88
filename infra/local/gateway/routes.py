"""HTTP API route selection as API Gateway does it: the most specific matching route wins, `$default` takes the rest."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from infra.local.gateway.controls import ADMIN_PREFIX
from infra.local.template_model import HttpRoute


@dataclass(frozen=True)
class _CompiledRoute:
    route: HttpRoute
    pattern: re.Pattern[str] | None  # None for $default
    specificity: tuple[int, int, int]


def _compile(route: HttpRoute) -> _CompiledRoute:
    if route.path == "$default":
        return _CompiledRoute(route, None, (-1, 0, 0))
    parts, literals, greedy = [], 0, 0
    for segment in route.path.strip("/").split("/") if route.path != "/" else []:
        if match := re.fullmatch(r"\{([A-Za-z0-9_.-]+)\+\}", segment):
            parts.append(f"(?P<{_group(match.group(1))}>.+)")
            greedy = 1
        elif match := re.fullmatch(r"\{([A-Za-z0-9_.-]+)\}", segment):
            parts.append(f"(?P<{_group(match.group(1))}>[^/]+)")
        else:
            parts.append(re.escape(segment))
            literals += 1
    pattern = re.compile("/" + "/".join(parts))
    return _CompiledRoute(route, pattern, (literals, -greedy, int(route.method != "ANY")))


def _group(name: str) -> str:
    return "p_" + name.replace("-", "_2d").replace(".", "_2e")


def _ungroup(group: str) -> str:
    return group[2:].replace("_2d", "-").replace("_2e", ".")


class RouteTable:
    """HTTP API route selection: the most specific matching route wins; `$default` catches the rest."""

    def __init__(self, routes: Iterable[HttpRoute]) -> None:
        self.routes = [_compile(route) for route in routes]
        keys = [compiled.route.route_key for compiled in self.routes]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ValueError(f"routes defined twice: {', '.join(duplicates)}")
        for compiled in self.routes:
            if compiled.route.path.startswith(ADMIN_PREFIX):
                raise ValueError(f"{compiled.route.route_key}: {ADMIN_PREFIX} is reserved locally")

    def match(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        best: tuple[tuple[int, int, int], HttpRoute, dict[str, str]] | None = None
        for compiled in self.routes:
            route = compiled.route
            if route.method not in {"ANY", method}:
                continue
            if compiled.pattern is None:
                params: dict[str, str] = {}
            elif found := compiled.pattern.fullmatch(path):
                params = {_ungroup(k): unquote(v) for k, v in found.groupdict().items()}
            else:
                continue
            if best is None or compiled.specificity > best[0]:
                best = (compiled.specificity, route, params)
        return None if best is None else (best[1], best[2])
