/// A counter per aligned window: `[window id: 24 bits | count: 32 bits]`.
///
/// The window id is `now / window` modulo 2^24; a stored id that differs from the current one
/// means the count belongs to a past window and starts again from zero. (An id can only be
/// confused with one exactly 2^24 windows older — 194 days with 1 s windows — and then the
/// error is to count too much, never too little.)
///
/// Accuracy: at most `limit` per aligned window, but up to `2 × limit` in a window-long
/// interval that straddles a boundary (the end of one window and the start of the next).
public enum FixedWindow {
    public static let countBits: UInt64 = 32
    public static let countMask: UInt64 = (1 << 32) - 1
    public static let idMask: UInt64 = (1 << 24) - 1

    static func windowId(_ p: RateLimitParams, _ now: Int64) -> UInt64 { UInt64(now / p.windowMicros) & idMask }

    public static func decide(_ p: RateLimitParams, state: UInt64, now: Int64, cost: Int64)
        -> (decision: RateLimitDecision, state: UInt64)
    {
        let id = windowId(p, now)
        let count = (state >> countBits) & idMask == id ? Int64(state & countMask) : 0
        let windowEnd = (now / p.windowMicros + 1) * p.windowMicros
        let untilEnd = windowEnd - now
        if count + cost <= p.limit {
            let newCount = count + cost
            let d = RateLimitDecision(allowed: true, limit: p.limit, remaining: p.limit - newCount,
                                      resetAfterMicros: untilEnd, retryAfterMicros: 0)
            return (d, id << countBits | UInt64(newCount))
        }
        // A cost above the limit is never admitted; the next window is the best answer there is.
        let d = RateLimitDecision(allowed: false, limit: p.limit, remaining: max(0, p.limit - count),
                                  resetAfterMicros: count > 0 ? untilEnd : 0, retryAfterMicros: untilEnd)
        return (d, state)
    }

    public static func refund(_ p: RateLimitParams, state: UInt64, now: Int64, cost: Int64) -> UInt64 {
        let id = windowId(p, now)
        guard (state >> countBits) & idMask == id else { return state }
        let count = Int64(state & countMask)
        return id << countBits | UInt64(max(0, count - cost))
    }
}
