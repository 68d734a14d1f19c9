"""Issue 13: transforms, second round, through real nginx, the real gateway and the echo upstream.

Each gateway here has its own ``plugins/`` holding only the rule files of this module
(``RULES``), so every case is visible in one place. Request transforms show in the echo's
answer (the request it received); response transforms run on that answer.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import REPO_ROOT, EchoUpstream, Gateway, GatewayFactory, assert_problem, echo_of

# Second-round examples shipped in plugins/, loaded from the repository as they are.
SHIPPED_EXAMPLES = ["maintenance-page.json", "beta-channel.json", "form-submitted-by.json"]

DEMO_KEY = "round2-key"
DEMO_KEY_SHA256 = hashlib.sha256(DEMO_KEY.encode()).hexdigest()


def rule(name: str, phase: str, operations: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "transform", "phase": phase, "operations": operations, **extra}


# file name -> rule file content
RULES: dict[str, Any] = {
    # Defect 1: a body operation whose condition reads what an earlier rule set wrote.
    "staged.json": [
        rule("stage-header", "request", [{"op": "header.set", "name": "X-Stage", "value": "one"}]),
        rule("stage-body", "request", [{"op": "body.set", "path": "/x", "value": True}],
             condition={"headers": {"X-Stage": "one"}}),
        rule("to-post", "request", [{"op": "method.set", "value": "POST"}]),
        rule("post-body", "request", [{"op": "body.set", "path": "/posted", "value": True}],
             condition={"methods": ["POST"]}),
        rule("stage-response-header", "response", [{"op": "header.set", "name": "X-Stage", "value": "one"}]),
        rule("stage-response-body", "response", [{"op": "body.set", "path": "/x", "value": True}],
             condition={"headers": {"X-Stage": "one"}}),
    ],
    # Defect 2: a rule set that is skipped does not limit the body.
    "limits.json": [
        rule("big", "request", [{"op": "body.set", "path": "/big", "value": True}], max_body_bytes=100000),
        rule("small", "request", [{"op": "body.set", "path": "/small", "value": True}], max_body_bytes=256,
             condition={"methods": ["PUT"]}),
        rule("nf-small", "response", [{"op": "body.set", "path": "/nf", "value": True}], max_body_bytes=300,
             condition={"status": 404}),
        rule("wrap-2xx", "response", [{"op": "body.wrap", "path": "/data"}], condition={"status": "2xx"}),
        rule("gone", "response", [{"op": "status.map", "from": 404, "to": 404,
                                   "content_type": "application/problem+json",
                                   "body": {"title": "Not Found", "status": 404, "request_id": "{{request_id}}"}}],
             max_body_bytes=1000),
    ],
    # Defect 6: values rendered into a path.
    "paths.json": [
        rule("segment", "request", [{"op": "path.rewrite", "template": "/p/{{query.p}}"}]),
        rule("subpath", "request", [{"op": "path.rewrite", "template": "/files/{{query.p}}", "allow_slashes": True}]),
    ],
    # Item 2: decided behaviours.
    "decided.json": [
        rule("consumer-header", "request", [{"op": "header.set", "name": "X-Consumer", "value": "{{consumer.id}}"}]),
        rule("rename-q", "request", [{"op": "query.rename", "from": "a", "to": "b"}]),
        rule("stamp", "response", [{"op": "header.set", "name": "X-Transformed", "value": "yes"}]),
        rule("request-body", "request", [{"op": "body.set", "path": "/seen", "value": True}]),
    ],
    # Item 3: what Kong and APISIX users reach for next.
    "round2-ops.json": [
        rule("replace", "request", [
            {"op": "header.replace", "name": "X-Tenant", "value": "tenant-{{header.X-Tenant}}"},
            {"op": "header.replace", "name": "X-Absent", "value": "never"},
            {"op": "query.replace", "name": "page", "value": "1"},
            {"op": "query.replace", "name": "absent", "value": "never"},
            {"op": "body.replace", "path": "/n", "value": "{{query.n | number}}"},
            {"op": "body.replace", "path": "/missing", "value": "never"},
            {"op": "body.append", "path": "/tags", "value": "{{consumer.id}}"},
        ]),
        rule("host", "request", [{"op": "host.set", "value": "api.internal.example"}]),
        rule("who", "request", [
            {"op": "header.set", "name": "X-Who", "value": "{{client_ip}}|{{host}}|{{scheme}}|{{cookie.sid}}|\\{{literal}}"},
            {"op": "header.set", "name": "X-Epoch", "value": "{{time.unix}}"},
        ]),
        rule("local-only", "request", [{"op": "header.set", "name": "X-Local", "value": "yes"}],
             condition={"client_ip": ["127.0.0.0/8", "::1"]}),
        rule("not-local", "request", [{"op": "header.set", "name": "X-Remote", "value": "yes"}],
             condition={"client_ip": {"not": ["127.0.0.0/8", "::1"]}}),
        rule("curl-or-beta", "request", [{"op": "header.set", "name": "X-Hit", "value": "yes"}],
             condition={"any": [{"headers": {"User-Agent": {"regex": "^curl/"}}}, {"cookies": {"beta": "1"}}],
                        "not": {"query": {"skip": True}}, "path": {"regex": "^/conditions/"},
                        "consumer": {"not": "blocked"}}),
        rule("cookies", "request", [
            {"op": "cookie.remove", "name": "tracking"},
            {"op": "cookie.set", "name": "tenant", "value": "{{query.tenant}}"},
        ]),
        rule("set-cookies", "response", [
            {"op": "cookie.remove", "name": "internal"},
            {"op": "cookie.set", "name": "sid", "value": "{{request_id}}", "attributes": "Path=/; HttpOnly"},
        ]),
        rule("maintenance", "response", [
            {"op": "status.map", "from": "5xx", "to": 503},
            {"op": "header.set", "name": "Retry-After", "value": "30"},
            {"op": "body.template", "template": "Down for maintenance (request {{request_id}}).\n",
             "content_type": "text/plain; charset=utf-8"},
        ], condition={"status": "5xx"}),
        rule("form-fields", "request", [
            {"op": "form.remove", "name": "password"},
            {"op": "form.rename", "from": "user", "to": "username"},
            {"op": "form.set", "name": "consumer", "value": "{{consumer.id}}"},
        ]),
        rule("to-form", "request", [
            {"op": "body.template", "template": "user={{consumer.id}}&source=gateway",
             "content_type": "application/x-www-form-urlencoded"},
        ]),
    ],
}


def route(name: str, plugins: list[str], upstream: str = "echo", **extra: Any) -> dict[str, Any]:
    return {"name": name, "match": {"prefix": f"/{name}/"}, "upstream": upstream, "plugins": plugins, **extra}


def round2_config(echo_url: str, dead_url: str) -> dict[str, Any]:
    return {
        "plugins_dir": "plugins",
        "upstreams": {
            "echo": {"targets": [echo_url], "connect_timeout_ms": 1000, "timeout_ms": 10000},
            "dead": {"targets": [dead_url], "connect_timeout_ms": 500, "timeout_ms": 1000},
        },
        "consumers": [{"id": "ann", "groups": ["gold"], "api_keys": [{"id": "k", "sha256": DEMO_KEY_SHA256}]}],
        "auth": {"api_key": {"header": "X-API-Key"}},
        "routes": [
            route("staged", ["stage-header", "stage-body"]),
            route("posted", ["to-post", "post-body"]),
            route("staged-response", ["stage-response-header", "stage-response-body"]),
            route("limits", ["big", "small"]),
            route("nf-small", ["nf-small", "wrap-2xx"]),
            route("gone", ["gone"]),
            route("segment", ["segment"]),
            route("subpath", ["subpath"]),
            route("consumer", ["consumer-header"], auth={"methods": ["api_key"], "anonymous": True}),
            route("rename", ["rename-q"]),
            route("stamped", ["stamp"], auth={"methods": ["api_key"]}),
            route("stamped-dead", ["stamp"], upstream="dead"),
            route("request-body", ["request-body"]),
            route("replace", ["replace"], auth={"methods": ["api_key"], "anonymous": True}),
            route("host", ["host"]),
            route("who", ["who"]),
            route("local", ["local-only", "not-local"]),
            route("conditions", ["curl-or-beta"]),
            route("cookies", ["cookies", "set-cookies"]),
            route("maintenance", ["maintenance"]),
            route("to-form", ["to-form"], auth={"methods": ["api_key"]}),
            route("form", ["form-fields"], auth={"methods": ["api_key"]}),
            route("example-maintenance", ["maintenance-page"]),
            route("example-beta", ["beta-channel"]),
            route("example-form", ["form-submitted-by"], auth={"methods": ["api_key"]}),
        ],
    }


def write_rules(directory: Path, rules: dict[str, Any]) -> None:
    """``rules`` and the shipped second-round examples, into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in rules.items():
        (directory / name).write_text(content if isinstance(content, str) else json.dumps(content, indent=2))
    for name in SHIPPED_EXAMPLES:
        (directory / name).write_bytes((REPO_ROOT / "plugins" / name).read_bytes())


@pytest.fixture(scope="module")
def gateway(gateway_factory: GatewayFactory, echo_upstream: EchoUpstream) -> Iterator[Gateway]:
    gw = gateway_factory.create(config=round2_config(echo_upstream.url, gateway_factory.dead_url), start=False)
    write_rules(gw.workdir / "plugins", RULES)
    gw.start()
    yield gw
    gateway_factory.close([gw])


def forwarded_json(echo: dict[str, Any]) -> Any:
    assert echo["headers"].get("content-length") == str(echo["body_length"]), echo["headers"]
    return json.loads(echo["body"])


# -- defect 1: conditions of body operations see earlier rule sets ---------------------------------


def test_body_condition_sees_a_header_an_earlier_rule_set_set(gateway: Gateway) -> None:
    echo = echo_of(gateway.request("POST", "/staged/x", json={"a": 1}))
    assert echo["headers"].get("x-stage") == "one"
    assert forwarded_json(echo) == {"a": 1, "x": True}


def test_body_condition_sees_a_method_an_earlier_rule_set_set(gateway: Gateway) -> None:
    echo = echo_of(gateway.request("PUT", "/posted/x", json={"a": 1}))
    assert echo["method"] == "POST"
    assert forwarded_json(echo) == {"a": 1, "posted": True}


def test_response_body_condition_sees_a_header_an_earlier_rule_set_set(gateway: Gateway) -> None:
    response = gateway.get("/staged-response/x")
    assert response.status_code == 200
    assert response.headers.get("X-Stage") == "one"
    body = response.json()
    assert body["x"] is True and body["path"] == "/staged-response/x"
    assert int(response.headers["Content-Length"]) == len(response.content)


# -- defect 2: a skipped rule set's body limit does not apply --------------------------------------


def test_skipped_rule_set_limit_does_not_refuse_a_request_body(gateway: Gateway) -> None:
    document = {"pad": "p" * 400}
    echo = echo_of(gateway.request("POST", "/limits/x", json=document))
    assert forwarded_json(echo) == {"pad": "p" * 400, "big": True}
    # The PUT-only rule set applies to a PUT, and its limit with it.
    response = gateway.request("PUT", "/limits/x", json=document)
    body = assert_problem(response, 413, "transform-body-too-large")
    assert 'rule set "small"' in body["detail"], body


def test_skipped_response_rule_set_limit_does_not_break_big_answers(gateway: Gateway) -> None:
    # The echo's answer to a 1 KiB header is well above the 404-only rule set's 300 bytes.
    response = gateway.get("/nf-small/x", headers={"X-Pad": "p" * 1024})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["headers"]["x-pad"] == "p" * 1024
    assert "nf" not in response.json()["data"]
    not_found = gateway.get("/nf-small/x?status=404", headers={"X-Pad": "p" * 1024})
    assert_problem(not_found, 502, "transform-body-too-large")


def test_status_map_body_replaces_an_upstream_body_above_the_limit(gateway: Gateway) -> None:
    """The 5000-byte upstream body is discarded, not buffered: the limit is the replacement's."""
    response = gateway.get("/gone/x?status=404&bytes=5000", headers={"X-Request-ID": "gone-1"})
    assert response.status_code == 404, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json() == {"title": "Not Found", "status": 404, "request_id": "gone-1"}
    assert int(response.headers["Content-Length"]) == len(response.content)
    # Other statuses stream untouched, whatever their size.
    ok = gateway.get("/gone/x?bytes=5000")
    assert ok.status_code == 200 and len(ok.content) == 5000


# -- defect 5: check reports every kind of error at once -------------------------------------------


def test_check_reports_rule_file_and_reference_errors_in_one_run(make_gateway: Callable[..., Gateway],
                                                                 echo_upstream: EchoUpstream,
                                                                 gateway_factory: GatewayFactory) -> None:
    gw = make_gateway(config=round2_config(echo_upstream.url, gateway_factory.dead_url), start=False)
    write_rules(gw.workdir / "plugins", RULES)
    gw.start()
    broken = gw.workdir / "plugins" / "zz-broken.json"
    broken.write_text(json.dumps(rule("broken", "request", [{"op": "header.sett", "name": "X", "value": "1"}])))
    config = json.loads(gw.config_path.read_text())
    config["routes"][0]["plugins"] = ["stage-header", "v1-to-v3"]
    config["routes"][1]["upstream"] = "nope"
    gw.write_raw_config(json.dumps(config, indent=2))
    check = gw.cli("check")
    assert check.returncode == 1
    lines = check.stderr.splitlines()
    assert f'{broken}: /operations/0/op: unknown operation "header.sett"' in lines, check.stderr
    assert f'{gw.config_path}: /routes/0/plugins/1: unknown plugin rule set "v1-to-v3"' in lines, check.stderr
    assert f'{gw.config_path}: /routes/1/upstream: unknown upstream "nope"' in lines, check.stderr


# -- defect 6: rendered values cannot climb out of the template's prefix ---------------------------


@pytest.mark.parametrize("value", ["../../admin", "..", "a/b", "a%5Cb", "%2E%2E"])
def test_path_value_cannot_leave_the_template_prefix(gateway: Gateway, value: str) -> None:
    response = gateway.get(f"/segment/x?p={value}", headers={"X-Request-ID": "seg-1"})
    body = assert_problem(response, 400, "transform-unsafe-path")
    assert body["request_id"] == "seg-1"


def test_path_value_that_is_one_segment_is_forwarded(gateway: Gateway) -> None:
    echo = echo_of(gateway.get("/segment/x?p=report...v2.txt"))
    assert echo["path"] == "/p/report...v2.txt"


def test_allow_slashes_keeps_sub_paths_but_not_dot_segments(gateway: Gateway) -> None:
    assert echo_of(gateway.get("/subpath/x?p=a/b/c.txt"))["path"] == "/files/a/b/c.txt"
    assert_problem(gateway.get("/subpath/x?p=a/../../admin"), 400, "transform-unsafe-path")


# -- item 2: decided behaviours ---------------------------------------------------------------------


def test_header_set_that_renders_empty_removes_the_header(gateway: Gateway) -> None:
    anonymous = echo_of(gateway.get("/consumer/x", headers={"X-Consumer": "forged"}))
    assert "x-consumer" not in anonymous["headers"], anonymous["headers"]
    known = echo_of(gateway.get("/consumer/x", headers={"X-API-Key": DEMO_KEY, "X-Consumer": "forged"}))
    assert known["headers"]["x-consumer"] == "ann"


def test_query_rename_of_an_absent_parameter_keeps_the_query(gateway: Gateway) -> None:
    assert echo_of(gateway.get("/rename/x?b=1&c=2"))["query"] == "b=1&c=2"
    assert echo_of(gateway.get("/rename/x?a=1&b=2"))["query_params"] == {"b": ["1"]}


def test_response_rule_sets_do_not_touch_answers_the_gateway_makes(gateway: Gateway) -> None:
    assert gateway.get("/stamped/x", headers={"X-API-Key": DEMO_KEY}).headers.get("X-Transformed") == "yes"
    unauthorized = gateway.get("/stamped/x")
    assert_problem(unauthorized, 401)
    assert "X-Transformed" not in unauthorized.headers
    bad_gateway = gateway.get("/stamped-dead/x")
    assert_problem(bad_gateway, 502)
    assert "X-Transformed" not in bad_gateway.headers


def test_numbers_beyond_int64_and_double_keep_their_text(gateway: Gateway) -> None:
    text = b'{"id": 123456789012345678901234567890, "r": 1e400, "small": 2}'
    echo = echo_of(gateway.request("POST", "/request-body/x", data=text, headers={"Content-Type": "application/json"}))
    assert echo["body"] == '{"id":123456789012345678901234567890,"r":1e400,"small":2,"seen":true}'


def test_content_encoded_request_body_passes_untouched(gateway: Gateway) -> None:
    payload = gzip.compress(json.dumps({"a": 1}).encode())
    echo = echo_of(gateway.request("POST", "/request-body/x", data=payload,
                                   headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}))
    assert echo["body_sha256"] == hashlib.sha256(payload).hexdigest()
    plain = echo_of(gateway.request("POST", "/request-body/x", json={"a": 1}))
    assert forwarded_json(plain) == {"a": 1, "seen": True}


# -- item 3: replace, host, conditions, templates, cookies, whole-body replacement ----------------


def test_replace_changes_only_what_is_there(gateway: Gateway) -> None:
    echo = echo_of(gateway.request("POST", "/replace/x?page=7&page=8&n=5", headers={"X-Tenant": "acme", "X-API-Key": DEMO_KEY},
                                   json={"n": "1", "tags": "first"}))
    assert echo["headers"]["x-tenant"] == "tenant-acme"
    assert "x-absent" not in echo["headers"]
    assert echo["query_params"] == {"page": ["1"], "n": ["5"]}
    assert forwarded_json(echo) == {"n": 5, "tags": ["first", "ann"]}
    untouched = echo_of(gateway.request("POST", "/replace/x", json={"tags": ["a"]}))
    assert "x-tenant" not in untouched["headers"] and untouched["query"] == ""
    assert forwarded_json(untouched) == {"tags": ["a", None]}, "anonymous: a typed missing value is null"


def test_host_set_rewrites_the_upstream_host(gateway: Gateway) -> None:
    assert echo_of(gateway.get("/host/x"))["headers"]["host"] == "api.internal.example"
    assert echo_of(gateway.get("/who/x"))["headers"]["host"] != "api.internal.example"


def test_new_template_variables_and_the_escape(gateway: Gateway) -> None:
    echo = echo_of(gateway.get("/who/x", headers={"Host": "shop.example", "Cookie": "sid=s-1; other=2"}))
    client, host, scheme, sid, literal = echo["headers"]["x-who"].split("|")
    assert client in ("127.0.0.1", "::1")
    assert (host, scheme, sid, literal) == ("shop.example", "http", "s-1", "{{literal}}")
    assert abs(int(echo["headers"]["x-epoch"]) - time.time()) < 60


def test_client_ip_conditions(gateway: Gateway) -> None:
    echo = echo_of(gateway.get("/local/x"))
    assert echo["headers"].get("x-local") == "yes"
    assert "x-remote" not in echo["headers"]


@pytest.mark.parametrize("path, headers, hit", [
    ("/conditions/x", {"User-Agent": "curl/8.5"}, True),
    ("/conditions/x", {"User-Agent": "python", "Cookie": "beta=1"}, True),
    ("/conditions/x", {"User-Agent": "python", "Cookie": "beta=0"}, False),
    ("/conditions/x?skip", {"User-Agent": "curl/8.5"}, False),
])
def test_regex_any_not_cookie_and_path_conditions(gateway: Gateway, path: str, headers: dict[str, str], hit: bool) -> None:
    echo = echo_of(gateway.get(path, headers=headers))
    assert (echo["headers"].get("x-hit") == "yes") is hit, echo["headers"]


def test_cookie_operations(gateway: Gateway) -> None:
    response = gateway.get("/cookies/x?tenant=acme&set_header=Set-Cookie:internal%3D1&set_header=Set-Cookie:keep%3D2",
                           headers={"Cookie": "tracking=t; session=s", "X-Request-ID": "cookie-1"})
    echo = echo_of(response)
    assert echo["headers"]["cookie"] == "session=s; tenant=acme"
    set_cookies = response.raw.headers.getlist("Set-Cookie")
    assert sorted(set_cookies) == ["keep=2", "sid=cookie-1; Path=/; HttpOnly"], set_cookies
    refused = gateway.get("/cookies/x?tenant=a%3Bb")
    assert_problem(refused, 500, "transform-unsafe-value")


def test_whole_body_replacement_in_the_response(gateway: Gateway) -> None:
    response = gateway.get("/maintenance/x?status=502", headers={"X-Request-ID": "mnt-1"})
    assert response.status_code == 503
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Retry-After"] == "30"
    assert response.text == "Down for maintenance (request mnt-1).\n"
    assert int(response.headers["Content-Length"]) == len(response.content)
    ok = gateway.get("/maintenance/x")
    assert ok.status_code == 200 and ok.json()["path"] == "/maintenance/x"


def test_form_field_operations(gateway: Gateway) -> None:
    echo = echo_of(gateway.request("POST", "/form/x", data={"user": "ann", "password": "s3cret", "note": "a b"},
                                   headers={"X-API-Key": DEMO_KEY}))
    assert echo["body"] == "username=ann&note=a%20b&consumer=ann"
    assert echo["headers"]["content-length"] == str(len(echo["body"]))
    json_body = echo_of(gateway.request("POST", "/form/x", json={"password": "kept"}, headers={"X-API-Key": DEMO_KEY}))
    assert json.loads(json_body["body"]) == {"password": "kept"}


def test_whole_body_replacement_in_the_request(gateway: Gateway) -> None:
    echo = echo_of(gateway.request("POST", "/to-form/x", data=b"ignored,csv", headers={"Content-Type": "text/csv", "X-API-Key": DEMO_KEY}))
    assert echo["body"] == "user=ann&source=gateway"
    assert echo["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert echo["headers"]["content-length"] == str(len("user=ann&source=gateway"))


# -- the shipped second-round examples ------------------------------------------------------------


def test_example_maintenance_page(gateway: Gateway) -> None:
    response = gateway.get("/example-maintenance/x?status=500&bytes=200000", headers={"X-Request-ID": "ex-mnt"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert response.text == "We are down for maintenance. Please retry in 30 seconds (request ex-mnt).\n"
    assert gateway.get("/example-maintenance/x?bytes=200000").status_code == 200


def test_example_beta_channel(gateway: Gateway) -> None:
    beta = echo_of(gateway.get("/example-beta/x", headers={"Cookie": "beta=1; sid=s", "User-Agent": "Firefox"}))
    assert beta["headers"]["host"] == "beta.internal.example"
    assert beta["headers"]["x-channel"] == "beta"
    assert beta["headers"]["cookie"] == "sid=s"
    crawler = echo_of(gateway.get("/example-beta/x", headers={"X-Beta": "yes", "User-Agent": "Googlebot/2.1"}))
    assert crawler["headers"]["host"] != "beta.internal.example" and "x-channel" not in crawler["headers"]


def test_example_form_submitted_by(gateway: Gateway) -> None:
    echo = echo_of(gateway.request("POST", "/example-form/comments", headers={"X-API-Key": DEMO_KEY},
                                   data={"text": "Hello there", "csrf_token": "abc", "submitted_by": "mallory"}))
    assert echo["body"] == "text=Hello%20there&submitted_by=ann"
    upload = echo_of(gateway.request("POST", "/example-form/comments", data=b"csrf_token=abc",
                                     headers={"X-API-Key": DEMO_KEY, "Content-Type": "application/octet-stream"}))
    assert upload["body"] == "csrf_token=abc", "a body of another media type is no form"
