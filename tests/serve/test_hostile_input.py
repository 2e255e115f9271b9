"""Hostile input never gets a 5xx: NaN, ±Infinity, numbers out of range, lone surrogates, control
characters and invalid UTF-8, in every field of every body, in paths and in query strings. Each is a 4xx
that names the field and can itself be read as JSON (FastAPI's own handler echoed the input, which a NaN
or a surrogate cannot be written in: a 500)."""

from __future__ import annotations

import json
import urllib.parse
from collections import Counter

import pytest

from .conftest import TOKEN, http

pytestmark = [pytest.mark.ray, pytest.mark.slow]
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# JSON text, spliced into bodies as written (Python's json reads NaN, Infinity and 1e400 as floats)
VALUES = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 5000, '"\\ud800"', '"\\udfff x"',
          '"a\\u0000b"', '"\\u0007"', '" "', '""', '"\\u202e50"', "[NaN]", '["\\ud800"]', "{}", "true", "-0"]  # fmt: skip
RAW = [b'{"user_id": "\xff\xfe"}', b'{"history": ["50", "\xed\xa0\x80"]}', b"\xff", b'{"user_id": "1"',
       b'{"item_ids": ["50"], "event_id": "\xc3"}']  # fmt: skip
FIELDS = {
    "/recommend": ['{"user_id": %s}', '{"user_id": "1", "k": %s}', '{"history": %s}', '{"history": [%s]}',
                   '{"history": ["50"], "query": %s}', '{"user_id": "1", "exclude_seen": %s}', "{%s: 1}"],
    "/users/hostile-1/events": ['{"item_ids": %s}', '{"item_ids": [%s]}', '{"item_ids": ["50"], "event_id": %s}'],
}  # fmt: skip
PATHS = ["/users/%ED%A0%80", "/users/%00", "/users/%20", "/items/%FF", "/items/a%0Ab", "/users/%ED%A0%80/events",
         "/items?q=%ED%A0%80", "/items?q=%00", "/items?ids=%FF,50", "/items?limit=NaN", "/users/1?limit=1e400"]  # fmt: skip


def cases() -> list[tuple[str, str, bytes | None]]:
    out = [(path, "POST", template.replace("%s", v).encode()) for path, ts in FIELDS.items()
           for template in ts for v in VALUES]  # fmt: skip
    out += [(path, "POST", raw) for path in FIELDS for raw in RAW]
    out += [(path, "POST" if path.endswith("events") else "GET", b'{"item_ids": ["50"]}' if path.endswith("events")
             else None) for path in PATHS]  # fmt: skip
    return out


def test_hostile_values_everywhere_are_4xx_naming_the_field(serve_url):
    statuses: Counter = Counter()
    server_errors, unreadable = [], []
    for path, method, raw in cases():
        status, out = http(method, path, raw=raw, headers=AUTH)
        statuses[status] += 1
        if status >= 500:
            server_errors.append((path, raw, status, out))
        if not isinstance(out, dict):  # every answer, an error included, is JSON
            unreadable.append((path, raw, status, out))
    print(f"\nhostile cases: {sum(statuses.values())}, statuses {dict(sorted(statuses.items()))}")
    assert not server_errors, server_errors[:5]
    assert not unreadable, unreadable[:5]
    assert sum(statuses.values()) >= 150


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/recommend", '{"user_id": "1", "k": NaN}', "k"),
        ("/recommend", '{"user_id": NaN}', "user_id"),
        ("/recommend", '{"user_id": "\\ud800"}', "user_id"),
        ("/recommend", '{"history": ["50", "\\u0000"]}', "history.1"),
        ("/recommend", '{"history": ["50"], "query": "\\ud800"}', "query"),
        ("/users/hostile-2/events", '{"item_ids": ["50"], "event_id": "\\u0007"}', "event_id"),
    ],
)
def test_the_422_names_the_field_and_echoes_nothing(serve_url, path, body, needle):
    status, out = http("POST", path, raw=body.encode(), headers=AUTH)
    assert status == 422, out
    assert needle in out["message"], out
    assert "input" not in json.dumps(out["detail"])  # the bad value is not sent back


def test_ids_in_paths_are_checked_before_any_store(serve_url):
    for user in ("%00", "%20%20", "x" * 129):
        status, out = http("GET", f"/users/{user}")
        assert status == 422 and "user_id" in str(out), (user, status, out)
        status, out = http("POST", f"/users/{user}/events", {"item_ids": ["50"]}, AUTH)
        assert status == 422 and "user_id" in str(out), (user, status, out)
    status, out = http("GET", "/items/" + urllib.parse.quote("a\nb"))
    assert status == 422 and "item_id" in str(out)
