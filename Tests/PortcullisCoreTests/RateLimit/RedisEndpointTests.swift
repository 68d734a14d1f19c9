import Foundation
import XCTest
@testable import PortcullisCore
@testable import PortcullisRuntime

/// The store against Redis as production runs it: an ACL user with a password, a unix socket,
/// and a master found through a real sentinel.
final class RedisEndpointTests: XCTestCase {
    let t0: Int64 = 1_700_000_000_000_000
    let password = "pw-\(UUID().uuidString)"
    let p = RateLimitParams(algorithm: .fixedWindow, limit: 2, windowMicros: 60_000_000)

    private func acl() throws -> RedisServerProcess {
        try RedisServerProcess(extra: ["--user", "default", "off", "--user", "gateway", "on", ">\(password)", "~*", "&*", "+@all"])
    }

    private func settings(_ endpoint: RedisEndpoint, username: String? = nil, password: String? = nil) -> RedisSettings {
        var s = RedisSettings()
        s.endpoint = endpoint
        s.username = username
        s.password = password.map(RedisPassword.init)
        s.namespace = "pc-endpoint"
        s.timeoutMs = 500
        return s
    }

    private func tcp(_ server: RedisServerProcess) -> RedisEndpoint { .tcp(RedisAddress(host: "127.0.0.1", port: server.port)) }

    /// Three acquires on a fresh key: limit 2 gives allowed, allowed, denied.
    private func assertCounts(_ redis: LoopDrivenRedisStore, file: StaticString = #filePath, line: UInt = #line) throws {
        let key = RateLimitKey(text: "endpoint-\(UUID().uuidString)")
        let allowed = try (0..<3).map { _ in try redis.acquire(key, params: p, now: t0, cost: 1).allowed }
        XCTAssertEqual(allowed, [true, true, false], file: file, line: line)
    }

    private func failure(_ redis: LoopDrivenRedisStore) -> String? {
        do {
            _ = try redis.acquire(RateLimitKey(text: "fail-\(UUID().uuidString)"), params: p, now: t0, cost: 1)
            return nil
        } catch {
            return error.message
        }
    }

    func testAuthAsAnACLUserIsPipelinedAheadOfTheFirstRequest() throws {
        let server = try acl()
        let redis = LoopDrivenRedisStore(settings: settings(tcp(server), username: "gateway", password: password))
        redis.store.acquire(RateLimitKey(text: "first"), params: p, now: t0, cost: 1) { _ in }
        XCTAssertEqual(redis.store.inFlight, 3, "AUTH, SCRIPT LOAD and the request, all sent without waiting")
        XCTAssertTrue(runLoop(redis.loop) { redis.store.inFlight == 0 })
        try assertCounts(redis)
    }

    func testAWrongPasswordFailsTheConnectionsCommandsWithRedisReason() throws {
        let server = try acl()
        let redis = LoopDrivenRedisStore(settings: settings(tcp(server), username: "gateway", password: "wrong-\(password)"))
        let message = failure(redis)
        XCTAssertEqual(message, "redis: authentication failed: WRONGPASS invalid username-password pair or user is disabled.")
        XCTAssertFalse(message?.contains(password) ?? true)
        XCTAssertEqual(redis.store.inFlight, 0)
        // Every call reconnects and authenticates again (the limiter spaces them by retry_ms).
        XCTAssertEqual(failure(redis), message)
    }

    func testNoPasswordAgainstAProtectedRedisFails() throws {
        let server = try acl()
        let message = failure(LoopDrivenRedisStore(settings: settings(tcp(server)))) ?? "no failure"
        // The first request carries the script (`EVAL`, 11 arguments): more than Redis reads
        // from an unauthenticated client, so it answers with a protocol error and closes.
        XCTAssertTrue(message.hasPrefix("redis: NOAUTH") || message == "redis: ERR Protocol error: unauthenticated multibulk length", message)
    }

    func testUnixSocket() throws {
        let path = NSTemporaryDirectory() + "pc-\(UUID().uuidString.prefix(8)).sock"
        let server = try RedisServerProcess(extra: ["--unixsocket", path, "--unixsocketperm", "700"])
        try assertCounts(LoopDrivenRedisStore(settings: settings(.unix(path: path))))
        server.stop()
        let message = failure(LoopDrivenRedisStore(settings: settings(.unix(path: path))))
        XCTAssertTrue(message?.hasPrefix("redis: connect to unix:\(path): ") ?? false, message ?? "no failure")
    }

    /// A real sentinel watching `master` as `name`; with `requirepass`, its clients must AUTH.
    private func sentinel(watching master: RedisServerProcess, name: String, requirepass: String? = nil) throws -> RedisServerProcess {
        let conf = NSTemporaryDirectory() + "pc-sentinel-\(UUID().uuidString).conf"
        return try RedisServerProcess(arguments: { port in
            FileManager.default.createFile(atPath: conf, contents: Data("""
                port \(port)
                bind 127.0.0.1
                dir \(NSTemporaryDirectory())
                sentinel monitor \(name) 127.0.0.1 \(master.port) 1
                \(requirepass.map { "requirepass \($0)" } ?? "")

                """.utf8))
            return [conf, "--sentinel"]
        })
    }

    func testTheMasterIsAskedOfTheSentinelsInTurn() throws {
        let master = try RedisServerProcess()
        let live = try sentinel(watching: master, name: "pcm")
        let dead = RedisAddress(host: "127.0.0.1", port: try RedisServerProcess.freePort())
        let redis = LoopDrivenRedisStore(settings: settings(.sentinel([dead, RedisAddress(host: "127.0.0.1", port: live.port)], masterName: "pcm")))
        redis.store.acquire(RateLimitKey(text: "waits"), params: p, now: t0, cost: 1) { _ in }
        XCTAssertEqual(redis.store.inFlight, 1, "the request waits for a sentinel's answer")
        XCTAssertTrue(runLoop(redis.loop) { redis.store.inFlight == 0 })
        try assertCounts(redis)
        // A lost connection: the next command asks again (the live sentinel first now).
        redis.store.disconnect()
        try assertCounts(redis)
    }

    /// A sentinel that accepts the connection and never answers costs one timeout; the next
    /// discovery starts with the sentinel after it.
    func testAHungSentinelIsNotAskedFirstAgain() throws {
        let master = try RedisServerProcess()
        let live = try sentinel(watching: master, name: "pcm")
        let hung = try LoopbackSocket.bind(listen: 16)  // connections complete, nothing is read
        defer { close(hung.fd) }
        var s = settings(.sentinel([RedisAddress(host: "127.0.0.1", port: Int(hung.port)), RedisAddress(host: "127.0.0.1", port: live.port)],
                                   masterName: "pcm"))
        s.timeoutMs = 100
        let redis = LoopDrivenRedisStore(settings: s)
        XCTAssertEqual(failure(redis), "redis: no sentinel named the master \"pcm\" (127.0.0.1:\(hung.port): no answer within 100 ms)")
        try assertCounts(redis)
    }

    func testSentinelsThatRequireAPassword() throws {
        let master = try RedisServerProcess()
        let live = try sentinel(watching: master, name: "pcm", requirepass: password)
        var s = settings(.sentinel([RedisAddress(host: "127.0.0.1", port: live.port)], masterName: "pcm"))
        s.sentinelPassword = RedisPassword(password)
        try assertCounts(LoopDrivenRedisStore(settings: s))

        s.sentinelPassword = RedisPassword("wrong-\(password)")
        XCTAssertEqual(failure(LoopDrivenRedisStore(settings: s)), "redis: no sentinel named the master \"pcm\" (127.0.0.1:\(live.port): "
                       + "authentication failed: WRONGPASS invalid username-password pair or user is disabled.)")
        s.sentinelPassword = nil
        let message = failure(LoopDrivenRedisStore(settings: s)) ?? "no failure"
        XCTAssertTrue(message.hasSuffix("127.0.0.1:\(live.port): NOAUTH Authentication required.)"), message)
    }

    func testNoSentinelKnowsTheMaster() throws {
        let master = try RedisServerProcess()
        let live = try sentinel(watching: master, name: "pcm")
        let dead = RedisAddress(host: "127.0.0.1", port: try RedisServerProcess.freePort())
        let redis = LoopDrivenRedisStore(settings: settings(.sentinel([dead, RedisAddress(host: "127.0.0.1", port: live.port)], masterName: "other")))
        let message = failure(redis) ?? "no failure"
        XCTAssertTrue(message.hasPrefix("redis: no sentinel named the master \"other\" (127.0.0.1:\(dead.port): "), message)
        XCTAssertTrue(message.hasSuffix("; 127.0.0.1:\(live.port): does not know the master \"other\")"), message)
        XCTAssertEqual(redis.store.inFlight, 0)
    }
}
