import XCTest
@testable import PortcullisCore

/// A remote store whose answers the test releases: questions queue up like commands in flight
/// on one Redis connection, and are answered (in order, by an in-memory counter) or failed.
final class ScriptedRemoteStore: RemoteRateLimitStore {
    struct Question {
        var key: RateLimitKey
        var params: RateLimitParams
        var now: Int64
        var cost: Int64
        var completion: (Result<RateLimitDecision, RateLimitStoreError>) -> Void
    }
    let counters = InMemoryRateLimitStore()
    private(set) var questions: [Question] = []
    private(set) var refunds: [(key: RateLimitKey, params: RateLimitParams)] = []
    /// When set, calls fail before `acquire` returns (a refused connection).
    var refuseAtOnce: RateLimitStoreError?

    func acquire(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64,
                 completion: @escaping (Result<RateLimitDecision, RateLimitStoreError>) -> Void) {
        if let refuseAtOnce { return completion(.failure(refuseAtOnce)) }
        questions.append(Question(key: key, params: params, now: now, cost: cost, completion: completion))
    }

    func refund(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64) {
        refunds.append((key, params))
        try? counters.refund(key, params: params, now: now, cost: cost)
    }

    var inFlight: Int { questions.count }

    /// Answers the oldest question (Redis answers in order).
    func answerNext() {
        let q = questions.removeFirst()
        q.completion(Result { () throws(RateLimitStoreError) in try counters.acquire(q.key, params: q.params, now: q.now, cost: q.cost) })
    }

    func answerAll() { while !questions.isEmpty { answerNext() } }

    /// Fails every question in flight, oldest first (a timeout or a lost connection).
    func failAll(_ message: String) {
        let failed = questions
        questions.removeAll()
        for q in failed { q.completion(.failure(RateLimitStoreError(message))) }
    }
}

/// The limiter's completion API with answers that arrive later: ordering, failures mid-flight,
/// refunds across stores. No sockets: the remote store is scripted.
final class RateLimiterAsyncTests: XCTestCase {
    let t0: Int64 = 1_700_000_000_000_000

    func subject(_ consumer: String = "alice") -> RateLimitSubject {
        RateLimitSubject(credentialId: "key-1", consumerId: consumer, consumerGroups: [], clientIP: "192.0.2.1", routeName: "r")
    }

    func spec(_ name: String, limit: Int64, store: RateLimitStoreKind = .redis,
              policy: RateLimitFailurePolicy = .local) -> RateLimitSpec {
        RateLimitSpec(name: name, params: RateLimitParams(algorithm: .fixedWindow, limit: limit, windowMicros: 10_000_000),
                      key: [.consumer], store: store, onStoreFailure: policy)
    }

    func settings(instances: Int = 1) -> RateLimitSettings {
        var redis = RedisSettings()
        redis.instances = instances
        redis.retryMs = 1_000
        var s = RateLimitSettings()
        s.redis = redis
        return s
    }

    /// Starts a request and records its outcome under `label` in `log` when it completes.
    func start(_ limiter: RateLimiter, _ limits: [RateLimitSpec], _ label: String, into log: Box<[(String, RateLimitOutcome)]>,
               subject: RateLimitSubject? = nil, now: Int64? = nil) {
        limiter.evaluate(limits, subject: subject ?? self.subject(), now: now ?? t0) { log.value.append((label, $0)) }
    }

    func testRequestsInFlightCompleteAsTheirAnswersArrive() {
        let remote = ScriptedRemoteStore()
        let limiter = RateLimiter(local: InMemoryRateLimitStore(), remote: remote, settings: settings())
        let redis = [spec("shared", limit: 2)]
        let local = [spec("local", limit: 5, store: .local)]
        let done = Box<[(String, RateLimitOutcome)]>([])

        for label in ["r1", "r2", "r3"] { start(limiter, redis, label, into: done) }
        XCTAssertEqual(done.value.count, 0, "nothing completes before Redis answers")
        XCTAssertEqual(remote.inFlight, 3, "all three are in flight at once")
        // A request whose limits are all local does not wait behind them.
        start(limiter, local, "l1", into: done)
        XCTAssertEqual(done.value.map(\.0), ["l1"])

        remote.answerNext()
        XCTAssertEqual(done.value.map(\.0), ["l1", "r1"])
        remote.answerAll()
        XCTAssertEqual(done.value.map(\.0), ["l1", "r1", "r2", "r3"])
        XCTAssertEqual(done.value.map { $0.1.verdict }, [.allowed, .allowed, .allowed, .limited])
        XCTAssertEqual(done.value.map { $0.1.logSummary }, ["local:allowed:4", "shared:allowed:1", "shared:allowed:0", "shared:denied:0"])
    }

    func testTwoRemoteLimitsAreAskedInTurnAndInterleaveWithOtherRequests() {
        let remote = ScriptedRemoteStore()
        let limiter = RateLimiter(local: InMemoryRateLimitStore(), remote: remote, settings: settings())
        let limits = [spec("first", limit: 10), spec("local", limit: 10, store: .local), spec("second", limit: 10)]
        let done = Box<[(String, RateLimitOutcome)]>([])
        start(limiter, limits, "a", into: done, subject: subject("a"))
        start(limiter, limits, "b", into: done, subject: subject("b"))
        XCTAssertEqual(remote.questions.map { $0.key }, [limits[0].key(for: subject("a")), limits[0].key(for: subject("b"))])
        remote.answerNext()  // a's first limit; a asks its second
        XCTAssertEqual(remote.questions.map { $0.key }, [limits[0].key(for: subject("b")), limits[2].key(for: subject("a"))])
        remote.answerNext()  // b's first
        remote.answerNext()  // a's second: a is done
        XCTAssertEqual(done.value.map(\.0), ["a"])
        remote.answerNext()
        XCTAssertEqual(done.value.map(\.0), ["a", "b"])
        XCTAssertEqual(done.value[1].1.logSummary, "first:allowed:9,local:allowed:9,second:allowed:9")
    }

    func testATimeoutMidFlightAppliesEachLimitsPolicy() {
        let remote = ScriptedRemoteStore()
        let rec = RecordingObserver()
        let limiter = RateLimiter(local: InMemoryRateLimitStore(), remote: remote, settings: settings(instances: 2),
                                  observer: rec.observer)
        let open = [spec("open", limit: 4, policy: .open)]
        let closed = [spec("closed", limit: 4, policy: .closed)]
        let fallback = [spec("fallback", limit: 4, policy: .local)]
        let done = Box<[(String, RateLimitOutcome)]>([])
        start(limiter, open, "open", into: done)
        start(limiter, closed, "closed", into: done, now: t0 + 1)
        for i in 0..<3 { start(limiter, fallback, "local-\(i)", into: done, now: t0 + 2) }
        XCTAssertEqual(remote.inFlight, 5)

        remote.failAll("redis: no answer within 50 ms")
        XCTAssertEqual(done.value.map(\.0), ["open", "closed", "local-0", "local-1", "local-2"])
        let outcomes = done.value.map(\.1)
        XCTAssertEqual(outcomes.map(\.verdict), [.allowed, .storeUnavailable, .allowed, .allowed, .limited])
        XCTAssertEqual(outcomes.map(\.logSummary),
                       ["open:open", "closed:closed", "fallback:allowed@local:1", "fallback:allowed@local:0", "fallback:denied@local:0"])
        XCTAssertEqual(outcomes[1].problem?.status, 503)
        XCTAssertEqual(outcomes[1].problem?.headers["Retry-After"], "1")
        // rate-limiting.md, Answers: the closed policy's problem, as documented.
        XCTAssertEqual(outcomes[1].problem?.type, "https://portcullis.dev/problems/rate-limit-store-unavailable")
        XCTAssertEqual(outcomes[1].problem?.detail, #"rate limit "closed" cannot be checked right now"#)
        XCTAssertEqual(outcomes[1].problem?.extensions["limit"], .string("closed"))
        XCTAssertEqual(outcomes[2].results[0].params.limit, 2, "4 divided by 2 instances")
        XCTAssertTrue(limiter.degraded)
        // Every failed call is counted, but one outage is logged once.
        XCTAssertEqual(rec.failures, 5)
        XCTAssertEqual(rec.degraded, 5)
        XCTAssertEqual(rec.lines.filter { $0.contains("redis unavailable (redis: no answer within 50 ms)") }.count, 1)

        // During the retry interval nothing is sent and every request completes at once.
        start(limiter, closed, "later", into: done, now: t0 + 500_000)
        XCTAssertEqual(remote.inFlight, 0)
        XCTAssertEqual(done.value.last?.0, "later")
        XCTAssertEqual(done.value.last?.1.verdict, .storeUnavailable)

        // After it, Redis is asked again; its answer ends the outage, logged once.
        start(limiter, fallback, "retry", into: done, now: t0 + 1_000_000)
        XCTAssertEqual(remote.inFlight, 1)
        remote.answerNext()
        XCTAssertEqual(done.value.last?.1.logSummary, "fallback:allowed:3")
        XCTAssertFalse(limiter.degraded)
        XCTAssertEqual(rec.lines.filter { $0.contains("resumed") }.count, 1)
    }

    func testAConnectionRefusedAtOnceCompletesBeforeEvaluateReturns() {
        let remote = ScriptedRemoteStore()
        remote.refuseAtOnce = RateLimitStoreError("redis: connect to 127.0.0.1:1: Connection refused")
        let rec = RecordingObserver()
        let limiter = RateLimiter(local: InMemoryRateLimitStore(), remote: remote, settings: settings(), observer: rec.observer)
        let done = Box<[(String, RateLimitOutcome)]>([])
        start(limiter, [spec("closed", limit: 4, policy: .closed)], "r", into: done)
        XCTAssertEqual(done.value.map { $0.1.verdict }, [.storeUnavailable])
        XCTAssertEqual(rec.failures, 1)
    }

    func testALaterRemoteRejectionRefundsEveryEarlierLimit() {
        let remote = ScriptedRemoteStore()
        let local = InMemoryRateLimitStore()
        let limiter = RateLimiter(local: local, remote: remote, settings: settings())
        let limits = [spec("local", limit: 10, store: .local), spec("wide", limit: 10), spec("narrow", limit: 1)]
        let done = Box<[(String, RateLimitOutcome)]>([])
        start(limiter, limits, "first", into: done)
        remote.answerAll()
        start(limiter, limits, "second", into: done)
        remote.answerNext()  // "wide" admits and is committed
        XCTAssertTrue(remote.refunds.isEmpty)
        remote.answerNext()  // "narrow" rejects
        XCTAssertEqual(done.value.map { $0.1.logSummary }, ["local:allowed:9,wide:allowed:9,narrow:allowed:0",
                                                            "local:allowed:8,wide:allowed:8,narrow:denied:0"])
        XCTAssertEqual(remote.refunds.map(\.key), [limits[1].key(for: subject())], "the remote limit is refunded remotely")
        // Both earlier limits are back at one consumed (the first request's): the next takes the second.
        XCTAssertEqual(try local.acquire(limits[0].key(for: subject()), params: limits[0].params, now: t0, cost: 1).remaining, 8)
        XCTAssertEqual(try remote.counters.acquire(limits[1].key(for: subject()), params: limits[1].params, now: t0, cost: 1).remaining, 8)
    }

    func testARemoteFailureThatRefusesRefundsLocallyButDoesNotCallRedis() {
        let remote = ScriptedRemoteStore()
        let local = InMemoryRateLimitStore()
        let limiter = RateLimiter(local: local, remote: remote, settings: settings())
        let limits = [spec("local", limit: 10, store: .local), spec("wide", limit: 10), spec("closed", limit: 10, policy: .closed)]
        let done = Box<[(String, RateLimitOutcome)]>([])
        start(limiter, limits, "r", into: done)
        remote.answerNext()  // "wide" committed in Redis
        remote.failAll("redis: connection lost")  // "closed" fails: 503
        XCTAssertEqual(done.value.map { $0.1.verdict }, [.storeUnavailable])
        XCTAssertEqual(done.value[0].1.logSummary, "local:allowed:9,wide:allowed:9,closed:closed")
        XCTAssertEqual(try local.acquire(limits[0].key(for: subject()), params: limits[0].params, now: t0, cost: 1).remaining, 9,
                       "the local limit was refunded")
        XCTAssertTrue(remote.refunds.isEmpty, "no Redis call during the retry interval, refunds included")
    }

    /// The state machine on its own: a question per remote limit, resumed with answers.
    func testTheEvaluationYieldsRemoteQuestionsAndResumes() {
        let remote = ScriptedRemoteStore()
        let limiter = RateLimiter(local: InMemoryRateLimitStore(), remote: remote, settings: settings())
        let limits = [spec("local", limit: 3, store: .local), spec("remote", limit: 3)]
        var e = RateLimitEvaluation(limits: limits, subject: subject(), now: t0)
        guard case .remote(let key, let params, _) = limiter.advance(&e) else { return XCTFail("expected a remote question") }
        XCTAssertEqual(key, limits[1].key(for: subject()))
        XCTAssertEqual(params, limits[1].params)
        let decision = RateLimitDecision(allowed: true, limit: 3, remaining: 2, resetAfterMicros: 1, retryAfterMicros: 0)
        guard case .done(let outcome) = limiter.resume(&e, with: .success(decision)) else { return XCTFail("expected the outcome") }
        XCTAssertEqual(outcome.logSummary, "local:allowed:2,remote:allowed:2")
        XCTAssertEqual(remote.inFlight, 0, "the state machine itself sends nothing")
    }
}

/// A reference cell for what escaping completions record.
final class Box<Value> {
    var value: Value
    init(_ value: Value) { self.value = value }
}

extension RateLimitSpec {
    /// The counter key this limit uses for `subject` (no plans involved).
    func key(for subject: RateLimitSubject) -> RateLimitKey {
        RateLimitKey.make(limitName: name, params: params, parts: key, subject: subject)
    }
}
