import XCTest
@testable import PortcullisCore

/// A remote store that can be switched off, counting in memory while up and answering at once.
final class SwitchableStore: RemoteRateLimitStore {
    let inner = InMemoryRateLimitStore()
    var up = true
    var calls = 0
    func acquire(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64,
                 completion: @escaping (Result<RateLimitDecision, RateLimitStoreError>) -> Void) {
        calls += 1
        guard up else { return completion(.failure(RateLimitStoreError("connection refused"))) }
        completion(Result { () throws(RateLimitStoreError) in try inner.acquire(key, params: params, now: now, cost: cost) })
    }
    func refund(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64) {
        guard up else { return }
        try? inner.refund(key, params: params, now: now, cost: cost)
    }
}

/// Collects what a limiter logs and counts.
final class RecordingObserver: @unchecked Sendable {
    private let lock = NSLock()
    private var _lines: [String] = []
    private var _failures = 0
    private var _degraded = 0
    var lines: [String] { lock.withLock { _lines } }
    var failures: Int { lock.withLock { _failures } }
    var degraded: Int { lock.withLock { _degraded } }
    var observer: RateLimitObserver {
        RateLimitObserver(log: { l in self.lock.withLock { self._lines.append(l) } },
                          storeFailure: { self.lock.withLock { self._failures += 1 } },
                          degradedDecision: { self.lock.withLock { self._degraded += 1 } })
    }
}

final class RateLimiterTests: XCTestCase {
    let t0: Int64 = 1_700_000_000_000_000

    func subject(consumer: String? = "alice", groups: [String] = []) -> RateLimitSubject {
        RateLimitSubject(credentialId: "key-1", consumerId: consumer, consumerGroups: groups, clientIP: "192.0.2.1", routeName: "r")
    }

    func spec(_ name: String, _ algorithm: RateLimitAlgorithm = .fixedWindow, limit: Int64, window: Int64 = 10,
              store: RateLimitStoreKind = .local, policy: RateLimitFailurePolicy = .local,
              groups: [(group: String, params: RateLimitParams)] = []) -> RateLimitSpec {
        RateLimitSpec(name: name, params: RateLimitParams(algorithm: algorithm, limit: limit, windowMicros: window * 1_000_000),
                      key: [.consumer], store: store, onStoreFailure: policy, groups: groups)
    }

    func testContractDemo_SixthRequestIs429WithRetryAfterAndZeroRemaining() {
        // The demo route: 5 requests per 10 s per API key.
        let limits = [RateLimitSpec(name: "per-key", params: RateLimitParams(algorithm: .fixedWindow, limit: 5, windowMicros: 10_000_000),
                                    key: [.credential])]
        let limiter = RateLimiter(local: InMemoryRateLimitStore(), remote: nil, settings: RateLimitSettings())
        let now = t0 + 4_200_000
        for i in 1...5 {
            let o = limiter.evaluate(limits, subject: subject(), now: now)
            XCTAssertTrue(o.allowed)
            XCTAssertEqual(o.headers["RateLimit-Remaining"], String(5 - i))
            XCTAssertEqual(o.headers["RateLimit-Limit"], "5")
            XCTAssertEqual(o.headers["RateLimit-Reset"], "6")
            XCTAssertNil(o.headers["Retry-After"])
            XCTAssertNil(o.problem)
        }
        let o = limiter.evaluate(limits, subject: subject(), now: now)
        XCTAssertEqual(o.verdict, .limited)
        let problem = try! XCTUnwrap(o.problem)
        XCTAssertEqual(problem.status, 429)
        XCTAssertEqual(problem.headers["Retry-After"], "6")
        XCTAssertEqual(problem.headers["RateLimit-Remaining"], "0")
        XCTAssertEqual(problem.headers["RateLimit-Policy"], "\"per-key\";q=5;w=10")
        XCTAssertEqual(problem.headers["RateLimit"], "\"per-key\";r=0;t=6")
        let body = try! JSONCodec.parse(problem.body(requestId: "req-1"), rejectDuplicateKeys: true)
        XCTAssertEqual(body["status"], .int(429))
        XCTAssertEqual(body["retry_after"], .int(6))
        XCTAssertEqual(body["limit"], .string("per-key"))
        XCTAssertEqual(body["request_id"], .string("req-1"))
        XCTAssertEqual(o.logSummary, "per-key:denied:0")
        // Another key is not affected.
        XCTAssertTrue(limiter.evaluate(limits, subject: RateLimitSubject(credentialId: "key-2", consumerId: nil, consumerGroups: [],
                                                                           clientIP: "x", routeName: "r"), now: now).allowed)
    }

    func testRejectedRequestConsumesFromNoOtherLimit() {
        let store = InMemoryRateLimitStore()
        let limiter = RateLimiter(local: store, remote: nil, settings: RateLimitSettings())
        let limits = [spec("per-second", .tokenBucket, limit: 100, window: 1), spec("per-day", limit: 3, window: 86_400)]
        for _ in 0..<3 { XCTAssertTrue(limiter.evaluate(limits, subject: subject(), now: t0).allowed) }
        for _ in 0..<10 {
            let o = limiter.evaluate(limits, subject: subject(), now: t0)
            XCTAssertEqual(o.verdict, .limited)
            XCTAssertEqual(o.results.map(\.name), ["per-second", "per-day"])
        }
        // The per-second bucket was refunded every time: 3 consumed, 97 left.
        let probe = limiter.evaluate([limits[0]], subject: subject(), now: t0)
        XCTAssertEqual(probe.results[0].decision?.remaining, 96)
    }

    func testLaterLimitsAreNotEvaluatedAfterARejection() {
        let limiter = RateLimiter(local: InMemoryRateLimitStore(), remote: nil, settings: RateLimitSettings())
        let limits = [spec("tiny", limit: 1), spec("big", limit: 100)]
        _ = limiter.evaluate(limits, subject: subject(), now: t0)
        let o = limiter.evaluate(limits, subject: subject(), now: t0)
        XCTAssertEqual(o.results.map(\.name), ["tiny"])
        XCTAssertEqual(limiter.evaluate([limits[1]], subject: subject(), now: t0).results[0].decision?.remaining, 98)
    }

    func testHeadersDescribeTheMostRestrictiveLimit() {
        let limiter = RateLimiter(local: InMemoryRateLimitStore(), remote: nil, settings: RateLimitSettings())
        let limits = [spec("a", limit: 10), spec("b", limit: 3, window: 60)]
        let o = limiter.evaluate(limits, subject: subject(), now: t0 + 1_000_000)
        XCTAssertEqual(o.headers["RateLimit-Limit"], "3")
        XCTAssertEqual(o.headers["RateLimit-Remaining"], "2")
        XCTAssertEqual(o.headers["RateLimit-Reset"], "39")  // t0 + 1 s is 21 s into a minute
        XCTAssertEqual(o.headers["RateLimit-Policy"], "\"a\";q=10;w=10, \"b\";q=3;w=60")
        XCTAssertEqual(o.logSummary, "a:allowed:9,b:allowed:2")
    }

    func testConsumerGroupsSelectTheirPlan() {
        let gold = RateLimitParams(algorithm: .fixedWindow, limit: 4, windowMicros: 10_000_000)
        let limits = [spec("plan", limit: 1, groups: [("gold", gold)])]
        let limiter = RateLimiter(local: InMemoryRateLimitStore(), remote: nil, settings: RateLimitSettings())
        let admittedGold = (0..<10).filter { _ in limiter.evaluate(limits, subject: subject(consumer: "g", groups: ["gold"]), now: t0).allowed }.count
        let admittedFree = (0..<10).filter { _ in limiter.evaluate(limits, subject: subject(consumer: "f"), now: t0).allowed }.count
        XCTAssertEqual(admittedGold, 4)
        XCTAssertEqual(admittedFree, 1)
    }

    func testFailurePoliciesBackoffAndRecovery() {
        let remote = SwitchableStore()
        let local = InMemoryRateLimitStore()
        var settings = RateLimitSettings()
        var redis = RedisSettings()
        redis.instances = 2
        redis.retryMs = 1_000
        settings.redis = redis
        let rec = RecordingObserver()
        let limiter = RateLimiter(local: local, remote: remote, settings: settings, observer: rec.observer)
        let open = [spec("open", limit: 4, store: .redis, policy: .open)]
        let closed = [spec("closed", limit: 4, store: .redis, policy: .closed)]
        let fallback = [spec("fallback", limit: 4, store: .redis, policy: .local)]

        XCTAssertEqual(limiter.evaluate(open, subject: subject(), now: t0).results[0].path, .primary)
        remote.up = false
        var now = t0 + 1
        let o1 = limiter.evaluate(open, subject: subject(), now: now)
        XCTAssertTrue(o1.allowed)
        XCTAssertEqual(o1.results[0].path, .failOpen)
        XCTAssertEqual(o1.logSummary, "open:open")
        XCTAssertNil(o1.headers["RateLimit-Limit"])
        XCTAssertTrue(limiter.degraded)
        XCTAssertEqual(rec.failures, 1)

        // While backing off, Redis is not called at all.
        let callsBefore = remote.calls
        let o2 = limiter.evaluate(closed, subject: subject(), now: now)
        XCTAssertEqual(o2.verdict, .storeUnavailable)
        XCTAssertEqual(o2.problem?.status, 503)
        XCTAssertEqual(o2.problem?.headers["Retry-After"], "1")
        XCTAssertEqual(o2.logSummary, "closed:closed")
        // local: limit divided by the 2 instances.
        let admitted = (0..<5).filter { _ in limiter.evaluate(fallback, subject: subject(), now: now).allowed }.count
        XCTAssertEqual(admitted, 2)
        let denied = limiter.evaluate(fallback, subject: subject(), now: now)
        XCTAssertEqual(denied.logSummary, "fallback:denied@local:0")
        // The headers describe the divided limit that decided (documented).
        XCTAssertEqual(denied.headers["RateLimit-Limit"], "2")
        XCTAssertEqual(denied.headers["RateLimit-Policy"], "\"fallback\";q=2;w=10")
        XCTAssertEqual(remote.calls, callsBefore)
        XCTAssertEqual(rec.degraded, 1 + 1 + 6)

        // After the retry interval Redis is tried again; still down: one more failure.
        now += 1_000_000
        _ = limiter.evaluate(open, subject: subject(), now: now)
        XCTAssertEqual(remote.calls, callsBefore + 1)
        XCTAssertEqual(rec.failures, 2)
        // Back up: the next try after the interval uses it, and recovery is logged once.
        remote.up = true
        now += 1_000_000
        let o3 = limiter.evaluate(fallback, subject: subject(), now: now)
        XCTAssertEqual(o3.results[0].path, .primary)
        XCTAssertEqual(o3.results[0].decision?.remaining, 3)
        XCTAssertFalse(limiter.degraded)
        XCTAssertEqual(rec.lines.filter { $0.contains("resumed") }.count, 1)
        XCTAssertEqual(rec.lines.filter { $0.contains("unavailable") }.count, 2)
    }

    /// Issue 14.1: `q` is the quota per window (the draft's meaning), never the burst; a token
    /// bucket's burst travels in the `pc-burst` parameter and in `RateLimit-Limit` (its capacity).
    func testTokenBucketPolicyAnnouncesQuotaPerWindowAndBurstApart() {
        let limiter = RateLimiter(local: InMemoryRateLimitStore(), remote: nil, settings: RateLimitSettings())
        let limits = [RateLimitSpec(name: "tb", params: RateLimitParams(algorithm: .tokenBucket, limit: 2, windowMicros: 1_000_000, burst: 10),
                                    key: [.consumer]),
                      spec("fw", limit: 7, window: 60)]
        let o = limiter.evaluate(limits, subject: subject(), now: t0)
        XCTAssertEqual(o.headers["RateLimit-Policy"], "\"tb\";q=2;w=1;pc-burst=10, \"fw\";q=7;w=60")
        XCTAssertEqual(o.headers["RateLimit-Limit"], "7")
        let alone = limiter.evaluate([limits[0]], subject: subject(consumer: "bob"), now: t0)
        XCTAssertEqual(alone.headers["RateLimit-Limit"], "10")
        XCTAssertEqual(alone.headers["RateLimit-Remaining"], "9")
    }

    func testMissingKeyValuesShareOneCounter() {
        let limiter = RateLimiter(local: InMemoryRateLimitStore(), remote: nil, settings: RateLimitSettings())
        let limits = [spec("c", limit: 2)]
        XCTAssertTrue(limiter.evaluate(limits, subject: subject(consumer: nil), now: t0).allowed)
        XCTAssertTrue(limiter.evaluate(limits, subject: subject(consumer: nil), now: t0).allowed)
        XCTAssertFalse(limiter.evaluate(limits, subject: subject(consumer: nil), now: t0).allowed)
    }

    func testNoLimitsIsUnlimited() {
        let limiter = RateLimiter(local: InMemoryRateLimitStore(), remote: nil, settings: RateLimitSettings())
        let o = limiter.evaluate([], subject: subject(), now: t0)
        XCTAssertTrue(o.allowed)
        XCTAssertEqual(o.headers.count, 0)
        XCTAssertEqual(o.logSummary, "")
    }
}
