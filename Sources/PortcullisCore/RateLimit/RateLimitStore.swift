import Foundation

/// Why a store could not decide.
public struct RateLimitStoreError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A backend that keeps counters and applies one algorithm step atomically per key.
///
/// Like swift-log's `LogHandler`: the limiter is the API, stores are backends, and every store
/// passes the same contract test suite (`RateLimitStoreContract` in the tests).
/// A store object may be used by one thread at a time only (the Redis store holds one
/// connection); the shared-memory table is safe from any thread and process.
public protocol RateLimitStore: AnyObject {
    /// Decides one request of `cost` against the counter `key` and commits it when admitted.
    func acquire(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64) throws(RateLimitStoreError) -> RateLimitDecision

    /// Gives back an admitted request's `cost` (a later limit of the same request rejected it).
    func refund(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64) throws(RateLimitStoreError)
}

/// A store in process memory, for tests and single-process tools: same algorithms, a lock per
/// call. Not shared between processes, so not used by the gateway's workers.
public final class InMemoryRateLimitStore: RateLimitStore, @unchecked Sendable {
    private var states: [UInt64: UInt64] = [:]
    private let lock = NSLock()

    public init() {}

    public func acquire(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64) throws(RateLimitStoreError) -> RateLimitDecision {
        lock.lock()
        defer { lock.unlock() }
        let (decision, state) = RateLimitAlgorithms.decide(params, state: states[key.hash] ?? 0, now: now, cost: cost)
        states[key.hash] = state
        return decision
    }

    public func refund(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64) throws(RateLimitStoreError) {
        lock.lock()
        defer { lock.unlock() }
        guard let s = states[key.hash] else { return }
        states[key.hash] = RateLimitAlgorithms.refund(params, state: s, now: now, cost: cost)
    }
}

/// Wall-clock microseconds since the Unix epoch: the one time base shared by every worker and
/// every gateway instance (counters in shared memory and Redis are absolute times).
public enum RateLimitClock {
    public static func nowMicros() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1_000
    }
}
