import XCTest
@testable import PortcullisCore

final class UpstreamConfigTests: XCTestCase {
    private func parse(_ upstream: String) throws -> UpstreamConfig {
        let json = #"{"upstreams": {"svc": \#(upstream)}, "routes": [{"match": {"prefix": "/"}, "upstream": "svc"}]}"#
        let config = try ConfigLoader.parse(bytes: Array(json.utf8), file: "c.json")
        return try XCTUnwrap(config.upstreams["svc"])
    }

    private func errors(_ upstream: String) -> [String] {
        do {
            _ = try parse(upstream)
            return []
        } catch let error as ConfigErrors {
            return error.issues.map(\.description)
        } catch {
            return ["\(error)"]
        }
    }

    private func effective(_ upstream: String) throws -> JSONValue {
        let json = Array(#"{"upstreams": {"svc": \#(upstream)}, "routes": [{"match": {"prefix": "/"}, "upstream": "svc"}]}"#.utf8)
        let document = EffectiveConfig.document(of: try ConfigLoader.parse(bytes: json, file: "c.json"), source: json)
        return try XCTUnwrap(document["upstreams"]?["svc"])
    }

    func testEffectiveUpstreamShowsEveryDefault() throws {
        let shown = try effective(#"{"targets": ["http://10.0.0.1:80", {"url": "http://10.0.0.2:80", "weight": 3}]}"#)
        XCTAssertEqual(shown["targets"], ["http://10.0.0.1:80", ["url": "http://10.0.0.2:80", "weight": 3]])
        XCTAssertEqual(shown["connect_timeout_ms"], 2_000)
        XCTAssertEqual(shown["timeout_ms"], 30_000)
        XCTAssertEqual(shown["balancer"], "round_robin")
        XCTAssertEqual(shown["retries"], ["attempts": 2, "budget_percent": 20, "budget_min": 10, "budget_window_s": 10, "backoff_ms": 20,
                                          "on_statuses": [502, 503, 504]])
        XCTAssertEqual(shown["circuit_breaker"], ["consecutive_failures": 5, "failure_ratio_percent": nil, "minimum_calls": 20, "window_s": 10,
                                                  "open_ms": 5_000, "max_open_ms": 60_000, "half_open_probes": 1,
                                                  "failure_statuses": [502, 503, 504]])
        XCTAssertEqual(shown["health_check"], .null)
        XCTAssertEqual(shown["max_in_flight"], .null)
        XCTAssertEqual(shown["x_accel_buffering"], true)
    }

    func testEffectiveUpstreamFillsAHealthCheckAndKeepsShorthands() throws {
        let shown = try effective(#"{"targets": ["http://10.0.0.1:80"], "health_check": {"path": "/healthz"}, "retries": false,"#
                                  + #" "circuit_breaker": false, "balancer": {"algorithm": "hash", "hash_on": "header:X-User"}, "max_in_flight": 7}"#)
        XCTAssertEqual(shown["health_check"], ["method": "GET", "path": "/healthz", "interval_ms": 2_000, "timeout_ms": 1_000,
                                               "healthy_threshold": 2, "unhealthy_threshold": 3,
                                               "expected_statuses": .array((200...399).map { .int(Int64($0)) }), "host": nil])
        XCTAssertEqual(shown["retries"]?["attempts"], 0)
        XCTAssertEqual(shown["circuit_breaker"], false)
        XCTAssertEqual(shown["balancer"], ["algorithm": "hash", "hash_on": "header:x-user"])
        XCTAssertEqual(shown["max_in_flight"], 7)
    }

    /// The effective document is configuration: loaded back, it gives the same upstream.
    func testEffectiveUpstreamLoadsBackIntoTheSameUpstream() throws {
        for upstream in [#"{"targets": ["http://10.0.0.1:80", {"url": "http://10.0.0.2:80", "weight": 5}]}"#,
                         #"{"targets": ["http://10.0.0.1:80", "http://10.0.0.2:81/"], "connect_timeout_ms": 300, "timeout_ms": 900,"#
                         + #" "balancer": "least_requests", "retries": {"attempts": 4, "on_statuses": [500]}, "max_in_flight": 9,"#
                         + #" "circuit_breaker": {"failure_ratio_percent": 50, "open_ms": 100, "failure_statuses": [500, 599]},"#
                         + #" "health_check": {"method": "head", "host": "svc.local", "expected_statuses": [204]}, "x_accel_buffering": false}"#] {
            let shown = JSONCodec.serialize(try effective(upstream))
            XCTAssertEqual(try parse(shown), try parse(upstream), shown)
        }
    }

    func testDefaults() throws {
        let u = try parse(#"{"targets": ["http://10.0.0.1:80", "http://10.0.0.2:80"]}"#)
        XCTAssertEqual(u.weights, [1, 1])
        XCTAssertEqual(u.balancer, .roundRobin)
        XCTAssertEqual(u.retry, RetryPolicy())
        XCTAssertEqual(u.breaker, BreakerPolicy())
        XCTAssertNil(u.healthCheck)
        XCTAssertNil(u.maxInFlight)
    }

    func testEveryField() throws {
        let u = try parse("""
        {"targets": ["http://10.0.0.1:80", {"url": "http://10.0.0.2:80/", "weight": 3}],
         "balancer": {"algorithm": "hash", "hash_on": "header:X-User"},
         "retries": {"attempts": 1, "budget_percent": 10, "budget_min": 3, "budget_window_s": 5, "backoff_ms": 0, "on_statuses": [503]},
         "circuit_breaker": {"consecutive_failures": 2, "failure_ratio_percent": 40, "minimum_calls": 8, "window_s": 30,
                             "open_ms": 200, "max_open_ms": 800, "half_open_probes": 3, "failure_statuses": [500, 503]},
         "health_check": {"method": "head", "path": "/healthz", "interval_ms": 500, "timeout_ms": 300, "healthy_threshold": 1,
                          "unhealthy_threshold": 2, "expected_statuses": [200, 204], "host": "svc.internal"},
         "max_in_flight": 50}
        """)
        XCTAssertEqual(u.targets, ["http://10.0.0.1:80", "http://10.0.0.2:80"])
        XCTAssertEqual(u.weights, [1, 3])
        XCTAssertEqual(u.balancer, .hash(.header("x-user")))
        XCTAssertEqual(u.retry.attempts, 1)
        XCTAssertEqual(u.retry.budgetPercent, 10)
        XCTAssertEqual(u.retry.budgetMinimum, 3)
        XCTAssertEqual(u.retry.budgetWindowSeconds, 5)
        XCTAssertEqual(u.retry.backoffMs, 0)
        XCTAssertEqual(u.retry.onStatuses, [503])
        XCTAssertEqual(u.breaker.consecutiveFailures, 2)
        XCTAssertEqual(u.breaker.failureRatioPercent, 40)
        XCTAssertEqual(u.breaker.minimumCalls, 8)
        XCTAssertEqual(u.breaker.windowSeconds, 30)
        XCTAssertEqual(u.breaker.openMs, 200)
        XCTAssertEqual(u.breaker.maxOpenMs, 800)
        XCTAssertEqual(u.breaker.halfOpenProbes, 3)
        XCTAssertEqual(u.breaker.failureStatuses, [500, 503])
        let h = try XCTUnwrap(u.healthCheck)
        XCTAssertEqual(h.method, "HEAD")
        XCTAssertEqual(h.path, "/healthz")
        XCTAssertEqual(h.intervalMs, 500)
        XCTAssertEqual(h.timeoutMs, 300)
        XCTAssertEqual(h.healthyThreshold, 1)
        XCTAssertEqual(h.unhealthyThreshold, 2)
        XCTAssertEqual(h.expectedStatuses, [200, 204])
        XCTAssertEqual(h.host, "svc.internal")
        XCTAssertEqual(u.maxInFlight, 50)
    }

    func testShortForms() throws {
        XCTAssertEqual(try parse(#"{"targets": ["http://a:1"], "balancer": "least_requests"}"#).balancer, .leastRequests)
        XCTAssertEqual(try parse(#"{"targets": ["http://a:1"], "balancer": {"algorithm": "hash", "hash_on": "consumer"}}"#).balancer, .hash(.consumer))
        XCTAssertEqual(try parse(#"{"targets": ["http://a:1"], "retries": false}"#).retry.attempts, 0)
        XCTAssertEqual(try parse(#"{"targets": ["http://a:1"], "retries": 4}"#).retry.attempts, 4)
        XCTAssertFalse(try parse(#"{"targets": ["http://a:1"], "circuit_breaker": false}"#).breaker.enabled)
    }

    func testErrorsNameFileAndPointer() {
        XCTAssertEqual(errors(#"{"targets": [{"url": "http://a:1", "weight": 0}, {"weight": 2}, "http://a:1"]}"#), [
            "c.json: /upstreams/svc/targets/0/weight: must be between 1 and 1000, found 0",
            "c.json: /upstreams/svc/targets/1/url: required field is missing",
            #"c.json: /upstreams/svc/targets/2: duplicate target "http://a:1""#,
        ])
        XCTAssertEqual(errors(#"{"targets": ["http://a:1"], "balancer": "random"}"#),
                       [#"c.json: /upstreams/svc/balancer: unknown balancer "random" (round_robin, least_requests, hash)"#])
        XCTAssertEqual(errors(#"{"targets": ["http://a:1"], "balancer": {"algorithm": "hash", "hash_on": "cookie"}}"#),
                       [#"c.json: /upstreams/svc/balancer/hash_on: expected "consumer", "client_ip" or "header:Name", found "cookie""#])
        XCTAssertEqual(errors(#"{"targets": ["http://a:1"], "circuit_breaker": {"open_ms": 500, "max_open_ms": 100, "half_open_probes": 64}}"#), [
            "c.json: /upstreams/svc/circuit_breaker/max_open_ms: must be at least open_ms (500)",
            "c.json: /upstreams/svc/circuit_breaker/half_open_probes: must be between 1 and 63, found 64",
        ])
        XCTAssertEqual(errors(#"{"targets": ["http://a:1"], "health_check": {"path": "health", "expected_statuses": [700], "intervall_ms": 5}}"#).sorted(), [
            "c.json: /upstreams/svc/health_check/expected_statuses/0: must be between 100 and 599, found 700",
            #"c.json: /upstreams/svc/health_check/intervall_ms: unknown field "intervall_ms""#,
            #"c.json: /upstreams/svc/health_check/path: must start with "/" and contain no spaces or line breaks"#,
        ])
        XCTAssertEqual(errors(#"{"targets": ["http://a:1"], "max_in_flight": 0, "retries": {"attempts": 11}}"#).sorted(), [
            "c.json: /upstreams/svc/max_in_flight: must be between 1 and 1000000, found 0",
            "c.json: /upstreams/svc/retries/attempts: must be between 0 and 10, found 11",
        ])
    }

    /// upstreams.md's refusals that a config author meets without writing the named field, or
    /// with a short form that is not accepted.
    func testRefusalsTheDocsName() throws {
        XCTAssertEqual(errors(#"{"targets": ["http://a:1"], "circuit_breaker": {"open_ms": 70000}}"#),
                       ["c.json: /upstreams/svc/circuit_breaker/max_open_ms: must be at least open_ms (70000)"])
        XCTAssertEqual(errors(#"{"targets": ["http://a:1"], "retries": true}"#),
                       ["c.json: /upstreams/svc/retries: expected an object, found boolean"])
        XCTAssertEqual(errors(#"{"targets": ["http://a:1"], "balancer": "hash"}"#),
                       [#"c.json: /upstreams/svc/balancer: "hash" needs an object with "hash_on""#])
        XCTAssertEqual(errors(#"{"targets": ["http://a:1"], "health_check": {"timeout_ms": 9, "host": "a/b", "failure_statuses": []}}"#).sorted(), [
            #"c.json: /upstreams/svc/health_check/failure_statuses: unknown field "failure_statuses""#,
            "c.json: /upstreams/svc/health_check/host: not a valid Host header value",
            "c.json: /upstreams/svc/health_check/timeout_ms: must be between 10 and 600000, found 9",
        ])
        XCTAssertEqual(errors(#"{"targets": ["http://a:1"], "retries": {"on_statuses": []}}"#),
                       ["c.json: /upstreams/svc/retries/on_statuses: at least one status is required"])
        XCTAssertTrue(try parse(#"{"targets": ["http://a:1"], "circuit_breaker": true}"#).breaker.enabled)
        XCTAssertEqual(try parse(#"{"targets": ["http://a:1"], "health_check": {}}"#).healthCheck, HealthCheckPolicy())
        XCTAssertEqual(try parse(#"{"targets": ["http://a:1"], "retries": {"on_statuses": [500]}}"#).retry.onStatuses, [500])
    }
}
