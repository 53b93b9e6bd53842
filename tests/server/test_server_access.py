"""Who may call what: the API key on every route, JSON bodies only, bodies that must arrive."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
from serverkit import RunningServer, run_server

KEY = "s3cret"
AUTH = {"Authorization": f"Bearer {KEY}"}
# Long enough for a completion beside 50 stalled bodies on a busy 2-core machine.
BODY_TIMEOUT_S = 4.0


@pytest.fixture(scope="module")
def locked(model_path: str) -> Iterator[RunningServer]:
    with run_server(model_path, {"api_key": KEY, "body_timeout_s": BODY_TIMEOUT_S}) as s:
        yield s


def routes(server: RunningServer) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, its OpenAPI document, an unknown path."""
    out = [("GET", "/openapi.json"), ("GET", "/no/such/route"), ("POST", "/v1/unknown")]
    for path, operations in server.app.openapi()["paths"].items():
        path = path.replace("{model_id}", "some-model")
        out += [(method.upper(), path) for method in sorted(operations)]
    return out


def test_every_route_but_health_needs_the_key(locked: RunningServer) -> None:
    table = routes(locked)
    assert ("GET", "/metrics") in table and ("POST", "/v1/chat/completions") in table
    assert ("POST", "/v1/embeddings") in table
    with locked.client() as c:
        for method, path in table:
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}):
                r = c.request(method, path, headers=headers, json={})
                expected = 200 if path == "/health" else 401
                assert r.status_code == expected, (method, path, headers, r.text)
                if expected == 401:
                    assert r.json()["error"]["code"] == "invalid_api_key"
            r = c.request(method, path, headers=AUTH, json={})
            assert r.status_code != 401, (method, path)


def test_open_metrics_opens_only_metrics(model_path: str) -> None:
    with run_server(model_path, {"api_key": KEY, "open_metrics": True}) as s, s.client() as c:
        assert c.get("/metrics").status_code == 200
        assert c.get("/openapi.json").status_code == 401
        assert c.get("/v1/models").status_code == 401


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x", "json"],
)
def test_json_routes_refuse_other_content_types(
    locked: RunningServer, content_type: str | None
) -> None:
    body = b'{"prompt": "a", "max_tokens": 2, "tokens": [1]}'
    post_routes = [p for method, p in routes(locked) if method == "POST" and p != "/v1/unknown"]
    with locked.client() as c:
        for path in post_routes:
            headers = dict(AUTH)
            if content_type is not None:
                headers["content-type"] = content_type
            r = c.post(path, content=body, headers=headers)
            assert r.status_code == 415, (path, r.text)
            assert r.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/x+json"])
def test_json_content_types_are_accepted(locked: RunningServer, content_type: str) -> None:
    headers = {**AUTH, "content-type": content_type}
    with locked.client() as c:
        r = c.post("/tokenize", content=b'{"prompt": "hello"}', headers=headers)
    assert r.status_code == 200, r.text


def test_half_sent_bodies_are_closed_after_the_timeout(locked: RunningServer) -> None:
    url = urlparse(locked.url)
    head = (
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"
        '{"prompt": "half'
    ).encode()
    stalled = []
    t0 = time.monotonic()
    for _ in range(50):
        sock = socket.create_connection((url.hostname, url.port), timeout=10.0)
        sock.sendall(head)
        stalled.append(sock)
    with locked.client(headers=AUTH) as c:  # the others are served meanwhile
        r = c.post("/v1/completions", json={"prompt": "a", "max_tokens": 4})
        assert r.status_code == 200, r.text
    assert time.monotonic() - t0 < BODY_TIMEOUT_S, "served while the bodies were pending"
    for sock in stalled:
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            answer += chunk
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"did not arrive within" in answer
    assert time.monotonic() - t0 < BODY_TIMEOUT_S + 8.0  # a busy machine; never is the bug
