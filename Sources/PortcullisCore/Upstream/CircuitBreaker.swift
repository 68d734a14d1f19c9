/// A target's breaker state packed into one 64-bit word, so every transition is one CAS on
/// shared memory (a worker killed mid-transition leaves no lock and no torn state).
///
/// Bits: state 0–1 · consecutive openings 2–6 · consecutive failures 7–14 · probes admitted
/// 15–20 · probe successes 21–26 · `until` 27–63 (milliseconds on the table's clock: the end of
/// the open period, or of a half-open round).
public struct BreakerWord: Equatable, Sendable {
    public enum State: UInt64, Sendable, CaseIterable {
        case closed = 0, open = 1, halfOpen = 2
        /// How `status` and the metrics name the state.
        public var name: String {
            switch self {
            case .closed: return "closed"
            case .open: return "open"
            case .halfOpen: return "half_open"
            }
        }
    }
    public static let maxCount = 255
    public static let maxProbes = 63
    static let maxTrips: UInt64 = 31
    static let maxUntil: UInt64 = (1 << 37) - 1

    public var raw: UInt64
    public init(raw: UInt64) { self.raw = raw }

    public init(state: State, trips: UInt64 = 0, failures: UInt64 = 0, probes: UInt64 = 0, successes: UInt64 = 0, until: UInt64 = 0) {
        raw = state.rawValue | min(trips, Self.maxTrips) << 2 | min(failures, UInt64(Self.maxCount)) << 7
            | min(probes, UInt64(Self.maxProbes)) << 15 | min(successes, UInt64(Self.maxProbes)) << 21 | min(until, Self.maxUntil) << 27
    }

    public var state: State { State(rawValue: raw & 3) ?? .closed }
    public var trips: UInt64 { (raw >> 2) & 31 }
    public var failures: UInt64 { (raw >> 7) & 255 }
    public var probes: UInt64 { (raw >> 15) & 63 }
    public var successes: UInt64 { (raw >> 21) & 63 }
    public var until: UInt64 { raw >> 27 }
}

/// The circuit breaker's decisions on a ``BreakerWord`` (and, with a failure ratio, a
/// ``BreakerWindow``): closed → open on `consecutiveFailures` failures in a row or a failure
/// ratio over a window with a minimum of calls; open for `openMs`, doubled on each reopening up
/// to `maxOpenMs`; then half-open, where `halfOpenProbes` requests of the whole instance are let
/// through: all succeeding closes it, one failing reopens it. A half-open round whose probes
/// never report (their worker died) expires after `probeTimeoutMs` and admits new probes.
public struct CircuitBreaker: Sendable {
    public let policy: BreakerPolicy
    public let probeTimeoutMs: UInt64

    public init(policy: BreakerPolicy, probeTimeoutMs: Int) {
        self.policy = policy
        self.probeTimeoutMs = UInt64(max(probeTimeoutMs, 1))
    }

    /// How a request was let through, to be handed back to `record`.
    public enum Admission: Equatable, Sendable {
        case closed
        case probe
        /// Open (or its probes are all out) until `untilMs`.
        case rejected(untilMs: UInt64)
    }

    /// Whether a request may go to the target now (a CAS only when it becomes a probe).
    @inline(__always)
    public func admit<W: AtomicWord>(_ word: W, nowMs: UInt64) -> Admission {
        let first = word.load()
        if first & 3 == 0 || !policy.enabled { return .closed }
        while true {
            let w = BreakerWord(raw: word.load())
            let next: BreakerWord
            switch w.state {
            case .closed:
                return .closed
            case .open:
                guard nowMs >= w.until else { return .rejected(untilMs: w.until) }
                next = BreakerWord(state: .halfOpen, trips: w.trips, probes: 1, until: nowMs + probeTimeoutMs)
            case .halfOpen:
                if w.probes < UInt64(policy.halfOpenProbes) {
                    next = BreakerWord(state: .halfOpen, trips: w.trips, probes: w.probes + 1, successes: w.successes, until: w.until)
                } else if nowMs >= w.until {
                    next = BreakerWord(state: .halfOpen, trips: w.trips, probes: 1, until: nowMs + probeTimeoutMs)
                } else {
                    return .rejected(untilMs: w.until)
                }
            }
            if word.compareExchange(expected: w.raw, desired: next.raw) { return .probe }
        }
    }

    /// True when `admit` would let a request through now (the balancer skips other targets).
    @inline(__always)
    public func isAvailable(_ raw: UInt64, nowMs: UInt64) -> Bool {
        if raw & 3 == 0 || !policy.enabled { return true }
        let w = BreakerWord(raw: raw)
        switch w.state {
        case .closed: return true
        case .open: return nowMs >= w.until
        case .halfOpen: return w.probes < UInt64(policy.halfOpenProbes) || nowMs >= w.until
        }
    }

    /// Open period after the `trips`-th opening in a row.
    public func openDuration(trips: UInt64) -> UInt64 {
        let shift = min(max(trips, 1) - 1, 20)
        return min(UInt64(policy.openMs) << shift, UInt64(policy.maxOpenMs))
    }

    /// Records a request's result. Returns true when this call opened the breaker.
    @discardableResult
    public func record<W: AtomicWord>(_ word: W, window: W?, success: Bool, admission: Admission, nowMs: UInt64) -> Bool {
        guard policy.enabled else { return false }
        var opened = false
        switch admission {
        case .rejected:
            return false
        case .probe:
            word.update { raw in
                let w = BreakerWord(raw: raw)
                guard w.state == .halfOpen else { return nil }
                if success {
                    if w.successes + 1 >= UInt64(policy.halfOpenProbes) { return BreakerWord(state: .closed).raw }
                    return BreakerWord(state: .halfOpen, trips: w.trips, probes: w.probes, successes: w.successes + 1, until: w.until).raw
                }
                let trips = min(w.trips + 1, BreakerWord.maxTrips)
                opened = true
                return BreakerWord(state: .open, trips: trips, until: nowMs + openDuration(trips: trips)).raw
            }
        case .closed:
            if success {
                // The common case costs one load: nothing to reset.
                if word.load() == 0 && window == nil { return false }
                word.update { raw in
                    let w = BreakerWord(raw: raw)
                    guard w.state == .closed, w.failures > 0 else { return nil }
                    return BreakerWord(state: .closed).raw
                }
            } else {
                word.update { raw in
                    let w = BreakerWord(raw: raw)
                    guard w.state == .closed else { return nil }
                    if w.failures + 1 >= UInt64(policy.consecutiveFailures) {
                        opened = true
                        return BreakerWord(state: .open, trips: 1, until: nowMs + openDuration(trips: 1)).raw
                    }
                    opened = false
                    return BreakerWord(state: .closed, failures: w.failures + 1).raw
                }
            }
            if !opened, let window, let percent = policy.failureRatioPercent,
               BreakerWindow.record(window, failure: !success, nowSeconds: nowMs / 1000, policy: policy, percent: percent) {
                word.update { raw in
                    guard BreakerWord(raw: raw).state == .closed else { opened = false; return nil }
                    opened = true
                    return BreakerWord(state: .open, trips: 1, until: nowMs + openDuration(trips: 1)).raw
                }
            }
        }
        return opened
    }
}

/// Calls and failures of the current window (failure-ratio rule): start second 32–63,
/// failures 16–31, calls 0–15.
public enum BreakerWindow {
    /// Counts one call; true when the window now holds at least `minimumCalls` calls and
    /// `percent` % of them failed (the window is then restarted).
    static func record<W: AtomicWord>(_ word: W, failure: Bool, nowSeconds: UInt64, policy: BreakerPolicy, percent: Int) -> Bool {
        var trip = false
        word.update { raw in
            let start = raw >> 32
            var calls = raw & 0xFFFF
            var failures = (raw >> 16) & 0xFFFF
            var begin = start
            if nowSeconds &- start >= UInt64(policy.windowSeconds) || start > nowSeconds {
                begin = nowSeconds
                calls = 0
                failures = 0
            }
            calls = min(calls + 1, 0xFFFF)
            if failure { failures = min(failures + 1, 0xFFFF) }
            trip = calls >= UInt64(policy.minimumCalls) && failures * 100 >= UInt64(percent) * calls
            if trip { return nowSeconds << 32 }
            return begin << 32 | failures << 16 | calls
        }
        return trip
    }
}
