import XCTest
@testable import PortcullisCore

/// Issue 14: request cost, shadow mode, rejection shape, hidden headers, key parts, exemptions
/// and concurrency leases, on the pure limiter (an in-memory store, a fake clock).
final class RateLimitOptionsTests: XCTestCase {
    let t0: Int64 = 1_700_000_000_000_000

    func limiter() -> RateLimiter { RateLimiter(local: InMemoryRateLimitStore(), remote: nil, settings: RateLimitSettings()) }

    func subject(consumer: String? = "alice", groups: [String] = [], ip: String = "192.0.2.1",
                 headers: [String: String] = [:], claims: [String: String] = [:], request: GatewayRequest? = nil,
                 pathParams: [String: String] = [:]) -> RateLimitSubject {
        var s = RateLimitSubject(credentialId: "key-1", consumerId: consumer, consumerGroups: groups, clientIP: ip, routeName: "r",
                                 header: { headers[$0] }, claim: { claims[$0] })
        s.request = request
        s.pathParams = pathParams
        return s
    }

    func spec(_ name: String, _ algorithm: RateLimitAlgorithm = .fixedWindow, limit: Int64, window: Int64 = 10,
              key: [RateLimitKeyPart] = [.consumer], configure: (inout RateLimitSpec) -> Void = { _ in }) -> RateLimitSpec {
        var s = RateLimitSpec(name: name, params: RateLimitParams(algorithm: algorithm, limit: limit, windowMicros: window * 1_000_000),
                              key: key)
        configure(&s)
        return s
    }

    // MARK: cost

    func testConstantCostChargesEveryAlgorithmExactly() {
        for algorithm in [RateLimitAlgorithm.fixedWindow, .slidingWindow, .tokenBucket] {
            let l = limiter()
            let limits = [spec("c", algorithm, limit: 10, window: 3600) { $0.cost = .constant(3) }]
            let admitted = (0..<10).filter { _ in l.evaluate(limits, subject: subject(), now: t0).allowed }.count
            XCTAssertEqual(admitted, 3, "\(algorithm): 3 × 3 = 9 of 10")
            let probe = l.evaluate([spec("c", algorithm, limit: 10, window: 3600)], subject: subject(), now: t0)
            XCTAssertEqual(probe.results[0].decision?.remaining, 0, "\(algorithm): the last unit is still there for a cost of 1")
        }
    }

    func testCostFromHeaderOrClaimWithinBoundsElse400() {
        let l = limiter()
        let byHeader = [spec("h", limit: 20) { $0.cost = .header("x-cost", default: 2, max: 5) }]
        XCTAssertEqual(l.evaluate(byHeader, subject: subject(headers: ["x-cost": "5"]), now: t0).results[0].decision?.remaining, 15)
        XCTAssertEqual(l.evaluate(byHeader, subject: subject(), now: t0).results[0].decision?.remaining, 13, "absent: the default 2")
        for bad in ["6", "0", "-1", "1.5", " 3", "abc", "", "99999999"] {
            let o = l.evaluate(byHeader, subject: subject(headers: ["x-cost": bad]), now: t0)
            XCTAssertEqual(o.verdict, .invalidCost("rate limit \"h\": header \"x-cost\" must be an integer between 1 and 5"), bad)
            XCTAssertEqual(o.problem?.status, 400)
            XCTAssertEqual(o.problem?.type, "https://portcullis.dev/problems/invalid-rate-limit-cost")
        }
        XCTAssertEqual(l.evaluate(byHeader, subject: subject(), now: t0).results[0].decision?.remaining, 11, "bad costs consumed nothing")

        let byClaim = [spec("first", limit: 100), spec("w", limit: 20, key: [.consumer]) { $0.cost = .claim("weight", default: 1, max: 10) }]
        XCTAssertEqual(l.evaluate(byClaim, subject: subject(claims: ["weight": "7"]), now: t0).results[1].decision?.remaining, 13)
        let bad = l.evaluate(byClaim, subject: subject(claims: ["weight": "11"]), now: t0)
        XCTAssertEqual(bad.problem?.status, 400)
        // The earlier limit was refunded: the bad request consumed from none.
        XCTAssertEqual(l.evaluate([byClaim[0]], subject: subject(), now: t0).results[0].decision?.remaining, 98)
    }

    // MARK: shadow

    func testShadowCountsExactlyAndNeverRejects() {
        let l = limiter()
        let limits = [spec("trial", limit: 3) { $0.mode = .shadow }, spec("real", limit: 100)]
        var kinds: [String] = []
        for _ in 0..<6 {
            let o = l.evaluate(limits, subject: subject(), now: t0)
            XCTAssertTrue(o.allowed)
            XCTAssertNil(o.problem)
            // Only the enforced limit is advertised.
            XCTAssertEqual(o.headers["RateLimit-Policy"], "\"real\";q=100;w=10")
            kinds.append(o.logSummary)
        }
        XCTAssertEqual(kinds, [
            "trial:shadow_allowed:2,real:allowed:99", "trial:shadow_allowed:1,real:allowed:98", "trial:shadow_allowed:0,real:allowed:97",
            "trial:shadow_denied:0,real:allowed:96", "trial:shadow_denied:0,real:allowed:95", "trial:shadow_denied:0,real:allowed:94",
        ])
        XCTAssertEqual(l.evaluate(limits, subject: subject(), now: t0).results[0].kind, .shadowDenied)
    }

    // MARK: rejection shape and hidden headers

    func testRejectionStatusTitleDetailAndHiddenHeaders() {
        let l = limiter()
        let limits = [spec("quiet", limit: 1) {
            $0.rejection = RateLimitRejection(status: 503, title: "Slow down", detail: "Try again later.")
            $0.hideClientHeaders = true
        }]
        let ok = l.evaluate(limits, subject: subject(), now: t0 + 4_000_000)
        XCTAssertTrue(ok.allowed)
        XCTAssertEqual(ok.headers.count, 0, "no RateLimit fields")
        let o = l.evaluate(limits, subject: subject(), now: t0 + 4_000_000)
        let p = try! XCTUnwrap(o.problem)
        XCTAssertEqual(p.status, 503)
        XCTAssertEqual(p.title, "Slow down")
        XCTAssertEqual(p.detail, "Try again later.")
        XCTAssertEqual(p.type, "https://portcullis.dev/problems/rate-limited")
        XCTAssertEqual(p.headers["Retry-After"], "6")
        XCTAssertNil(p.headers["RateLimit-Limit"])
        XCTAssertNil(p.headers["RateLimit-Policy"])
        let plain = l.evaluate([spec("std", limit: 1) { $0.rejection.status = 503 }], subject: subject(), now: t0)
        XCTAssertTrue(plain.allowed)
        XCTAssertEqual(l.evaluate([spec("std", limit: 1) { $0.rejection.status = 503 }], subject: subject(), now: t0).problem?.title,
                       "Service Unavailable")
    }

    // MARK: key parts

    func testNewKeyPartsReadTheRequest() {
        var request = GatewayRequest(method: "POST", path: "/orders/42", rawQuery: "tenant=acme&x=1",
                                     headers: HTTPHeaders([("Cookie", "a=1; session=s-9 ; b=2")]))
        request.variables = [("TENANT", "t-1")]
        let s = subject(request: request, pathParams: ["id": "42"])
        XCTAssertEqual(s.value(of: .path), "/orders/42")
        XCTAssertEqual(s.value(of: .method), "POST")
        XCTAssertEqual(s.value(of: .query("tenant")), "acme")
        XCTAssertNil(s.value(of: .query("nope")))
        XCTAssertEqual(s.value(of: .cookie("session")), "s-9")
        XCTAssertEqual(s.value(of: .cookie("b")), "2")
        XCTAssertNil(s.value(of: .cookie("sess")))
        XCTAssertEqual(s.value(of: .variable("TENANT")), "t-1")
        XCTAssertEqual(s.value(of: .pathParam("id")), "42")
        for text in ["path", "method", "path_param:id", "query:tenant", "cookie:session", "var:tenant"] {
            let part = try! XCTUnwrap(RateLimitKeyPart(configValue: text), text)
            XCTAssertEqual(RateLimitKeyPart(configValue: part.description), part)
        }
        XCTAssertEqual(RateLimitKeyPart(configValue: "var:tenant"), .variable("TENANT"))
        for bad in ["var:", "var:a-b", "cookie:a b", "query:", "paths", "path_param:"] {
            XCTAssertNil(RateLimitKeyPart(configValue: bad), bad)
        }
    }

    func testCookieHeaderParsing() {
        XCTAssertEqual(CookieHeader.value(named: "a", in: "a=1"), "1")
        XCTAssertEqual(CookieHeader.value(named: "b", in: "a=1;b=2"), "2")
        XCTAssertEqual(CookieHeader.value(named: "b", in: "a=1;  b= x=y ;"), " x=y")
        XCTAssertEqual(CookieHeader.value(named: "q", in: "q=\"quoted\""), "quoted")
        XCTAssertEqual(CookieHeader.value(named: "e", in: "e="), "")
        XCTAssertNil(CookieHeader.value(named: "a", in: "ab=1; ba=2; a"))
        XCTAssertNil(CookieHeader.value(named: "a", in: nil))
    }

    // MARK: exemptions

    func testExemptConsumersGroupsAndNetworks() {
        let l = limiter()
        let exempt = RateLimitExemptions(consumers: ["ops"], groups: ["internal"], clients: [CIDR("10.0.0.0/8")!, CIDR("2001:db8::/32")!])
        let limits = [spec("e", limit: 1, key: [.ip]) { $0.exempt = exempt }]
        for s in [subject(consumer: "ops"), subject(groups: ["x", "internal"]), subject(ip: "10.200.1.1"), subject(ip: "2001:db8:1::5"),
                  subject(ip: "::ffff:10.0.0.1")] {
            for _ in 0..<3 {
                let o = l.evaluate(limits, subject: s, now: t0)
                XCTAssertTrue(o.allowed)
                XCTAssertEqual(o.logSummary, "e:exempt")
                XCTAssertEqual(o.headers.count, 0)
            }
        }
        XCTAssertTrue(l.evaluate(limits, subject: subject(ip: "11.0.0.1"), now: t0).allowed)
        XCTAssertFalse(l.evaluate(limits, subject: subject(ip: "11.0.0.1"), now: t0).allowed)
    }

    func testCIDRParsingAndMatching() {
        XCTAssertEqual(CIDR("10.0.0.1/8"), CIDR("10.0.0.0/8"), "bits past the prefix are ignored")
        XCTAssertEqual(CIDR("192.0.2.7"), CIDR("192.0.2.7/32"))
        XCTAssertEqual(CIDR("0.0.0.0/0")?.contains("255.1.2.3"), true)
        XCTAssertEqual(CIDR("0.0.0.0/0")?.contains("::1"), false, "an IPv4 network holds no native IPv6 address")
        XCTAssertEqual(CIDR("10.0.0.0/8")?.contains("::ffff:10.1.2.3"), true, "IPv4-mapped clients match IPv4 networks")
        XCTAssertEqual(CIDR("192.0.2.0/25")?.contains("192.0.2.127"), true)
        XCTAssertEqual(CIDR("192.0.2.0/25")?.contains("192.0.2.128"), false)
        XCTAssertEqual(CIDR("2001:db8::/127")?.contains("2001:db8::1"), true)
        XCTAssertEqual(CIDR("2001:db8::/127")?.contains("2001:db8::2"), false)
        XCTAssertEqual(CIDR("2001:db8::/32")?.contains("2001:db9::1"), false)
        XCTAssertEqual(CIDR("10.0.0.0/8")?.contains("not-an-ip"), false)
        XCTAssertEqual(CIDR("10.0.0.0/8")?.contains("unix:"), false)
        XCTAssertTrue(CIDR.any([CIDR("10.0.0.0/8")!, CIDR("::1")!], contains: "::1"))
        XCTAssertFalse(CIDR.any([CIDR("10.0.0.0/8")!], contains: nil))
        for bad in ["10.0.0.0/33", "10.0.0.0/", "10.0.0/8", "x", "", "::/129", "10.0.0.0/+8", "10.0.0.0/8/8"] {
            XCTAssertNil(CIDR(bad), bad)
        }
    }

    // MARK: concurrency leases

    func testConcurrencyLeasesAdmitAtMostNInFlightAndAreReleased() {
        let l = limiter()
        let limits = [spec("inflight", .concurrency, limit: 2, window: 30)]
        let a = l.evaluate(limits, subject: subject(), now: t0)
        let b = l.evaluate(limits, subject: subject(), now: t0 + 1)
        XCTAssertTrue(a.allowed && b.allowed)
        XCTAssertEqual(a.leases.count, 1)
        let c = l.evaluate(limits, subject: subject(), now: t0 + 2)
        XCTAssertEqual(c.verdict, .limited)
        XCTAssertEqual(c.problem?.status, 429)
        XCTAssertEqual(c.problem?.headers["Retry-After"], "1")
        XCTAssertNil(c.problem?.headers["RateLimit-Limit"], "a concurrency limit has no window quota to advertise")
        XCTAssertTrue(c.leases.isEmpty)
        XCTAssertEqual(c.logSummary, "inflight:denied:0")
        l.release(a.leases)
        let d = l.evaluate(limits, subject: subject(), now: t0 + 3)
        XCTAssertTrue(d.allowed)
        XCTAssertFalse(l.evaluate(limits, subject: subject(), now: t0 + 4).allowed)
        // Rejected by a later limit: the lease is given back at once.
        let l2 = limiter()
        let both = [spec("inflight", .concurrency, limit: 1, window: 30), spec("tiny", limit: 1)]
        XCTAssertTrue(l2.evaluate(both, subject: subject(), now: t0).allowed)
        XCTAssertEqual(l2.evaluate(both, subject: subject(), now: t0).verdict, .limited)
    }

    /// A lease nobody gives back (its worker died) lapses after one to two lease periods; a late
    /// release of a lapsed lease frees nobody else's place.
    func testUnreleasedLeasesLapseAndLateReleasesAreIgnored() {
        let p = RateLimitParams(algorithm: .concurrency, limit: 2, windowMicros: 10_000_000)
        let start = t0 - t0 % 10_000_000 + 9_000_000  // 1 s before a period ends
        var state: UInt64 = 0
        let lost = RateLimitAlgorithms.decide(p, state: state, now: start, cost: 1)
        state = lost.state
        let held = RateLimitAlgorithms.decide(p, state: state, now: start + 1, cost: 1)
        state = held.state
        XCTAssertFalse(RateLimitAlgorithms.decide(p, state: state, now: start + 9_000_000, cost: 1).decision.allowed,
                       "in the next period the leases still count")
        // Two periods on, the unreleased leases have lapsed.
        let later = start + 11_000_000
        let fresh = RateLimitAlgorithms.decide(p, state: state, now: later, cost: 1)
        XCTAssertTrue(fresh.decision.allowed)
        XCTAssertEqual(fresh.decision.remaining, 1)
        state = fresh.state
        // The old holder finally releases (acquired at `start`): nothing changes.
        XCTAssertEqual(RateLimitAlgorithms.refund(p, state: state, now: start, cost: 1), state)
        // The new holder's release frees its place.
        let released = RateLimitAlgorithms.refund(p, state: state, now: later, cost: 1)
        XCTAssertEqual(RateLimitAlgorithms.decide(p, state: released, now: later, cost: 1).decision.remaining, 1)
        // A lease from the previous period is released from the previous count.
        let prev = RateLimitAlgorithms.decide(p, state: 0, now: start, cost: 1).state
        let rolled = RateLimitAlgorithms.decide(p, state: prev, now: start + 2_000_000, cost: 1)
        XCTAssertEqual(rolled.decision.remaining, 0)
        let afterRelease = RateLimitAlgorithms.refund(p, state: rolled.state, now: start, cost: 1)
        XCTAssertEqual(RateLimitAlgorithms.decide(p, state: afterRelease, now: start + 2_000_001, cost: 1).decision.remaining, 0)
        XCTAssertTrue(RateLimitAlgorithms.decide(p, state: afterRelease, now: start + 2_000_001, cost: 1).decision.allowed)
    }

    // MARK: configuration

    func testOptionsAreReadAndValidated() throws {
        let json = """
            {"upstreams": {"echo": {"targets": ["http://127.0.0.1:9000"]}},
             "routes": [{"name": "r", "match": {"prefix": "/x/"}, "upstream": "echo", "limits": [
               {"name": "a", "algorithm": "fixed_window", "limit": 10, "window_seconds": 1, "key": ["path", "method", "query:t", "cookie:s", "var:TENANT", "path_param:id"],
                "cost": 2, "mode": "shadow", "rejection": {"status": 503, "title": "T", "detail": "D"}, "hide_client_headers": true,
                "exempt": {"consumers": ["ops"], "groups": ["internal"], "clients": ["10.0.0.0/8", "::1"]}},
               {"name": "b", "algorithm": "token_bucket", "limit": 10, "window_seconds": 1, "key": ["ip"],
                "cost": {"header": "X-Cost", "max": 5}},
               {"name": "c", "algorithm": "concurrency", "limit": 4, "lease_seconds": 30, "key": ["consumer"],
                "cost": {"claim": "w", "max": 3, "default": 2}},
               {"name": "d", "algorithm": "concurrency", "limit": 4, "key": ["consumer"]}]}]}
            """
        let config = try ConfigLoader.parse(bytes: Array(json.utf8), file: "t.json")
        let l = config.routes[0].limits
        XCTAssertEqual(l[0].key, [.path, .method, .query("t"), .cookie("s"), .variable("TENANT"), .pathParam("id")])
        XCTAssertEqual(l[0].cost, .constant(2))
        XCTAssertEqual(l[0].mode, .shadow)
        XCTAssertEqual(l[0].rejection, RateLimitRejection(status: 503, title: "T", detail: "D"))
        XCTAssertTrue(l[0].hideClientHeaders)
        XCTAssertEqual(l[0].exempt, RateLimitExemptions(consumers: ["ops"], groups: ["internal"], clients: [CIDR("10.0.0.0/8")!, CIDR("::1")!]))
        XCTAssertEqual(l[1].cost, .header("x-cost", default: 1, max: 5))
        XCTAssertEqual(l[2].params, RateLimitParams(algorithm: .concurrency, limit: 4, windowMicros: 30_000_000))
        XCTAssertEqual(l[2].cost, .claim("w", default: 2, max: 3))
        XCTAssertEqual(l[3].params.windowMicros, 60_000_000, "leases last 60 s by default")

        let bad = """
            {"upstreams": {"echo": {"targets": ["http://127.0.0.1:9000"]}},
             "rate_limit": {"redis": {}},
             "routes": [{"name": "r", "match": {"prefix": "/x/"}, "upstream": "echo", "limits": [
               {"name": "a", "algorithm": "fixed_window", "limit": 10, "window_seconds": 1, "key": ["ip"], "cost": 11},
               {"name": "b", "algorithm": "fixed_window", "limit": 10, "window_seconds": 1, "key": ["ip"], "cost": {"header": "X", "claim": "y", "max": 2}},
               {"name": "c", "algorithm": "fixed_window", "limit": 10, "window_seconds": 1, "key": ["ip"], "cost": {"header": "X"}, "mode": "dry"},
               {"name": "d", "algorithm": "fixed_window", "limit": 10, "window_seconds": 1, "key": ["ip"], "rejection": {"status": 500}},
               {"name": "e", "algorithm": "fixed_window", "limit": 10, "window_seconds": 1, "key": ["ip"], "exempt": {"clients": ["10.0.0.0/33"]}},
               {"name": "f", "algorithm": "concurrency", "limit": 1, "window_seconds": 1, "key": ["ip"], "store": "redis"},
               {"name": "g", "algorithm": "fixed_window", "limit": 1, "window_seconds": 1, "lease_seconds": 3, "key": ["ip"]}]}]}
            """
        var found: [String] = []
        do { _ = try ConfigLoader.parse(bytes: Array(bad.utf8), file: "t.json") } catch { found = error.issues.map(\.description) }
        let expected = [
            "t.json: /routes/0/limits/0/cost: a cost of 11 is above the limit's quota 10: no request could pass",
            "t.json: /routes/0/limits/1/cost: needs exactly one of \"header\" or \"claim\"",
            "t.json: /routes/0/limits/2/cost/max: required field is missing",
            "t.json: /routes/0/limits/2/mode: unknown mode \"dry\" (enforce or shadow)",
            "t.json: /routes/0/limits/3/rejection/status: must be 429 or 503, found 500",
            "t.json: /routes/0/limits/4/exempt/clients/0: not an IPv4 or IPv6 address or network (a.b.c.d/n, x:y::/n)",
            "t.json: /routes/0/limits/5/window_seconds: a concurrency limit has no window (its leases last \"lease_seconds\")",
            "t.json: /routes/0/limits/5/store: a concurrency limit is held in the shared-memory table only (store \"local\")",
            "t.json: /routes/0/limits/6/lease_seconds: only applies to the concurrency algorithm",
        ]
        for e in expected { XCTAssertTrue(found.contains(e), "missing: \(e)\nfound:\n\(found.joined(separator: "\n"))") }
        XCTAssertEqual(found.count, expected.count, found.joined(separator: "\n"))
    }
}
