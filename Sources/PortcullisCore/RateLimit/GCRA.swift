/// Token bucket as the Generic Cell Rate Algorithm: the whole state is the "theoretical arrival
/// time" (TAT, microseconds since the Unix epoch), the time at which the bucket would be full.
///
/// Emission interval `T = window / limit` (rounded down to a microsecond), capacity
/// `burst` requests, i.e. a tolerance of `T × burst`. A request of cost `c` is admitted when
/// `max(TAT, now) + c×T − now ≤ T × burst`. Rounding T down makes the long-run rate at most
/// 1 µs per request faster than configured; it keeps "exactly `burst` at once" exact.
public enum GCRA {
    public static func interval(_ p: RateLimitParams) -> Int64 { max(1, p.windowMicros / p.limit) }

    public static func decide(_ p: RateLimitParams, state: UInt64, now: Int64, cost: Int64)
        -> (decision: RateLimitDecision, state: UInt64)
    {
        let t = interval(p)
        let capacity = t * p.burst
        let tat = Int64(bitPattern: state & RateLimitState.payloadMask)
        let base = max(tat, now)
        let newTAT = base + t * cost
        if newTAT - now <= capacity {
            let d = RateLimitDecision(allowed: true, limit: p.quota, remaining: (capacity - (newTAT - now)) / t,
                                      resetAfterMicros: newTAT - now, retryAfterMicros: 0)
            return (d, UInt64(newTAT) & RateLimitState.payloadMask)
        }
        let d = RateLimitDecision(allowed: false, limit: p.quota, remaining: max(0, (capacity - (base - now)) / t),
                                  resetAfterMicros: base - now, retryAfterMicros: newTAT - capacity - now)
        return (d, state)
    }

    public static func refund(_ p: RateLimitParams, state: UInt64, now: Int64, cost: Int64) -> UInt64 {
        let tat = Int64(bitPattern: state & RateLimitState.payloadMask)
        guard tat > now else { return state }
        return UInt64(max(now, tat - interval(p) * cost))
    }
}
