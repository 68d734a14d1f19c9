import Foundation

/// Why a store could not decide.
public struct RateLimitStoreError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A backend that keeps counters and applies one algorithm step atomically per key, answering
/// at once (no I/O that waits: the shared-memory table, or memory).
///
/// Like swift-log's `LogHandler`: the limiter is the API, stores are backends, and every store
/// passes the same contract test suite (`RateLimitStoreContract` in the tests; the Redis store
/// through a test adapter that waits for its answers). The shared-memory table is safe from
/// any thread and process.
public protocol RateLimitStore: AnyObject {
    /// Decides one request of `cost` against the counter `key` and commits it when admitted.
    func acquire(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64) throws(RateLimitStoreError) -> RateLimitDecision

    /// Gives back an admitted request's `cost` (a later limit of the same request rejected it).
    func refund(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64) throws(RateLimitStoreError)
}

/// A backend whose answers arrive later: Redis, on the worker thread's event loop. Same contract
/// as ``RateLimitStore`` (the same algorithms, one atomic step per call), asynchronous.
///
/// One object per event loop, used only on that loop's thread.
public protocol RemoteRateLimitStore: AnyObject {
    /// Decides one request of `cost` against the counter `key` and commits it when admitted.
    /// Calls `completion` exactly once, on the loop's thread: usually later, when the answer
    /// arrives or the store gives up on it (timeout, lost connection); before returning when
    /// it can tell at once that it cannot answer (connection refused).
    func acquire(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64,
                 completion: @escaping (Result<RateLimitDecision, RateLimitStoreError>) -> Void)

    /// Gives back an admitted request's `cost`, without waiting for the answer: a refund that
    /// fails is lost, which leaves the counter stricter, never looser.
    func refund(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64)
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
