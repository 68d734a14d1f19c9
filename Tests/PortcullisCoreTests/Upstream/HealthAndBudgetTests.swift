import Foundation
import XCTest
@testable import PortcullisCore

final class HealthAndBudgetTests: XCTestCase {
    func testHealthThresholds() {
        var policy = HealthCheckPolicy()
        policy.unhealthyThreshold = 3
        policy.healthyThreshold = 2
        let w = TestWord()
        HealthWord.record(w, success: false, policy: policy)
        HealthWord.record(w, success: false, policy: policy)
        XCTAssertTrue(HealthWord(raw: w.load()).healthy)
        let (before, after) = HealthWord.record(w, success: false, policy: policy)
        XCTAssertTrue(before.healthy)
        XCTAssertFalse(after.healthy, "three failures in a row take it out")
        HealthWord.record(w, success: true, policy: policy)
        XCTAssertFalse(HealthWord(raw: w.load()).healthy)
        HealthWord.record(w, success: false, policy: policy)
        HealthWord.record(w, success: true, policy: policy)
        XCTAssertFalse(HealthWord(raw: w.load()).healthy, "successes must be consecutive")
        HealthWord.record(w, success: true, policy: policy)
        XCTAssertTrue(HealthWord(raw: w.load()).healthy, "two in a row bring it back")
    }

    func testRetryBudgetAllowsTheMinimumThenAPercentageOfFirstTries() {
        var policy = RetryPolicy()
        policy.budgetMinimum = 2
        policy.budgetPercent = 20
        policy.budgetWindowSeconds = 10
        let w = TestWord()
        XCTAssertTrue(RetryBudget.acquire(w, nowSeconds: 100, policy: policy))
        XCTAssertTrue(RetryBudget.acquire(w, nowSeconds: 100, policy: policy))
        XCTAssertFalse(RetryBudget.acquire(w, nowSeconds: 100, policy: policy), "the minimum is spent")
        for _ in 0..<50 { RetryBudget.noteRequest(w, nowSeconds: 101, policy: policy) }
        var granted = 0
        for _ in 0..<100 where RetryBudget.acquire(w, nowSeconds: 102, policy: policy) { granted += 1 }
        XCTAssertEqual(granted, 8, "20 % of 50 first tries = 10 retries in the window, 2 already taken")
        XCTAssertTrue(RetryBudget.acquire(w, nowSeconds: 110, policy: policy), "a new window")
    }

    func testRetryBudgetAcrossThreads() {
        var configured = RetryPolicy()
        configured.budgetMinimum = 0
        configured.budgetPercent = 10
        let policy = configured
        let w = TestWord()
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<1_000 { RetryBudget.noteRequest(w, nowSeconds: 5, policy: policy) }
        }
        let granted = TestWord()
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<1_000 where RetryBudget.acquire(w, nowSeconds: 5, policy: policy) { granted.add(1) }
        }
        XCTAssertEqual(granted.load(), 400)
    }
}
