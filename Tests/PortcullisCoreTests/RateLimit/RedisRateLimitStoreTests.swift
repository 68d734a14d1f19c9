import Foundation
import XCTest
@testable import PortcullisCore
@testable import PortcullisRuntime

/// A private `redis-server` on a free loopback port, without persistence; killed at the end.
final class RedisServerProcess {
    let port: Int
    private var process: Process?

    init() throws {
        port = try Self.freePort()
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
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw RateLimitStoreError("cannot find a free port") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try Self.executable())
        p.arguments = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                       "--daemonize", "no", "--dir", NSTemporaryDirectory()]
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

final class RedisRateLimitStoreTests: XCTestCase {
    nonisolated(unsafe) static var server: RedisServerProcess?
    let t0: Int64 = 1_700_000_000_000_000

    override class func tearDown() {
        server?.stop()
        server = nil
    }

    func settings() throws -> RedisSettings {
        if Self.server == nil { Self.server = try RedisServerProcess() }
        var s = RedisSettings()
        s.port = Self.server!.port
        s.namespace = "pc-test"
        s.timeoutMs = 50
        return s
    }

    func contract() throws -> RateLimitStoreContract {
        let s = try settings()
        return RateLimitStoreContract(makeStore: { RedisRateLimitStore(settings: s) })
    }

    func testMatchesThePureAlgorithms() throws { try contract().matchesThePureAlgorithms() }
    func testAdmitsExactlyTheLimitPerWindow() throws { try contract().admitsExactlyTheLimitPerWindow() }
    func testRefundAndIndependentKeys() throws { try contract().refundGivesBackAndKeysAreIndependent() }

    func testConnectionsPerThreadAdmitExactlyTheLimit() throws {
        let c = try contract()
        try c.concurrentRequestsAdmitExactlyTheLimit(.fixedWindow, threads: 4, perThread: 100, limit: 150)
        try c.concurrentRequestsAdmitExactlyTheLimit(.tokenBucket, threads: 4, perThread: 100, limit: 150)
    }

    func testKeysAreNamespacedAndExpire() throws {
        let store = RedisRateLimitStore(settings: try settings())
        let key = RateLimitKey(text: "ttl-\(UUID().uuidString)")
        let p = RateLimitParams(algorithm: .fixedWindow, limit: 5, windowMicros: 10_000_000)
        _ = try store.acquire(key, params: p, now: t0 + 4_000_000, cost: 1)
        let name = store.redisKey(key)
        XCTAssertTrue(name.hasPrefix("pc-test:rl:"))
        XCTAssertEqual(name.count, "pc-test:rl:".count + 16)
        guard case .integer(let ttl) = try store.command(["PTTL", name]) else { return XCTFail("no TTL") }
        // 6 s left in the window plus the 1 s margin.
        XCTAssertEqual(ttl, 7_000, accuracy: 100)
    }

    func testNoscriptIsReloadedAfterAFlush() throws {
        let store = RedisRateLimitStore(settings: try settings())
        let p = RateLimitParams(algorithm: .tokenBucket, limit: 5, windowMicros: 1_000_000)
        let key = RateLimitKey(text: "noscript-\(UUID().uuidString)")
        XCTAssertEqual(try store.acquire(key, params: p, now: t0, cost: 1).remaining, 4)
        XCTAssertEqual(try store.command(["SCRIPT", "FLUSH"]), .string("OK"))
        XCTAssertEqual(try store.acquire(key, params: p, now: t0, cost: 1).remaining, 3)
    }

    func testAStoppedRedisTimesOutQuickly() throws {
        let s = try settings()
        let store = RedisRateLimitStore(settings: s)
        let p = RateLimitParams(algorithm: .fixedWindow, limit: 5, windowMicros: 1_000_000)
        let key = RateLimitKey(text: "stop-\(UUID().uuidString)")
        _ = try store.acquire(key, params: p, now: t0, cost: 1)
        Self.server!.signal(SIGSTOP)
        defer { Self.server!.signal(SIGCONT) }
        let start = Date()
        XCTAssertThrowsError(try store.acquire(key, params: p, now: t0, cost: 1))
        XCTAssertLessThan(Date().timeIntervalSince(start), 0.5, "a hung Redis costs the timeout, not more")
        Self.server!.signal(SIGCONT)
        // The broken connection was dropped; the next call reconnects. The command that timed out
        // had been sent, so Redis ran it when it resumed: it counts (errs on the strict side).
        XCTAssertEqual(try store.acquire(key, params: p, now: t0, cost: 1).remaining, 2)
    }

    /// Redis killed mid-run: every policy behaves as documented and nothing waits past the
    /// timeout; Redis restarted: distributed counting resumes after the retry interval.
    func testFailurePoliciesWhileRedisIsDownAndRecovery() throws {
        var redis = try settings()
        redis.instances = 2
        redis.retryMs = 1_000
        var settings = RateLimitSettings()
        settings.redis = redis
        let table = try SharedMemoryRateTable.create(path: temporaryPath("failover-\(UUID().uuidString).table"), slots: 1024)
        let lines = RecordingObserver()
        let limiter = RateLimiter(local: table, remote: RedisRateLimitStore(settings: redis), settings: settings,
                                  observer: table.observer(log: lines.observer.log))
        let run = UUID().uuidString
        func spec(_ name: String, _ policy: RateLimitFailurePolicy) -> [RateLimitSpec] {
            [RateLimitSpec(name: "\(name)-\(run)", params: RateLimitParams(algorithm: .fixedWindow, limit: 4, windowMicros: 60_000_000),
                           key: [.ip], store: .redis, onStoreFailure: policy)]
        }
        let subject = RateLimitSubject(credentialId: nil, consumerId: nil, consumerGroups: [], clientIP: "198.51.100.7", routeName: "r")
        var now = t0
        for policy in [RateLimitFailurePolicy.open, .closed, .local] {
            let o = limiter.evaluate(spec("\(policy)", policy), subject: subject, now: now)
            XCTAssertEqual(o.results[0].path, .primary)
            XCTAssertEqual(o.results[0].decision?.remaining, 3)
        }

        Self.server!.stop()
        now += 1
        let start = Date()
        let open = limiter.evaluate(spec("open", .open), subject: subject, now: now)
        XCTAssertEqual(open.verdict, .allowed)
        XCTAssertEqual(open.results[0].path, .failOpen)
        let closed = limiter.evaluate(spec("closed", .closed), subject: subject, now: now)
        XCTAssertEqual(closed.verdict, .storeUnavailable)
        XCTAssertEqual(closed.problem?.status, 503)
        let local = (0..<4).map { _ in limiter.evaluate(spec("local", .local), subject: subject, now: now) }
        XCTAssertEqual(local.map(\.allowed), [true, true, false, false], "4 / 2 instances = 2 locally")
        XCTAssertEqual(local.map { $0.results[0].path }, Array(repeating: .fallbackLocal, count: 4))
        XCTAssertLessThan(Date().timeIntervalSince(start), 0.5)
        XCTAssertEqual(table.stats.storeFailures, 1)
        XCTAssertEqual(table.stats.degradedDecisions, 6)
        XCTAssertTrue(lines.lines.contains { $0.contains("redis unavailable") })

        // Redis back (empty: no persistence). After the retry interval, counting resumes there.
        try Self.server!.start()
        now += 1_000_000
        var resumed: RateLimitOutcome?
        for _ in 0..<3 {  // the first call may still meet the connection that broke
            let o = limiter.evaluate(spec("local", .local), subject: subject, now: now)
            if o.results[0].path == .primary { resumed = o; break }
            now += 1_000_000
        }
        XCTAssertEqual(resumed?.results[0].decision?.remaining, 3)
        XCTAssertFalse(limiter.degraded)
        XCTAssertTrue(lines.lines.contains { $0.contains("resumed") })
    }
}
