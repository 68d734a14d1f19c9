"""Issue 13: transforms, second round, through real nginx, the real gateway and the echo upstream.

Each gateway here has its own ``plugins/`` holding only the rule files of this module
(``RULES``), so every case is visible in one place. Request transforms show in the echo's
answer (the request it received); response transforms run on that answer.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import EchoUpstream, Gateway, GatewayFactory, assert_problem, echo_of

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
        ],
    }


def write_rules(directory: Path, rules: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in rules.items():
        (directory / name).write_text(content if isinstance(content, str) else json.dumps(content, indent=2))


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


def test_content_encoded_request_body_passes_untouched(gateway: Gateway) -> None:
    payload = gzip.compress(json.dumps({"a": 1}).encode())
    echo = echo_of(gateway.request("POST", "/request-body/x", data=payload,
                                   headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}))
    assert echo["body_sha256"] == hashlib.sha256(payload).hexdigest()
    plain = echo_of(gateway.request("POST", "/request-body/x", json={"a": 1}))
    assert forwarded_json(plain) == {"a": 1, "seen": True}
