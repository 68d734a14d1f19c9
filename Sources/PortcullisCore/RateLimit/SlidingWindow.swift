/// Sliding window as the two-window weighted approximation:
/// `[window id: 16 bits | previous count: 20 bits | current count: 20 bits]`.
///
/// At elapsed fraction `f` of the current aligned window, the estimate of the requests in the
/// last window-long interval is `previous × (1 − f) + current`; a request is admitted when the
/// estimate plus its cost is at most `limit`. Integer arithmetic in microseconds:
/// `previous × (W − e) + (current + cost) × W ≤ limit × W`.
///
/// Accuracy (see docs/rate-limiting.md): every aligned window admits at most `limit`; the count
/// in any window-long interval ending at `now` is at most `limit + previous × f` — exact when
/// the previous window's requests were spread evenly, and never above `2 × limit` even in the
/// worst case (all of the previous window's requests in its last instant).
public enum SlidingWindow {
    public static let countBits: UInt64 = 20
    public static let countMask: UInt64 = (1 << 20) - 1
    public static let idMask: UInt64 = (1 << 16) - 1

    struct Counts { var previous: Int64; var current: Int64 }

    /// The counts as seen from the window containing `now`.
    static func counts(_ p: RateLimitParams, state: UInt64, now: Int64) -> Counts {
        let id = UInt64(now / p.windowMicros) & idMask
        let storedId = (state >> (2 * countBits)) & idMask
        let prev = Int64((state >> countBits) & countMask)
        let cur = Int64(state & countMask)
        if state == 0 { return Counts(previous: 0, current: 0) }
        if storedId == id { return Counts(previous: prev, current: cur) }
        if (storedId + 1) & idMask == id { return Counts(previous: cur, current: 0) }
        return Counts(previous: 0, current: 0)
    }

    static func pack(_ p: RateLimitParams, _ c: Counts, _ now: Int64) -> UInt64 {
        let id = UInt64(now / p.windowMicros) & idMask
        return id << (2 * countBits) | UInt64(c.previous) << countBits | UInt64(c.current)
    }

    /// Microseconds until the counted requests have all slid out of the window.
    static func resetAfter(_ c: Counts, untilEnd: Int64, window: Int64) -> Int64 {
        c.current > 0 ? untilEnd + window : (c.previous > 0 ? untilEnd : 0)
    }

    public static func decide(_ p: RateLimitParams, state: UInt64, now: Int64, cost: Int64)
        -> (decision: RateLimitDecision, state: UInt64)
    {
        let w = p.windowMicros
        let elapsed = now % w
        let untilEnd = w - elapsed
        var c = counts(p, state: state, now: now)
        let weightedPrevious = c.previous * untilEnd  // previous × (W − e)
        if weightedPrevious + (c.current + cost) * w <= p.limit * w {
            c.current += cost
            let used = (weightedPrevious + c.current * w + w - 1) / w  // estimate, rounded up
            let d = RateLimitDecision(allowed: true, limit: p.limit, remaining: max(0, p.limit - used),
                                      resetAfterMicros: resetAfter(c, untilEnd: untilEnd, window: w), retryAfterMicros: 0)
            return (d, pack(p, c, now))
        }
        let used = (weightedPrevious + c.current * w + w - 1) / w
        let d = RateLimitDecision(allowed: false, limit: p.limit, remaining: max(0, p.limit - used),
                                  resetAfterMicros: resetAfter(c, untilEnd: untilEnd, window: w),
                                  retryAfterMicros: retryAfter(p, c, elapsed: elapsed, cost: cost))
        return (d, state)
    }

    /// The earliest time at which `previous × (W − e′) + (current + cost) × W ≤ limit × W`,
    /// looking first at the rest of this window, then at the next one (where this window's
    /// count becomes the previous one).
    static func retryAfter(_ p: RateLimitParams, _ c: Counts, elapsed: Int64, cost: Int64) -> Int64 {
        let w = p.windowMicros
        guard cost <= p.limit else { return (w - elapsed) + w }
        // Later in this window: previous × (W − e′) ≤ (limit − current − cost) × W.
        let room = (p.limit - c.current - cost) * w
        if room >= 0 && c.previous > 0 {
            // e′ ≥ W − room / previous, rounded so that the inequality holds.
            let e = w - room / c.previous
            if e < w { return max(1, e - elapsed) }
        }
        // In the next window, the current count weighs current × (W − e″) / W.
        let nextRoom = (p.limit - cost) * w
        if c.current == 0 { return w - elapsed }
        let e2 = max(0, w - nextRoom / c.current)
        if e2 < w { return (w - elapsed) + e2 }
        return (w - elapsed) + w
    }

    public static func refund(_ p: RateLimitParams, state: UInt64, now: Int64, cost: Int64) -> UInt64 {
        let id = UInt64(now / p.windowMicros) & idMask
        guard (state >> (2 * countBits)) & idMask == id, state != 0 else { return state }
        var c = counts(p, state: state, now: now)
        c.current = max(0, c.current - cost)
        return pack(p, c, now)
    }
}
