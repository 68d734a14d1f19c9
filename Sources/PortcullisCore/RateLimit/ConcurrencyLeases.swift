/// Concurrency limit: at most `limit` requests in flight per key, each holding a **lease** that
/// is given back when the request ends and lapses on its own when the holder never gives it back
/// (its worker died mid-request). `windowMicros` is the lease period `L`.
///
/// Same packed state as the sliding window, `[period id: 16 | previous: 20 | current: 20]`, with
/// periods `[k·L, (k+1)·L)`: a lease taken in period `k` is counted in `current` while `k` is
/// the latest period and in `previous` during `k + 1`; from `k + 2` on it has lapsed. So a lease
/// nobody releases holds its place for at least `L` and less than `2·L`. In flight =
/// `previous + current`. A release names the period its lease was taken in (the acquisition
/// time) and decrements that period's count, or nothing when the lease has lapsed already, so
/// a late release can never free another request's place.
public enum ConcurrencyLeases {
    public static func decide(_ p: RateLimitParams, state: UInt64, now: Int64, cost: Int64)
        -> (decision: RateLimitDecision, state: UInt64)
    {
        var c = SlidingWindow.counts(p, state: state, now: now)
        let untilEnd = p.windowMicros - now % p.windowMicros
        let inFlight = c.previous + c.current
        if inFlight + cost <= p.limit {
            c.current += cost
            // Until the last counted lease lapses: the end of the next period.
            let d = RateLimitDecision(allowed: true, limit: p.limit, remaining: p.limit - inFlight - cost,
                                      resetAfterMicros: untilEnd + p.windowMicros, retryAfterMicros: 0)
            return (d, SlidingWindow.pack(p, c, now))
        }
        // Places free up whenever a request ends; a client cannot know when, so it is told 1 s.
        let d = RateLimitDecision(allowed: false, limit: p.limit, remaining: max(0, p.limit - inFlight),
                                  resetAfterMicros: inFlight > 0 ? untilEnd + p.windowMicros : 0,
                                  retryAfterMicros: 1_000_000)
        return (d, state)
    }

    /// Gives back a lease of `cost` taken at `acquiredAt` (the request's decision time).
    public static func release(_ p: RateLimitParams, state: UInt64, acquiredAt: Int64, cost: Int64) -> UInt64 {
        guard state != 0 else { return 0 }
        let leaseId = UInt64(acquiredAt / p.windowMicros) & SlidingWindow.idMask
        let storedId = (state >> (2 * SlidingWindow.countBits)) & SlidingWindow.idMask
        let prev = (state >> SlidingWindow.countBits) & SlidingWindow.countMask
        let cur = state & SlidingWindow.countMask
        let c = UInt64(cost)
        if leaseId == storedId {
            return storedId << (2 * SlidingWindow.countBits) | prev << SlidingWindow.countBits | (cur - min(cur, c))
        }
        if (leaseId + 1) & SlidingWindow.idMask == storedId {
            return storedId << (2 * SlidingWindow.countBits) | (prev - min(prev, c)) << SlidingWindow.countBits | cur
        }
        return state
    }
}
