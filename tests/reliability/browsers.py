"""Simulated browsers for the sign-in load scenario: each follows the real redirects, keeps the real cookies and
submits the emulator's real consent form as its own Smartsheet user. Many of them run as threads of one child
process (spawned), so their work does not compete for the GIL with the stack they measure."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

MAX_REDIRECTS = 5
REQUEST_TIMEOUT = 300.0  # a queue of hundreds in front of 8 environments per function is slow, not broken


@dataclass
class BrowserRun:
    """What one browser saw. Picklable: it travels back from the child process."""

    user_id: str
    hops: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status) of every answer
    state: str | None = None  # the state /login put in the authorize redirect
    final_status: int | None = None  # the broker's answer to /callback (None: the flow ended before it)
    final_body: str = ""  # the page the browser ended on: /result's after a 303, else the callback's own
    final_path: str = ""
    failed_at: str | None = None  # where the flow stopped short: "login 503", "consent page 500", "transport"
    seconds: float = 0.0

    @property
    def outcome(self) -> str:
        """How it ended, for the table: the callback's status, else where it stopped."""
        return str(self.final_status) if self.final_status is not None else f"{self.failed_at}"


class _ConsentForm(HTMLParser):
    """The authorize page's form: its action, hidden fields and the users it offers."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.users: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.action = named.get("action")
        elif tag == "input" and named.get("type") == "hidden":
            self.fields[named["name"]] = named.get("value", "")
        elif tag == "option":
            self.users.add(named.get("value", ""))


class Browser:
    """Cookies per host, like a browser (ports do not separate cookies). Secure cookies are sent over http:// to
    loopback, as Chromium does: 127.0.0.1 is a secure context, which is how the broker's __Host- nonce works in
    `make dev`."""

    def __init__(self, user_id: str) -> None:
        self.run = BrowserRun(user_id)
        self._http = requests.Session()
        self._cookies: dict[str, dict[str, str]] = {}
        self._visited: list[str] = []

    def _send(self, method: str, url: str, form: dict[str, str] | None = None) -> requests.Response:
        host = urlsplit(url).hostname or ""
        jar = self._cookies.setdefault(host, {})
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())} if jar else {}
        answer = self._http.request(
            method, url, data=form, headers=headers, allow_redirects=False, timeout=REQUEST_TIMEOUT
        )
        for raw in answer.raw.headers.getlist("Set-Cookie"):
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(raw)
            for name, morsel in parsed.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    jar.pop(name, None)
                else:
                    jar[name] = morsel.value
        self._visited.append(url)
        self.run.hops.append((method, urlsplit(url).path, answer.status_code))
        return answer

    def navigate(self, method: str, url: str, form: dict[str, str] | None = None) -> requests.Response:
        """Send, then follow redirects as a browser does (the broker and the emulator redirect with 302/303: the
        next request is a GET)."""
        answer = self._send(method, url, form)
        for _ in range(MAX_REDIRECTS):
            if answer.status_code not in (302, 303):
                return answer
            url = urljoin(url, answer.headers["Location"])
            answer = self._send("GET", url)
        return answer

    def sign_in(self, login_url: str) -> BrowserRun:
        started = time.monotonic()
        try:
            self._sign_in(login_url)
        except requests.RequestException as exc:
            self.run.failed_at = f"transport {type(exc).__name__}"
        except Exception as exc:  # a page this browser cannot read: counted, never a lost run
            self.run.failed_at = f"browser {type(exc).__name__}"
        finally:
            self.run.seconds = time.monotonic() - started
            self._http.close()
        return self.run

    def _sign_in(self, login_url: str) -> None:
        consent = self.navigate("GET", login_url)
        authorize = [url for url in self._visited if urlsplit(url).path.endswith("/authorize")]
        if not authorize:
            self.run.failed_at = f"login {self.run.hops[0][2]}"
            return
        self.run.state = parse_qs(urlsplit(authorize[0]).query)["state"][0]
        if consent.status_code != 200:
            self.run.failed_at = f"consent page {consent.status_code}"
            return
        form = _ConsentForm()
        form.feed(consent.text)
        if form.action is None or self.run.user_id not in form.users:
            self.run.failed_at = "consent page without this user"
            return
        answer = self.navigate(
            "POST", urljoin(consent.url, form.action), {**form.fields, "user_id": self.run.user_id, "decision": "allow"}
        )
        callbacks = [status for _, path, status in self.run.hops if path.endswith("/callback")]
        if not callbacks:
            self.run.failed_at = f"consent {answer.status_code}"
            return
        # A finished sign-in's callback answers 303 to /result, the page the user reads: the body is that page's.
        self.run.final_status = callbacks[-1]
        self.run.final_body = answer.text
        self.run.final_path = urlsplit(answer.url).path


def sign_in_all(login_url: str, user_ids: list[str]) -> tuple[list[BrowserRun], float]:
    """Child process: one browser a thread, all released at once; their runs, and the wall time from the release
    to the last answer."""
    browsers = [Browser(user_id) for user_id in user_ids]
    runs: list[BrowserRun | None] = [None] * len(browsers)
    release = threading.Barrier(len(browsers) + 1)

    def one(index: int) -> None:
        release.wait()
        runs[index] = browsers[index].sign_in(login_url)

    threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in range(len(browsers))]
    for thread in threads:
        thread.start()
    release.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    return [run for run in runs if run is not None], wall


def percentile(values: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least `share` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]
