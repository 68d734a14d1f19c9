#if canImport(Glibc)
import Glibc
#endif
import CHiredis
import PortcullisCore

/// Rate-limit counters in Redis, shared by every gateway instance: one `EVALSHA` of
/// ``RedisRateLimitScript`` per decision (the script is loaded with `SCRIPT LOAD` on first use
/// and again when Redis answers `NOSCRIPT`, e.g. after a restart), keys
/// `<namespace>:rl:<hash>` with a TTL.
///
/// One object per worker thread: it owns one blocking hiredis connection with the configured
/// connect and command timeout (tens of milliseconds), so a slow or dead Redis costs a request
/// at most that long, and the limiter's failure policy takes over. A failed connection is
/// dropped and reopened on the next call.
public final class RedisRateLimitStore: RateLimitStore {
    public let settings: RedisSettings
    private var context: UnsafeMutablePointer<redisContext>?
    private var scriptSHA: String?

    public init(settings: RedisSettings) {
        self.settings = settings
    }

    deinit { disconnect() }

    /// The Redis key of a counter.
    public func redisKey(_ key: RateLimitKey) -> String {
        let hex = String(key.hash, radix: 16)
        return settings.namespace + ":rl:" + String(repeating: "0", count: 16 - hex.count) + hex
    }

    public func acquire(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64) throws(RateLimitStoreError) -> RateLimitDecision {
        let r = try run("a", key, params, now, cost)
        return RateLimitDecision(allowed: r[0] == 1, limit: params.quota, remaining: r[1], resetAfterMicros: r[2], retryAfterMicros: r[3])
    }

    public func refund(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64) throws(RateLimitStoreError) {
        _ = try run("r", key, params, now, cost)
    }

    /// Drops the connection (the next call reconnects).
    public func disconnect() {
        if let context { redisFree(context) }
        context = nil
    }

    private func run(_ op: String, _ key: RateLimitKey, _ p: RateLimitParams, _ now: Int64, _ cost: Int64) throws(RateLimitStoreError) -> [Int64] {
        let sha = try loadedScript()
        let tail = [redisKey(key), op, RedisRateLimitScript.algorithmCode(p.algorithm), String(now), String(p.limit),
                    String(p.windowMicros), String(p.burst), String(cost)]
        var reply = try command(["EVALSHA", sha, "1"] + tail)
        if case .error(let message) = reply, message.hasPrefix("NOSCRIPT") {
            scriptSHA = nil
            reply = try command(["EVALSHA", try loadedScript(), "1"] + tail)
        }
        switch reply {
        case .array(let values) where values.count == 4: return values
        case .error(let message): throw RateLimitStoreError("redis: \(message)")
        default: throw RateLimitStoreError("redis: unexpected reply to EVALSHA")
        }
    }

    private func loadedScript() throws(RateLimitStoreError) -> String {
        if let scriptSHA { return scriptSHA }
        switch try command(["SCRIPT", "LOAD", RedisRateLimitScript.source]) {
        case .string(let sha):
            scriptSHA = sha
            return sha
        case .error(let message): throw RateLimitStoreError("redis: SCRIPT LOAD: \(message)")
        default: throw RateLimitStoreError("redis: unexpected reply to SCRIPT LOAD")
        }
    }

    enum Reply: Equatable {
        case string(String)
        case integer(Int64)
        case array([Int64])
        case error(String)
        case other
    }

    private func connected() throws(RateLimitStoreError) -> UnsafeMutablePointer<redisContext> {
        if let context { return context }
        let tv = timeval(tv_sec: settings.timeoutMs / 1_000, tv_usec: (settings.timeoutMs % 1_000) * 1_000)
        guard let c = redisConnectWithTimeout(settings.host, Int32(settings.port), tv) else {
            throw RateLimitStoreError("redis: cannot allocate a connection")
        }
        if c.pointee.err != 0 {
            let message = Self.errorText(c)
            redisFree(c)
            throw RateLimitStoreError("redis: connect to \(settings.host):\(settings.port): \(message)")
        }
        guard redisSetTimeout(c, tv) == REDIS_OK else {
            redisFree(c)
            throw RateLimitStoreError("redis: cannot set the command timeout")
        }
        context = c
        return c
    }

    private static func errorText(_ c: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafePointer(to: &c.pointee.errstr) {
            String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
        }
    }

    /// One command through `redisCommandArgv` (Swift cannot call the variadic `redisCommand`).
    func command(_ args: [String]) throws(RateLimitStoreError) -> Reply {
        let c = try connected()
        var pointers: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) }
        defer { for p in pointers { free(p) } }
        var lengths: [Int] = args.map { $0.utf8.count }
        let raw = pointers.withUnsafeMutableBufferPointer { ptrs in
            lengths.withUnsafeMutableBufferPointer { lens in
                ptrs.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: args.count) { argv in
                    redisCommandArgv(c, Int32(args.count), argv, lens.baseAddress)
                }
            }
        }
        guard let raw else {
            let message = Self.errorText(c)
            disconnect()  // a timed-out or broken connection cannot be reused
            throw RateLimitStoreError(message.isEmpty ? "redis: connection lost" : "redis: \(message)")
        }
        defer { freeReplyObject(raw) }
        let reply = raw.assumingMemoryBound(to: redisReply.self).pointee
        switch reply.type {
        case REDIS_REPLY_STRING, REDIS_REPLY_STATUS:
            return .string(String(cString: reply.str))
        case REDIS_REPLY_INTEGER:
            return .integer(Int64(reply.integer))
        case REDIS_REPLY_ERROR:
            return .error(String(cString: reply.str))
        case REDIS_REPLY_ARRAY:
            var values: [Int64] = []
            for i in 0..<reply.elements {
                guard let e = reply.element[i]?.pointee, e.type == REDIS_REPLY_INTEGER else { return .other }
                values.append(Int64(e.integer))
            }
            return .array(values)
        default:
            return .other
        }
    }
}
