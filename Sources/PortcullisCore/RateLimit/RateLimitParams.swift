/// The counting algorithm of one limit.
public enum RateLimitAlgorithm: String, Sendable, Hashable, CaseIterable {
    /// GCRA: smooth refill at `limit / window`, up to `burst` requests at once.
    case tokenBucket = "token_bucket"
    /// Two-window weighted approximation of a true sliding window.
    case slidingWindow = "sliding_window"
    /// Counter per aligned window (up to 2× the limit across a window boundary).
    case fixedWindow = "fixed_window"
    /// At most `limit` requests in flight, as leases lasting `windowMicros` ([ConcurrencyLeases]).
    case concurrency
}

/// What one limit allows: `limit` requests per `windowMicros`, and for the token bucket a
/// capacity of `burst` requests.
///
/// Every algorithm keeps its state in the low ``RateLimitState/payloadBits`` bits of one
/// `UInt64`, so a decision is a single 64-bit compare-and-swap in shared memory.
public struct RateLimitParams: Sendable, Hashable, CustomStringConvertible {
    public var algorithm: RateLimitAlgorithm
    public var limit: Int64
    public var windowMicros: Int64
    /// Token bucket capacity; equal to `limit` for the window algorithms.
    public var burst: Int64

    /// Largest `limit` each algorithm can count in its packed state.
    public static func maxLimit(_ algorithm: RateLimitAlgorithm) -> Int64 {
        switch algorithm {
        case .tokenBucket: return 1_000_000_000
        case .fixedWindow: return Int64(FixedWindow.countMask)
        case .slidingWindow, .concurrency: return Int64(SlidingWindow.countMask)
        }
    }

    /// Longest window (31 days): keeps the sliding window's weighted sums inside Int64.
    public static let maxWindowMicros: Int64 = 31 * 86_400 * 1_000_000

    public init(algorithm: RateLimitAlgorithm, limit: Int64, windowMicros: Int64, burst: Int64? = nil) {
        precondition(limit >= 1 && limit <= RateLimitParams.maxLimit(algorithm), "limit out of range")
        precondition(windowMicros >= 1 && windowMicros <= RateLimitParams.maxWindowMicros, "window out of range")
        self.algorithm = algorithm
        self.limit = limit
        self.windowMicros = windowMicros
        self.burst = algorithm == .tokenBucket ? max(1, burst ?? limit) : limit
    }

    /// The quota advertised in `RateLimit-Limit`: the bucket capacity for a token bucket,
    /// the per-window limit otherwise.
    public var quota: Int64 { algorithm == .tokenBucket ? burst : limit }

    /// One quota-policy item of the IETF draft's `RateLimit-Policy` field: `q` is the quota per
    /// window (`limit`), `w` the window in seconds. A token bucket also admits `burst` at once,
    /// which `q` cannot say, so it adds the vendor parameter `pc-burst` (the draft lets servers
    /// add prefixed parameters, which clients that do not know them ignore).
    public func policyItem(name: String) -> String {
        var item = "\"" + name + "\";q=" + String(limit) + ";w=" + String(RateLimitState.ceilSeconds(windowMicros))
        if algorithm == .tokenBucket { item += ";pc-burst=" + String(burst) }
        return item
    }

    /// The same limit shared by `instances` gateways that each count locally (Redis fallback).
    public func divided(by instances: Int) -> RateLimitParams {
        guard instances > 1 else { return self }
        let n = Int64(instances)
        return RateLimitParams(algorithm: algorithm, limit: max(1, limit / n), windowMicros: windowMicros,
                               burst: max(1, burst / n))
    }

    /// Stable text identifying the parameters; part of every counter key, so that a reload that
    /// keeps a limit keeps its counters and one that changes it starts fresh.
    public var description: String {
        "\(algorithm.rawValue)/\(limit)/\(windowMicros)/\(burst)"
    }
}

/// The answer for one limit and one request.
public struct RateLimitDecision: Sendable, Equatable {
    public var allowed: Bool
    /// The advertised quota (``RateLimitParams/quota``).
    public var limit: Int64
    /// Requests still admitted right now after this one.
    public var remaining: Int64
    /// Microseconds until the whole quota is available again (and the stored state can be forgotten).
    public var resetAfterMicros: Int64
    /// When denied: microseconds until a request of the same cost would be admitted; 0 when allowed.
    public var retryAfterMicros: Int64

    public init(allowed: Bool, limit: Int64, remaining: Int64, resetAfterMicros: Int64, retryAfterMicros: Int64) {
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.resetAfterMicros = resetAfterMicros
        self.retryAfterMicros = retryAfterMicros
    }
}

/// Helpers shared by the algorithms' packed states.
public enum RateLimitState {
    /// Bits available to an algorithm's state; the shared-memory table keeps the top 8 bits of
    /// the word for its slot owner tag.
    public static let payloadBits = 56
    public static let payloadMask: UInt64 = (1 << 56) - 1

    /// Whole seconds for a header, rounded up (a client waiting that long is never early).
    public static func ceilSeconds(_ micros: Int64) -> Int64 {
        micros <= 0 ? 0 : (micros + 999_999) / 1_000_000
    }
}

/// Dispatch over the three algorithms. Every function is pure: state and time in, result out.
public enum RateLimitAlgorithms {
    /// Decides one request of `cost`. The state `0` is a fresh (never used or expired) state.
    /// The returned state is unchanged when the request is denied.
    public static func decide(_ params: RateLimitParams, state: UInt64, now: Int64, cost: Int64 = 1)
        -> (decision: RateLimitDecision, state: UInt64)
    {
        switch params.algorithm {
        case .tokenBucket: return GCRA.decide(params, state: state, now: now, cost: cost)
        case .fixedWindow: return FixedWindow.decide(params, state: state, now: now, cost: cost)
        case .slidingWindow: return SlidingWindow.decide(params, state: state, now: now, cost: cost)
        case .concurrency: return ConcurrencyLeases.decide(params, state: state, now: now, cost: cost)
        }
    }

    /// Gives back what an admitted request of `cost` consumed (used when a later limit of the
    /// same request rejects it, and for a concurrency lease when the request ends; then `now`
    /// must be the time the lease was taken). Never goes below a fresh state.
    public static func refund(_ params: RateLimitParams, state: UInt64, now: Int64, cost: Int64 = 1) -> UInt64 {
        switch params.algorithm {
        case .tokenBucket: return GCRA.refund(params, state: state, now: now, cost: cost)
        case .fixedWindow: return FixedWindow.refund(params, state: state, now: now, cost: cost)
        case .slidingWindow: return SlidingWindow.refund(params, state: state, now: now, cost: cost)
        // For a lease, `now` is when it was taken (its period).
        case .concurrency: return ConcurrencyLeases.release(params, state: state, acquiredAt: now, cost: cost)
        }
    }
}
