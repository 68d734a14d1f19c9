import XCTest
@testable import PortcullisCore

final class ProbeScheduleTests: XCTestCase {
    typealias Key = ProbeSchedule<Int>.Key
    let slow = Key(upstream: "a", target: "http://10.0.0.1:80")
    let fast = Key(upstream: "b", target: "http://10.0.0.2:80")
    let t0 = ContinuousClock.now

    func testACheckUnderWayDelaysNoOtherTarget() {
        var schedule = ProbeSchedule<Int>()
        schedule.replace(with: [(slow, 1), (fast, 2)], now: t0)
        XCTAssertEqual(schedule.takeDue(now: t0).map(\.0), [slow, fast], "both start in the same round")
        // The fast target's check ends at once and is due again 200 ms later, while the slow one
        // is still under way: the fast one is started again, the slow one is not started twice.
        XCTAssertEqual(schedule.finished(fast, next: { _ in self.t0 + .milliseconds(200) }), 2)
        XCTAssertEqual(schedule.nextDue, t0 + .milliseconds(200))
        XCTAssertTrue(schedule.takeDue(now: t0 + .milliseconds(100)).isEmpty)
        XCTAssertEqual(schedule.takeDue(now: t0 + .milliseconds(200)).map(\.0), [fast])
        XCTAssertNil(schedule.nextDue, "every check is under way")
        XCTAssertEqual(schedule.finished(slow, next: { _ in self.t0 + .seconds(30) }), 1)
        XCTAssertEqual(schedule.nextDue, t0 + .seconds(30))
    }

    func testTheNextDueTimeComesFromTheCurrentItem() {
        var schedule = ProbeSchedule<Int>()
        schedule.replace(with: [(fast, 100)], now: t0)
        _ = schedule.takeDue(now: t0)
        schedule.replace(with: [(fast, 500)], now: t0)  // a reload changed the interval meanwhile
        XCTAssertEqual(schedule.finished(fast, next: { self.t0 + .milliseconds($0) }), 500)
        XCTAssertEqual(schedule.nextDue, t0 + .milliseconds(500))
    }

    func testAReloadKeepsDueTimesAndChecksUnderWay() {
        var schedule = ProbeSchedule<Int>()
        schedule.replace(with: [(slow, 1), (fast, 2)], now: t0)
        _ = schedule.takeDue(now: t0)
        _ = schedule.finished(fast, next: { _ in self.t0 + .seconds(5) })
        let added = Key(upstream: "c", target: "http://10.0.0.3:80")
        schedule.replace(with: [(slow, 1), (fast, 2), (added, 3)], now: t0 + .seconds(1))
        XCTAssertEqual(schedule.takeDue(now: t0 + .seconds(1)).map(\.0), [added],
                       "the slow check is still under way, the fast one keeps its due time, the new one is due")
        XCTAssertEqual(schedule.takeDue(now: t0 + .seconds(5)).map(\.0), [fast])
    }

    func testAResultOfARemovedTargetIsNotRecorded() {
        var schedule = ProbeSchedule<Int>()
        schedule.replace(with: [(slow, 1)], now: t0)
        _ = schedule.takeDue(now: t0)
        schedule.replace(with: [], now: t0)
        XCTAssertNil(schedule.finished(slow, next: { _ in self.t0 }))
        XCTAssertNil(schedule.nextDue)
    }
}
