/// The instance's time in Redis degraded mode, kept in two words of the metrics file: a state
/// word (degraded event loops in bits 0–15, since when in bits 16–63, milliseconds on the
/// monotonic clock) and the milliseconds of the periods already closed. A period opens when
/// the first loop of any worker becomes degraded and closes when the last one recovers, so
/// loops degraded at the same time count once. Pure: the caller applies the result with a CAS.
public enum DegradedTime {
    public static let countMask: UInt64 = 0xFFFF

    public static func loops(_ state: UInt64) -> UInt64 { state & countMask }
    public static func since(_ state: UInt64) -> UInt64 { state >> 16 }

    /// The state after `delta` loops entered (positive) or left (negative) degraded mode at
    /// `nowMs`, and the milliseconds of the period this closed (0 when none closed).
    public static func apply(_ state: UInt64, delta: Int64, nowMs: UInt64) -> (state: UInt64, closedMs: UInt64) {
        let before = Int64(loops(state))
        let after = UInt64(min(max(before + delta, 0), Int64(countMask)))
        if before == 0 { return (after == 0 ? 0 : nowMs << 16 | after, 0) }
        if after == 0 { return (0, nowMs > since(state) ? nowMs - since(state) : 0) }
        return (state & ~countMask | after, 0)
    }

    /// Milliseconds degraded so far: the closed periods plus the open one up to `nowMs`.
    public static func total(state: UInt64, closedMs: UInt64, nowMs: UInt64) -> UInt64 {
        guard loops(state) > 0, nowMs > since(state) else { return closedMs }
        return closedMs + nowMs - since(state)
    }
}
