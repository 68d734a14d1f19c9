import Foundation
import XCTest
@testable import PortcullisCore

/// The breaker's transitions on one word, with the test as the clock (milliseconds).
final class CircuitBreakerTests: XCTestCase {
    private func breaker(_ configure: (inout BreakerPolicy) -> Void = { _ in }) -> CircuitBreaker {
        var policy = BreakerPolicy()
        policy.consecutiveFailures = 3
        policy.openMs = 1_000
        policy.maxOpenMs = 5_000
        policy.halfOpenProbes = 2
        configure(&policy)
        return CircuitBreaker(policy: policy, probeTimeoutMs: 10_000)
    }

    func testConsecutiveFailuresOpenAndOpenRejectsUntilItsEnd() {
        let b = breaker(), w = TestWord()
        XCTAssertEqual(b.admit(w, nowMs: 0), .closed)
        b.record(w, window: nil, success: false, admission: .closed, nowMs: 0)
        b.record(w, window: nil, success: false, admission: .closed, nowMs: 0)
        XCTAssertEqual(BreakerWord(raw: w.load()).state, .closed)
        XCTAssertTrue(b.record(w, window: nil, success: false, admission: .closed, nowMs: 100), "the third failure in a row opens it")
        XCTAssertEqual(BreakerWord(raw: w.load()).state, .open)
        XCTAssertEqual(b.admit(w, nowMs: 500), .rejected(untilMs: 1_100))
        XCTAssertFalse(b.isAvailable(w.load(), nowMs: 1_099))
        XCTAssertTrue(b.isAvailable(w.load(), nowMs: 1_100))
    }

    func testASuccessResetsTheFailureCount() {
        let b = breaker(), w = TestWord()
        b.record(w, window: nil, success: false, admission: .closed, nowMs: 0)
        b.record(w, window: nil, success: false, admission: .closed, nowMs: 0)
        b.record(w, window: nil, success: true, admission: .closed, nowMs: 0)
        b.record(w, window: nil, success: false, admission: .closed, nowMs: 0)
        XCTAssertEqual(BreakerWord(raw: w.load()).state, .closed)
        XCTAssertEqual(BreakerWord(raw: w.load()).failures, 1)
    }

    func testHalfOpenAdmitsKProbesAndClosesAfterKSuccesses() {
        let b = breaker(), w = TestWord()
        for _ in 0..<3 { b.record(w, window: nil, success: false, admission: .closed, nowMs: 0) }
        XCTAssertEqual(b.admit(w, nowMs: 1_000), .probe)
        XCTAssertEqual(b.admit(w, nowMs: 1_000), .probe)
        XCTAssertEqual(b.admit(w, nowMs: 1_000), .rejected(untilMs: 11_000), "only two probes at a time")
        b.record(w, window: nil, success: true, admission: .probe, nowMs: 1_010)
        XCTAssertEqual(BreakerWord(raw: w.load()).state, .halfOpen)
        b.record(w, window: nil, success: true, admission: .probe, nowMs: 1_020)
        XCTAssertEqual(BreakerWord(raw: w.load()).state, .closed)
        XCTAssertEqual(b.admit(w, nowMs: 1_030), .closed)
    }

    func testAFailedProbeReopensWithADoubledPeriodUpToTheMaximum() {
        let b = breaker(), w = TestWord()
        for _ in 0..<3 { b.record(w, window: nil, success: false, admission: .closed, nowMs: 0) }
        var now: UInt64 = 1_000
        var periods: [UInt64] = []
        for _ in 0..<5 {
            XCTAssertEqual(b.admit(w, nowMs: now), .probe)
            b.record(w, window: nil, success: false, admission: .probe, nowMs: now)
            let word = BreakerWord(raw: w.load())
            XCTAssertEqual(word.state, .open)
            periods.append(word.until - now)
            now = word.until
        }
        XCTAssertEqual(periods, [2_000, 4_000, 5_000, 5_000, 5_000])
        XCTAssertEqual(b.admit(w, nowMs: now), .probe)
        b.record(w, window: nil, success: true, admission: .probe, nowMs: now)
        XCTAssertEqual(b.admit(w, nowMs: now), .probe)
        b.record(w, window: nil, success: true, admission: .probe, nowMs: now)
        XCTAssertEqual(BreakerWord(raw: w.load()), BreakerWord(state: .closed), "closing forgets the reopenings")
    }

    func testAStuckProbeRoundExpires() {
        let b = breaker(), w = TestWord()
        for _ in 0..<3 { b.record(w, window: nil, success: false, admission: .closed, nowMs: 0) }
        XCTAssertEqual(b.admit(w, nowMs: 1_000), .probe)
        XCTAssertEqual(b.admit(w, nowMs: 1_000), .probe)
        // Their worker died: nobody reports. After the probe timeout new probes go out.
        XCTAssertEqual(b.admit(w, nowMs: 10_999), .rejected(untilMs: 11_000))
        XCTAssertEqual(b.admit(w, nowMs: 11_000), .probe)
    }

    func testFailureRatioOverAWindowWithAMinimumOfCalls() {
        let b = breaker {
            $0.consecutiveFailures = 255
            $0.failureRatioPercent = 50
            $0.minimumCalls = 10
            $0.windowSeconds = 10
        }
        let w = TestWord(), window = TestWord()
        // Alternating results: 50 % failures, but no trip before the tenth call.
        for i in 0..<9 {
            XCTAssertFalse(b.record(w, window: window, success: i % 2 == 0, admission: .closed, nowMs: 1_000))
        }
        XCTAssertEqual(BreakerWord(raw: w.load()).state, .closed)
        XCTAssertTrue(b.record(w, window: window, success: false, admission: .closed, nowMs: 1_000))
        XCTAssertEqual(BreakerWord(raw: w.load()).state, .open)
    }

    func testFailureRatioWindowRestarts() {
        let b = breaker {
            $0.consecutiveFailures = 255
            $0.failureRatioPercent = 50
            $0.minimumCalls = 4
            $0.windowSeconds = 10
        }
        let w = TestWord(), window = TestWord()
        for _ in 0..<3 { b.record(w, window: window, success: false, admission: .closed, nowMs: 0) }
        // A new window: the old failures are forgotten.
        for _ in 0..<3 { b.record(w, window: window, success: true, admission: .closed, nowMs: 20_000) }
        XCTAssertFalse(b.record(w, window: window, success: false, admission: .closed, nowMs: 20_000))
        XCTAssertEqual(BreakerWord(raw: w.load()).state, .closed)
    }

    func testProbeBudgetHoldsAcrossThreads() {
        let b = breaker { $0.halfOpenProbes = 5 }
        let w = TestWord()
        for _ in 0..<3 { b.record(w, window: nil, success: false, admission: .closed, nowMs: 0) }
        let probes = TestWord()
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for _ in 0..<1_000 where b.admit(w, nowMs: 2_000) == .probe { probes.add(1) }
        }
        XCTAssertEqual(probes.load(), 5, "8 threads × 1000 admissions let exactly the 5 probes through")
    }

    func testDisabledBreakerNeverOpens() {
        let b = breaker { $0.enabled = false }
        let w = TestWord()
        for _ in 0..<10 { b.record(w, window: nil, success: false, admission: .closed, nowMs: 0) }
        XCTAssertEqual(b.admit(w, nowMs: 0), .closed)
    }
}
