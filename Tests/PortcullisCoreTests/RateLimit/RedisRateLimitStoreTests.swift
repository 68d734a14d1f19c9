import Foundation
import XCTest
@testable import PortcullisCore
@testable import PortcullisRuntime

/// A private `redis-server` on a free loopback port, without persistence; killed at the end.
final class RedisServerProcess {
    let port: Int
    private var process: Process?

    /// The command line after `redis-server`, given the port.
    private let arguments: (Int) -> [String]

    /// A plain Redis without persistence; `extra` adds directives (an ACL user, a unix socket).
    convenience init(extra: [String] = []) throws {
        try self.init(arguments: { port in
            ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", NSTemporaryDirectory()] + extra
        })
    }

    /// Any redis-server (a sentinel: its config file and `--sentinel`) listening on `port`.
    init(arguments: @escaping (Int) -> [String]) throws {
        port = try Self.freePort()
        self.arguments = arguments
        try start()
    }

    deinit { stop() }

    static func executable() throws -> String {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") + ["/usr/sbin", "/usr/bin"] {
            let path = "\(dir)/redis-server"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw RateLimitStoreError("redis-server is not installed (apt-get install redis-server); `make test` installs it")
    }

    static func freePort() throws -> Int {
        let (fd, port) = try LoopbackSocket.bind()
        close(fd)
        return Int(port)
    }

    func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try Self.executable())
        p.arguments = arguments(port)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        for _ in 0..<200 {
            if canConnect() { return }
            usleep(25_000)
        }
        throw RateLimitStoreError("redis-server did not start on port \(port)")
    }

    func stop() {
        guard let p = process else { return }
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        process = nil
    }

    func signal(_ sig: Int32) { if let p = process { kill(p.processIdentifier, sig) } }

    private func canConnect() -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

/// Runs `loop` until `done()` or `seconds` pass; false on the latter.
@discardableResult
func runLoop(_ loop: EventLoop, seconds: Double = 5, until done: () -> Bool) -> Bool {
    let end = Date().addingTimeInterval(seconds)
    while !done() {
        if Date() > end { return false }
        loop.runOnce(maxWaitMs: 10)
    }
    return true
}

/// The async Redis store seen as a synchronous ``RateLimitStore``, for the shared contract: each
/// call runs the store's loop until its answer is in.
final class LoopDrivenRedisStore: RateLimitStore {
    let loop = EventLoop(index: 0)
    let store: RedisRateLimitStore

    init(settings: RedisSettings) { store = RedisRateLimitStore(settings: settings, loop: loop) }

    func acquire(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64) throws(RateLimitStoreError) -> RateLimitDecision {
        var answer: Result<RateLimitDecision, RateLimitStoreError>?
        store.acquire(key, params: params, now: now, cost: cost) { answer = $0 }
        guard runLoop(loop, until: { answer != nil }) else { throw RateLimitStoreError("no completion") }
        return try answer!.get()
    }

    func refund(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64) throws(RateLimitStoreError) {
        store.refund(key, params: params, now: now, cost: cost)
        guard runLoop(loop, until: { store.inFlight == 0 }) else { throw RateLimitStoreError("refund not answered") }
    }

    func command(_ args: [String]) throws(RateLimitStoreError) -> RedisRateLimitStore.Reply {
        var answer: Result<RedisRateLimitStore.Reply, RateLimitStoreError>?
        store.command(args) { answer = $0 }
        guard runLoop(loop, until: { answer != nil }) else { throw RateLimitStoreError("no completion") }
        return try answer!.get()
    }
}

final class RedisRateLimitStoreTests: XCTestCase {
    nonisolated(unsafe) static var server: RedisServerProcess?
    let t0: Int64 = 1_700_000_000_000_000

    override class func tearDown() {
        server?.stop()
        server = nil
    }

    override func tearDown() {
        // A test that stopped Redis must not leave it stopped for the next one.
        Self.server?.signal(SIGCONT)
    }

    func settings() throws -> RedisSettings {
        if Self.server == nil { Self.server = try RedisServerProcess() }
        var s = RedisSettings()
        s.endpoint = .tcp(RedisAddress(host: "127.0.0.1", port: Self.server!.port))
        s.namespace = "pc-test"
        s.timeoutMs = 50
        return s
    }

    func contract() throws -> RateLimitStoreContract {
        var s = try settings()
        // The contract is about decisions, not the timeout: on a loaded machine Redis can take
        // longer than 50 ms to answer a burst from several loops.
        s.timeoutMs = 2_000
        return RateLimitStoreContract(makeStore: { LoopDrivenRedisStore(settings: s) })
    }

    func params(_ algorithm: RateLimitAlgorithm = .fixedWindow, limit: Int64) -> RateLimitParams {
        RateLimitParams(algorithm: algorithm, limit: limit, windowMicros: 60_000_000)
    }

    func testMatchesThePureAlgorithms() throws { try contract().matchesThePureAlgorithms() }
    func testAdmitsExactlyTheLimitPerWindow() throws { try contract().admitsExactlyTheLimitPerWindow() }
    func testRefundAndIndependentKeys() throws { try contract().refundGivesBackAndKeysAreIndependent() }

    func testLoopsOnSeveralThreadsAdmitExactlyTheLimit() throws {
        let c = try contract()
        try c.concurrentRequestsAdmitExactlyTheLimit(.fixedWindow, threads: 4, perThread: 100, limit: 150)
        try c.concurrentRequestsAdmitExactlyTheLimit(.tokenBucket, threads: 4, perThread: 100, limit: 150)
    }

    /// Many requests in flight on one connection: all sent before any answer, answered in
    /// order, exactly the limit admitted.
    func testManyRequestsInFlightOnOneConnection() throws {
        let loop = EventLoop(index: 0)
        var s = try settings()
        // 300 scripts sent at once (EVAL with the source: no SHA yet) take Redis longer than
        // 50 ms on a loaded machine; this test is about order, not the timeout.
        s.timeoutMs = 2_000
        let store = RedisRateLimitStore(settings: s, loop: loop)
        let key = RateLimitKey(text: "inflight-\(UUID().uuidString)")
        var answers: [Int: RateLimitDecision] = [:]
        var order: [Int] = []
        for i in 0..<300 {
            store.acquire(key, params: params(limit: 150), now: t0, cost: 1) { answer in
                order.append(i)
                answers[i] = try? answer.get()
            }
        }
        XCTAssertEqual(store.inFlight, 301, "the 300 requests and the connection's SCRIPT LOAD")
        XCTAssertTrue(runLoop(loop) { order.count == 300 })
        XCTAssertEqual(order, Array(0..<300), "completions in the order the requests were sent")
        XCTAssertEqual(answers.count, 300, "no request failed")
        XCTAssertEqual(answers.values.filter(\.allowed).count, 150)
        XCTAssertEqual((0..<150).map { answers[$0]?.remaining }, (0..<150).map { Int64(149 - $0) })
    }

    func testKeysAreNamespacedAndExpire() throws {
        let redis = LoopDrivenRedisStore(settings: try settings())
        let key = RateLimitKey(text: "ttl-\(UUID().uuidString)")
        let p = RateLimitParams(algorithm: .fixedWindow, limit: 5, windowMicros: 10_000_000)
        _ = try redis.acquire(key, params: p, now: t0 + 4_000_000, cost: 1)
        let name = redis.store.redisKey(key)
        XCTAssertTrue(name.hasPrefix("pc-test:rl:"))
        XCTAssertEqual(name.count, "pc-test:rl:".count + 16)
        guard case .integer(let ttl) = try redis.command(["PTTL", name]) else { return XCTFail("no TTL") }
        // 6 s left in the window plus the 1 s margin.
        XCTAssertEqual(ttl, 7_000, accuracy: 100)
    }

    func testNoscriptIsReloadedAfterAFlush() throws {
        let redis = LoopDrivenRedisStore(settings: try settings())
        let p = RateLimitParams(algorithm: .tokenBucket, limit: 5, windowMicros: 1_000_000)
        let key = RateLimitKey(text: "noscript-\(UUID().uuidString)")
        XCTAssertEqual(try redis.acquire(key, params: p, now: t0, cost: 1).remaining, 4)
        XCTAssertNotNil(redis.store.scriptSHA, "EVALSHA from now on")
        XCTAssertEqual(try redis.command(["SCRIPT", "FLUSH"]), .string("OK"))
        XCTAssertEqual(try redis.acquire(key, params: p, now: t0, cost: 1).remaining, 3)
    }

    /// Redis hung (SIGSTOP): every request in flight fails when the oldest is `timeout_ms` old,
    /// the connection is dropped, and the next call connects again.
    func testAStoppedRedisFailsEveryRequestInFlightWithinTheTimeout() throws {
        let redis = LoopDrivenRedisStore(settings: try settings())
        let p = params(limit: 10)
        let key = RateLimitKey(text: "stop-\(UUID().uuidString)")
        _ = try redis.acquire(key, params: p, now: t0, cost: 1)
        Self.server!.signal(SIGSTOP)
        let start = Date()
        var failures: [(RateLimitStoreError, Date)] = []
        for _ in 0..<3 {
            redis.store.acquire(key, params: p, now: t0, cost: 1) { answer in
                if case .failure(let e) = answer { failures.append((e, Date())) }
            }
        }
        XCTAssertTrue(runLoop(redis.loop, seconds: 2) { failures.count == 3 })
        XCTAssertEqual(failures.map(\.0.message), Array(repeating: "redis: no answer within 50 ms", count: 3))
        for (_, at) in failures {
            XCTAssertLessThan(at.timeIntervalSince(start), 0.2, "a hung Redis costs the timeout, not more")
        }
        XCTAssertEqual(redis.store.inFlight, 0)
        Self.server!.signal(SIGCONT)
        // The commands that timed out had been sent, so Redis ran them when it resumed: they
        // count (errs on the strict side). 1 + 3 + this one.
        XCTAssertEqual(try redis.acquire(key, params: p, now: t0, cost: 1).remaining, 5)
    }

    /// Redis killed while requests wait for it: they fail as soon as the connection breaks,
    /// well before the timeout.
    func testRedisKilledMidFlightFailsThePendingRequestsAtOnce() throws {
        var s = try settings()
        s.timeoutMs = 5_000
        let redis = LoopDrivenRedisStore(settings: s)
        let p = params(limit: 10)
        let key = RateLimitKey(text: "kill-\(UUID().uuidString)")
        _ = try redis.acquire(key, params: p, now: t0, cost: 1)
        Self.server!.signal(SIGSTOP)  // so that the requests are written and wait for answers
        var failures: [RateLimitStoreError] = []
        for _ in 0..<5 {
            redis.store.acquire(key, params: p, now: t0, cost: 1) { answer in
                if case .failure(let e) = answer { failures.append(e) }
            }
        }
        for _ in 0..<3 { redis.loop.runOnce(maxWaitMs: 10) }
        XCTAssertEqual(redis.store.inFlight, 5)
        let start = Date()
        Self.server!.stop()
        defer { XCTAssertNoThrow(try Self.server!.start()) }
        XCTAssertTrue(runLoop(redis.loop, seconds: 2) { failures.count == 5 })
        XCTAssertLessThan(Date().timeIntervalSince(start), 1, "not the 5 s timeout")
        XCTAssertFalse(failures.contains { $0.message.contains("no answer within") })
        // Nothing listens now: the next call fails on connect.
        XCTAssertThrowsError(try redis.acquire(key, params: p, now: t0, cost: 1)) { error in
            XCTAssertTrue("\(error)".contains("redis:"), "\(error)")
        }
    }

    /// A connect that never completes (a listener whose accept queue is full drops the SYN) is
    /// bounded by the same timeout.
    func testAConnectThatHangsFailsWithinTheTimeout() throws {
        var s = try settings()
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, len) == 0 && getsockname(listener, $0, &len) == 0 }
        }
        XCTAssertTrue(bound)
        XCTAssertEqual(listen(listener, 0), 0)
        var fillers: [Int32] = []
        defer { fillers.forEach { close($0) } }
        for _ in 0..<3 {  // fill the accept queue, never accepted
            let c = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(c, $0, len) } }
            fillers.append(c)
        }
        usleep(20_000)
        s.endpoint = .tcp(RedisAddress(host: "127.0.0.1", port: Int(UInt16(bigEndian: addr.sin_port))))
        s.timeoutMs = 100
        let redis = LoopDrivenRedisStore(settings: s)
        let start = Date()
        XCTAssertThrowsError(try redis.acquire(RateLimitKey(text: "hang"), params: params(limit: 1), now: t0, cost: 1)) { error in
            XCTAssertEqual("\(error)", "redis: no answer within 100 ms")
        }
        XCTAssertEqual(Date().timeIntervalSince(start), 0.1, accuracy: 0.08)
    }

    /// Redis hung, then killed, then restarted, through the limiter on a loop: each policy answers
    /// within the timeout, nothing waits longer, and counting resumes after the retry interval.
    func testFailurePoliciesWhileRedisIsDownAndRecovery() throws {
        var redis = try settings()
        redis.instances = 2
        redis.retryMs = 1_000
        var settings = RateLimitSettings()
        settings.redis = redis
        let table = try SharedMemoryRateTable.create(path: temporaryPath("failover-\(UUID().uuidString).table"), slots: 1024)
        let lines = RecordingObserver()
        let loop = EventLoop(index: 0)
        let limiter = RateLimiter(local: table, remote: RedisRateLimitStore(settings: redis, loop: loop), settings: settings,
                                  observer: table.observer(log: lines.observer.log))
        let run = UUID().uuidString
        func spec(_ name: String, _ policy: RateLimitFailurePolicy) -> [RateLimitSpec] {
            [RateLimitSpec(name: "\(name)-\(run)", params: RateLimitParams(algorithm: .fixedWindow, limit: 4, windowMicros: 60_000_000),
                           key: [.ip], store: .redis, onStoreFailure: policy)]
        }
        let subject = RateLimitSubject(credentialId: nil, consumerId: nil, consumerGroups: [], clientIP: "198.51.100.7", routeName: "r")
        func evaluate(_ limits: [RateLimitSpec], now: Int64) -> RateLimitOutcome? {
            var outcome: RateLimitOutcome?
            limiter.evaluate(limits, subject: subject, now: now) { outcome = $0 }
            runLoop(loop) { outcome != nil }
            return outcome
        }
        var now = t0
        for policy in [RateLimitFailurePolicy.open, .closed, .local] {
            let o = evaluate(spec("\(policy)", policy), now: now)
            XCTAssertEqual(o?.results[0].path, .primary)
            XCTAssertEqual(o?.results[0].decision?.remaining, 3)
        }

        // Hung: requests of every policy in flight at once, all answered by their policy.
        Self.server!.signal(SIGSTOP)
        now += 1
        var outcomes: [String: [RateLimitOutcome]] = [:]
        let start = Date()
        for (name, policy) in [("open", RateLimitFailurePolicy.open), ("closed", .closed), ("local", .local), ("local", .local)] {
            limiter.evaluate(spec(name, policy), subject: subject, now: now) { outcomes[name, default: []].append($0) }
        }
        XCTAssertTrue(outcomes.isEmpty, "they wait for Redis")
        runLoop(loop) { outcomes.values.map(\.count).reduce(0, +) == 4 }
        XCTAssertLessThan(Date().timeIntervalSince(start), 0.2, "within the 50 ms timeout, not more")
        XCTAssertEqual(outcomes["open"]?.map(\.verdict), [.allowed])
        XCTAssertEqual(outcomes["open"]?.first?.results[0].path, .failOpen)
        XCTAssertEqual(outcomes["closed"]?.first?.verdict, .storeUnavailable)
        XCTAssertEqual(outcomes["closed"]?.first?.problem?.status, 503)
        XCTAssertEqual(outcomes["local"]?.map(\.allowed), [true, true])
        // In the retry interval nothing waits: 4 / 2 instances = 2 locally, already used.
        XCTAssertEqual(evaluate(spec("local", .local), now: now)?.logSummary, "local-\(run):denied@local:0")
        XCTAssertEqual(table.stats.storeFailures, 4)
        XCTAssertEqual(table.stats.degradedDecisions, 5)
        XCTAssertEqual(lines.lines.filter { $0.contains("redis unavailable") }.count, 1)

        // Killed and restarted (empty: no persistence). After the retry interval, counting
        // resumes there.
        Self.server!.stop()
        try Self.server!.start()
        now += 1_000_000
        var resumed: RateLimitOutcome?
        for _ in 0..<3 {  // the first call may still meet the connection that broke
            let o = evaluate(spec("local", .local), now: now)
            if o?.results[0].path == .primary { resumed = o; break }
            now += 1_000_000
        }
        XCTAssertEqual(resumed?.results[0].decision?.remaining, 3)
        XCTAssertFalse(limiter.degraded)
        XCTAssertTrue(lines.lines.contains { $0.contains("resumed") })
    }
}
