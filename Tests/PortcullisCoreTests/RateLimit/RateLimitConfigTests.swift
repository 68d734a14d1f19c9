import XCTest
@testable import PortcullisCore

final class RateLimitConfigTests: XCTestCase {
    private func parse(_ json: String) throws(ConfigErrors) -> GatewayConfig {
        try ConfigLoader.parse(bytes: Array(json.utf8), file: "test.json")
    }

    private func document(limits: String, rateLimit: String? = nil) -> String {
        """
        {\(rateLimit.map { "\"rate_limit\": \($0)," } ?? "")
         "upstreams": {"echo": {"targets": ["http://127.0.0.1:9000"]}},
         "routes": [{"name": "r", "match": {"prefix": "/limited/"}, "upstream": "echo", "limits": \(limits)}]}
        """
    }

    private func issues(_ json: String) -> [String] {
        do {
            _ = try parse(json)
            return []
        } catch {
            return error.issues.map(\.description)
        }
    }

    func testReadsLimitsAndSettings() throws {
        let config = try parse(document(limits: """
            [{"name": "per-key-second", "algorithm": "token_bucket", "limit": 10, "window_seconds": 1, "burst": 20,
              "key": ["consumer", "route"], "store": "redis", "on_store_failure": "closed",
              "groups": {"gold": {"limit": 100}}},
             {"name": "per-day", "algorithm": "fixed_window", "limit": 10000, "window_seconds": 86400, "key": ["api_key"]},
             {"name": "by-header", "algorithm": "sliding_window", "limit": 5, "window_seconds": 10, "key": ["header:X-Tenant", "claim:org", "ip"]}]
            """, rateLimit: """
            {"table_slots": 4096, "redis": {"host": "10.0.0.5", "port": 6380, "namespace": "gw", "timeout_ms": 30, "instances": 3}}
            """))
        XCTAssertEqual(config.rateLimit.tableSlots, 4096)
        XCTAssertEqual(config.rateLimit.redis?.endpoint, .tcp(RedisAddress(host: "10.0.0.5", port: 6380)))
        XCTAssertEqual(config.rateLimit.redis?.namespace, "gw")
        XCTAssertEqual(config.rateLimit.redis?.timeoutMs, 30)
        XCTAssertEqual(config.rateLimit.redis?.instances, 3)
        let limits = config.routes[0].limits
        XCTAssertEqual(limits.map(\.name), ["per-key-second", "per-day", "by-header"])
        XCTAssertEqual(limits[0].params, RateLimitParams(algorithm: .tokenBucket, limit: 10, windowMicros: 1_000_000, burst: 20))
        XCTAssertEqual(limits[0].key, [.consumer, .route])
        XCTAssertEqual(limits[0].store, .redis)
        XCTAssertEqual(limits[0].onStoreFailure, .closed)
        // The plan keeps the base burst-to-limit ratio when it sets no burst of its own.
        XCTAssertEqual(limits[0].params(forGroups: ["silver", "gold"]),
                       RateLimitParams(algorithm: .tokenBucket, limit: 100, windowMicros: 1_000_000, burst: 200))
        XCTAssertEqual(limits[0].params(forGroups: ["silver"]), limits[0].params)
        XCTAssertEqual(limits[1].key, [.credential])
        XCTAssertEqual(limits[1].store, .local)
        XCTAssertEqual(limits[2].key, [.header("x-tenant"), .claim("org"), .ip])
    }

    func testEveryErrorHasItsPointer() {
        let found = issues(document(limits: """
            [{"name": "a", "algorithm": "leaky", "limit": 10, "window_seconds": 1, "key": ["consumer"]},
             {"name": "b", "algorithm": "fixed_window", "limit": 0, "window_seconds": 1, "key": ["cookie"], "burst": 3},
             {"name": "b", "algorithm": "fixed_window", "limit": 1, "window_seconds": 1, "key": []},
             {"name": "c", "algorithm": "token_bucket", "limit": 1, "window_seconds": 1, "key": ["ip"], "store": "redis"},
             {"name": "d", "algorithm": "token_bucket", "limit": 1, "window_seconds": 1, "key": ["ip"], "on_store_failure": "open", "speed": 1},
             {"name": "e", "algorithm": "sliding_window", "limit": 2000000, "window_seconds": 1, "key": ["ip", "ip"]},
             {"name": "f", "algorithm": "fixed_window", "limit": 1, "window_seconds": 1, "key": ["ip"], "groups": {"gold": {"limit": "x"}}}]
            """))
        let expected = [
            "test.json: /routes/0/limits/0/algorithm: unknown algorithm \"leaky\" (token_bucket, sliding_window, fixed_window or concurrency)",
            "test.json: /routes/0/limits/1/key/0: unknown key part \"cookie\" (api_key, credential, consumer, ip, route, path, path_param:<name>, method, header:<Name>, claim:<name>, query:<name>, cookie:<name>, var:<NAME>)",
            "test.json: /routes/0/limits/1/limit: must be between 1 and 4294967295, found 0",
            "test.json: /routes/0/limits/1/burst: only applies to the token_bucket algorithm",
            "test.json: /routes/0/limits/2/key: at least one key part is required",
            "test.json: /routes/0/limits/3/store: store \"redis\" needs a top-level \"rate_limit\": {\"redis\": {…}} section",
            "test.json: /routes/0/limits/4/speed: unknown field \"speed\"",
            "test.json: /routes/0/limits/4/on_store_failure: only applies to limits with \"store\": \"redis\"",
            "test.json: /routes/0/limits/5/key/1: duplicate key part \"ip\"",
            "test.json: /routes/0/limits/5/limit: must be between 1 and 1048575, found 2000000",
            "test.json: /routes/0/limits/6/groups/gold/limit: expected an integer, found string",
        ]
        for e in expected { XCTAssertTrue(found.contains(e), "missing: \(e)\nfound:\n\(found.joined(separator: "\n"))") }
        XCTAssertEqual(found.count, expected.count, found.joined(separator: "\n"))
    }

    func testDuplicateLimitNamesAndBadSettings() {
        let found = issues(document(limits: """
            [{"name": "a", "algorithm": "fixed_window", "limit": 1, "window_seconds": 1, "key": ["ip"]},
             {"name": "a", "algorithm": "fixed_window", "limit": 2, "window_seconds": 1, "key": ["ip"]}]
            """, rateLimit: """
            {"table_slots": 3, "redis": {"port": 0, "timeout_ms": 0, "instances": 0, "password": "x"}}
            """))
        XCTAssertEqual(Set(found), [
            "test.json: /rate_limit/table_slots: must be between 64 and 67108864, found 3",
            "test.json: /rate_limit/redis/password: unknown field \"password\"",
            "test.json: /rate_limit/redis/port: must be between 1 and 65535, found 0",
            "test.json: /rate_limit/redis/timeout_ms: must be between 1 and 10000, found 0",
            "test.json: /rate_limit/redis/instances: must be between 1 and 10000, found 0",
            "test.json: /routes/0/limits/1/name: duplicate limit name \"a\" (first at /routes/0/limits/0)",
        ])
    }

    /// rate-limiting.md's table of a limit's errors and the Redis ranges, as documented.
    func testDocumentedRefusalsAndDefaultName() throws {
        let found = issues(document(limits: """
            [{"name": "a|b", "algorithm": "token_bucket", "limit": 1, "window_seconds": 1, "burst": 0, "key": ["ip"]},
             {"algorithm": "concurrency", "limit": 1, "window_seconds": 1, "key": ["ip"], "store": "redis"},
             {"algorithm": "fixed_window", "limit": 1, "window_seconds": 1, "lease_seconds": 5, "key": ["ip"]}]
            """, rateLimit: """
            {"redis": {"retry_ms": 9, "namespace": "a b", "instances": 10001}}
            """))
        XCTAssertEqual(Set(found), [
            "test.json: /rate_limit/redis/retry_ms: must be between 10 and 600000, found 9",
            "test.json: /rate_limit/redis/namespace: must not contain spaces or line breaks",
            "test.json: /rate_limit/redis/instances: must be between 1 and 10000, found 10001",
            "test.json: /routes/0/limits/0/name: must not contain \"|\"",
            "test.json: /routes/0/limits/0/burst: must be between 1 and 1000000000, found 0",
            "test.json: /routes/0/limits/1/window_seconds: a concurrency limit has no window (its leases last \"lease_seconds\")",
            "test.json: /routes/0/limits/1/store: a concurrency limit is held in the shared-memory table only (store \"local\")",
            "test.json: /routes/0/limits/2/lease_seconds: only applies to the concurrency algorithm",
        ])
        let config = try parse(document(limits: """
            [{"algorithm": "fixed_window", "limit": 1, "window_seconds": 1, "key": ["ip"]},
             {"algorithm": "fixed_window", "limit": 2, "window_seconds": 1, "key": ["ip"]}]
            """))
        XCTAssertEqual(config.routes[0].limits.map(\.name), ["limit-0", "limit-1"])
        XCTAssertEqual(issues(document(limits: #"[{"algorithm": "fixed_window", "limit": 1, "window_seconds": 1, "key": ["api_key", "credential"]}]"#)),
                       [#"test.json: /routes/0/limits/0/key/1: duplicate key part "credential""#])
        let lower = try parse(document(limits: #"[{"algorithm": "fixed_window", "limit": 1, "window_seconds": 1, "key": ["var:tenant"]}]"#))
        XCTAssertEqual(lower.routes[0].limits[0].key, [.variable("TENANT")])
    }

    /// Issue 14.4: a token bucket's largest `limit` depends on its window (one request per µs).
    func testTokenBucketMaximumDependsOnTheWindow() {
        func bucket(_ limit: Int, _ seconds: Int) -> String {
            document(limits: "[{\"algorithm\": \"token_bucket\", \"limit\": \(limit), \"window_seconds\": \(seconds), \"key\": [\"ip\"]}]")
        }
        XCTAssertEqual(issues(bucket(1_000_000, 1)), [])
        XCTAssertEqual(issues(bucket(1_000_001, 1)),
                       ["test.json: /routes/0/limits/0/limit: a token bucket refills at most one request per microsecond"])
        XCTAssertEqual(issues(bucket(1_000_000_000, 1_000)), [])
        XCTAssertEqual(issues(bucket(1_000_000_000, 999)),
                       ["test.json: /routes/0/limits/0/limit: a token bucket refills at most one request per microsecond"])
    }

    func testKeyTextIsUnambiguousAndIncludesParams() {
        let p = RateLimitParams(algorithm: .fixedWindow, limit: 5, windowMicros: 10_000_000)
        func key(_ consumer: String?, _ ip: String, params: RateLimitParams = p) -> RateLimitKey {
            RateLimitKey.make(limitName: "l", params: params, parts: [.consumer, .ip],
                              subject: RateLimitSubject(credentialId: nil, consumerId: consumer, consumerGroups: [], clientIP: ip, routeName: "r"))
        }
        XCTAssertEqual(key("a", "1.2.3.4").text, "l|fixed_window/5/10000000/5|1:a|7:1.2.3.4")
        XCTAssertEqual(key(nil, "1.2.3.4").text, "l|fixed_window/5/10000000/5|-|7:1.2.3.4")
        XCTAssertNotEqual(key("a|7:b", "c"), key("a", "b|7:c"))
        XCTAssertNotEqual(key("-", "x"), key(nil, "x"))
        XCTAssertNotEqual(key("a", "x").hash, key("a", "x", params: RateLimitParams(algorithm: .fixedWindow, limit: 6, windowMicros: 10_000_000)).hash)
        // Stable across processes and runs (not Swift's seeded Hasher).
        XCTAssertEqual(StableHash.hash("portcullis"), StableHash.hash("portcullis"))
        XCTAssertEqual(StableHash.hash(""), StableHash.mix(0xcbf2_9ce4_8422_2325))
    }
}
