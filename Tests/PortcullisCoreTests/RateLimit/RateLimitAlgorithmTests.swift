import XCTest
@testable import PortcullisCore

/// The algorithms against a fake clock: times are plain microsecond values.
final class RateLimitAlgorithmTests: XCTestCase {
    /// A time aligned on every window used here (1 s, 10 s).
    let t0: Int64 = 1_700_000_000_000_000

    private func run(_ p: RateLimitParams, _ state: inout UInt64, at now: Int64, cost: Int64 = 1) -> RateLimitDecision {
        let (d, s) = RateLimitAlgorithms.decide(p, state: state, now: now, cost: cost)
        state = s
        return d
    }

    func testTokenBucketBurstThenRefill() {
        let p = RateLimitParams(algorithm: .tokenBucket, limit: 10, windowMicros: 1_000_000, burst: 20)
        var s: UInt64 = 0
        let first = run(p, &s, at: t0)
        XCTAssertEqual(first, RateLimitDecision(allowed: true, limit: 20, remaining: 19, resetAfterMicros: 100_000, retryAfterMicros: 0))
        for i in 2...20 {
            let d = run(p, &s, at: t0)
            XCTAssertTrue(d.allowed, "request \(i)")
            XCTAssertEqual(d.remaining, Int64(20 - i))
        }
        let denied = run(p, &s, at: t0)
        XCTAssertEqual(denied, RateLimitDecision(allowed: false, limit: 20, remaining: 0, resetAfterMicros: 2_000_000,
                                                 retryAfterMicros: 100_000))
        // A denial does not change the state.
        XCTAssertEqual(RateLimitAlgorithms.decide(p, state: s, now: t0).state, s)
        // 250 ms later 2.5 tokens are back: two requests pass, the third waits 50 ms.
        XCTAssertEqual(run(p, &s, at: t0 + 250_000).remaining, 1)
        XCTAssertEqual(run(p, &s, at: t0 + 250_000).remaining, 0)
        let again = run(p, &s, at: t0 + 250_000)
        XCTAssertFalse(again.allowed)
        XCTAssertEqual(again.retryAfterMicros, 50_000)
        // After the full reset time the bucket is full again.
        XCTAssertEqual(run(p, &s, at: t0 + 250_000 + again.resetAfterMicros).remaining, 19)
    }

    func testTokenBucketSustainedRateIsTheLimit() {
        let p = RateLimitParams(algorithm: .tokenBucket, limit: 10, windowMicros: 1_000_000, burst: 5)
        var s: UInt64 = 0
        var admitted = 0
        // One attempt per millisecond for 10 s: 5 (burst) + 10/s × 10 s.
        for ms in 0..<10_000 where run(p, &s, at: t0 + Int64(ms) * 1_000).allowed { admitted += 1 }
        XCTAssertEqual(admitted, 5 + 100 - 1)  // the 100th refill lands exactly at 10 s, outside the run
    }

    func testTokenBucketRoundsIntervalDownSoBurstIsExact() {
        // 3 per 10 s: T = 3 333 333 µs; exactly 3 at once, a 4th is refused.
        let p = RateLimitParams(algorithm: .tokenBucket, limit: 3, windowMicros: 10_000_000)
        var s: UInt64 = 0
        XCTAssertEqual((0..<4).map { _ in run(p, &s, at: t0).allowed }, [true, true, true, false])
    }

    func testTokenBucketRefund() {
        let p = RateLimitParams(algorithm: .tokenBucket, limit: 2, windowMicros: 1_000_000)
        var s: UInt64 = 0
        _ = run(p, &s, at: t0)
        _ = run(p, &s, at: t0)
        s = RateLimitAlgorithms.refund(p, state: s, now: t0)
        XCTAssertEqual(run(p, &s, at: t0).remaining, 0)
        // Refunding more than was consumed never makes the bucket better than fresh.
        s = RateLimitAlgorithms.refund(p, state: s, now: t0, cost: 10)
        XCTAssertEqual(run(p, &s, at: t0).remaining, 1)
    }

    func testFixedWindowCountsAndResets() {
        let p = RateLimitParams(algorithm: .fixedWindow, limit: 5, windowMicros: 10_000_000)
        var s: UInt64 = 0
        let now = t0 + 3_000_000
        for i in 1...5 {
            let d = run(p, &s, at: now)
            XCTAssertEqual(d, RateLimitDecision(allowed: true, limit: 5, remaining: Int64(5 - i), resetAfterMicros: 7_000_000, retryAfterMicros: 0))
        }
        let denied = run(p, &s, at: now + 500_000)
        XCTAssertEqual(denied, RateLimitDecision(allowed: false, limit: 5, remaining: 0, resetAfterMicros: 6_500_000, retryAfterMicros: 6_500_000))
        XCTAssertEqual(RateLimitState.ceilSeconds(denied.retryAfterMicros), 7)
        // Next window: a fresh count.
        XCTAssertEqual(run(p, &s, at: t0 + 10_000_000).remaining, 4)
        // Refund only touches the current window.
        s = RateLimitAlgorithms.refund(p, state: s, now: t0 + 10_000_000)
        XCTAssertEqual(run(p, &s, at: t0 + 10_000_001).remaining, 4)
    }

    func testFixedWindowAllowsTwiceTheLimitAcrossABoundary() {
        // The documented 2× burst: the last instant of one window and the first of the next.
        let p = RateLimitParams(algorithm: .fixedWindow, limit: 5, windowMicros: 10_000_000)
        var s: UInt64 = 0
        let admitted = (0..<5).filter { _ in run(p, &s, at: t0 + 9_999_999).allowed }.count
            + (0..<5).filter { _ in run(p, &s, at: t0 + 10_000_000).allowed }.count
        XCTAssertEqual(admitted, 10)
    }

    func testSlidingWindowWeighsThePreviousWindow() {
        let p = RateLimitParams(algorithm: .slidingWindow, limit: 10, windowMicros: 10_000_000)
        var s: UInt64 = 0
        for _ in 0..<10 { XCTAssertTrue(run(p, &s, at: t0 + 5_000_000).allowed) }
        XCTAssertFalse(run(p, &s, at: t0 + 9_000_000).allowed)
        // 2 s into the next window the previous 10 weigh 8: two more pass.
        let now = t0 + 12_000_000
        XCTAssertEqual(run(p, &s, at: now), RateLimitDecision(allowed: true, limit: 10, remaining: 1, resetAfterMicros: 18_000_000, retryAfterMicros: 0))
        XCTAssertEqual(run(p, &s, at: now).remaining, 0)
        // The third waits until 3 s into the window: 10 × 0.7 + 2 + 1 = 10.
        let denied = run(p, &s, at: now)
        XCTAssertEqual(denied, RateLimitDecision(allowed: false, limit: 10, remaining: 0, resetAfterMicros: 18_000_000, retryAfterMicros: 1_000_000))
        XCTAssertFalse(run(p, &s, at: now + denied.retryAfterMicros - 1).allowed)
        XCTAssertTrue(run(p, &s, at: now + denied.retryAfterMicros).allowed)
        // Two windows later nothing is counted.
        XCTAssertEqual(run(p, &s, at: t0 + 30_000_000).remaining, 9)
    }

    func testSlidingWindowRetryAfterInTheNextWindow() {
        let p = RateLimitParams(algorithm: .slidingWindow, limit: 4, windowMicros: 10_000_000)
        var s: UInt64 = 0
        for _ in 0..<4 { _ = run(p, &s, at: t0 + 1_000_000) }
        // Full in the current window: wait for the next one, where 4 × (1 − f) + 1 ≤ 4 → f ≥ 0.25.
        let denied = run(p, &s, at: t0 + 2_000_000)
        XCTAssertEqual(denied.retryAfterMicros, 8_000_000 + 2_500_000)
        XCTAssertFalse(run(p, &s, at: t0 + 2_000_000 + denied.retryAfterMicros - 1).allowed)
        XCTAssertTrue(run(p, &s, at: t0 + 2_000_000 + denied.retryAfterMicros).allowed)
    }

    /// The stated bound: every aligned window admits at most L, and any window-long interval at
    /// most 2L; with evenly spread traffic the interval count stays at L.
    func testSlidingWindowStaysWithinItsBound() {
        let p = RateLimitParams(algorithm: .slidingWindow, limit: 50, windowMicros: 1_000_000)
        var s: UInt64 = 0
        var admitted: [Int64] = []
        var rng = SplitMix(seed: 7)
        var now = t0
        for _ in 0..<20_000 {
            now += Int64(rng.next() % 2_000)  // bursts and gaps, 1 ms on average
            if run(p, &s, at: now).allowed { admitted.append(now) }
        }
        var lo = 0
        var worst = 0
        for (hi, t) in admitted.enumerated() {
            while admitted[lo] <= t - p.windowMicros { lo += 1 }
            worst = max(worst, hi - lo + 1)
        }
        XCTAssertLessThanOrEqual(worst, 100)
        XCTAssertLessThanOrEqual(worst, 55, "uniform-ish traffic should stay near the limit")
        let perWindow = Dictionary(grouping: admitted, by: { $0 / p.windowMicros }).values.map(\.count)
        XCTAssertLessThanOrEqual(perWindow.max() ?? 0, 50)
    }

    func testStatesFitInTheirPayloadBits() {
        let cases: [RateLimitParams] = [
            RateLimitParams(algorithm: .tokenBucket, limit: 1_000_000_000, windowMicros: RateLimitParams.maxWindowMicros),
            RateLimitParams(algorithm: .fixedWindow, limit: RateLimitParams.maxLimit(.fixedWindow), windowMicros: 1_000_000),
            RateLimitParams(algorithm: .slidingWindow, limit: RateLimitParams.maxLimit(.slidingWindow), windowMicros: RateLimitParams.maxWindowMicros),
        ]
        for p in cases {
            var s: UInt64 = 0
            for _ in 0..<3 { _ = run(p, &s, at: t0 + 123_456, cost: p.limit / 2) }
            XCTAssertEqual(s & ~RateLimitState.payloadMask, 0, "\(p)")
        }
    }

    func testCeilSeconds() {
        XCTAssertEqual(RateLimitState.ceilSeconds(0), 0)
        XCTAssertEqual(RateLimitState.ceilSeconds(1), 1)
        XCTAssertEqual(RateLimitState.ceilSeconds(1_000_000), 1)
        XCTAssertEqual(RateLimitState.ceilSeconds(1_000_001), 2)
    }
}

/// A small deterministic generator for test traffic.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
