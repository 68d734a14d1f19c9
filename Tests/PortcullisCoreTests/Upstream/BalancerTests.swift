import XCTest
@testable import PortcullisCore

final class BalancerTests: XCTestCase {
    func testSmoothWeightedRoundRobinHonoursWeightsWithin2Percent() {
        var rr = SmoothWeightedRoundRobin(weights: [5, 3, 2])
        var counts = [0, 0, 0]
        for _ in 0..<10_000 { counts[rr.next { _ in true }!] += 1 }
        for (i, expected) in [5_000, 3_000, 2_000].enumerated() {
            XCTAssertLessThanOrEqual(abs(counts[i] - expected), 200, "target \(i): \(counts[i]) of 10 000")
        }
    }

    func testSmoothWeightedRoundRobinInterleaves() {
        var rr = SmoothWeightedRoundRobin(weights: [5, 1, 1])
        let picks = (0..<7).map { _ in rr.next { _ in true }! }
        XCTAssertEqual(picks, [0, 0, 1, 0, 2, 0, 0], "nginx's sequence: the heavy target is spread out, not in a burst")
    }

    func testRoundRobinSkipsIneligibleTargets() {
        var rr = SmoothWeightedRoundRobin(weights: [1, 1, 1])
        var counts = [0, 0, 0]
        for _ in 0..<300 { counts[rr.next { $0 != 1 }!] += 1 }
        XCTAssertEqual(counts, [150, 0, 150])
        XCTAssertNil(rr.next { _ in false })
    }

    func testLeastRequestsPicksTheLeastLoadedPerWeight() {
        let loads: [UInt64] = [4, 1, 3]
        XCTAssertEqual(LeastRequests.pick(count: 3, start: 0, weights: [1, 1, 1], load: { loads[$0] }, eligible: { _ in true }), 1)
        // Weight 4 with 3 in flight (0.75 each) beats weight 1 with 1 in flight.
        XCTAssertEqual(LeastRequests.pick(count: 3, start: 0, weights: [1, 1, 4], load: { loads[$0] }, eligible: { _ in true }), 2)
        XCTAssertEqual(LeastRequests.pick(count: 3, start: 0, weights: [1, 1, 1], load: { loads[$0] }, eligible: { $0 != 1 }), 2)
    }

    func testLeastRequestsSpreadsTiesWithTheStart() {
        var counts = [0, 0, 0]
        for start in 0..<3_000 {
            counts[LeastRequests.pick(count: 3, start: start % 3, weights: [1, 1, 1], load: { _ in 0 }, eligible: { _ in true })!] += 1
        }
        XCTAssertEqual(counts, [1_000, 1_000, 1_000])
    }

    func testLeastRequestsHonoursWeightsUnderSteadyLoad() {
        // Each request stays in flight for a while: the picks converge to the weights.
        let weights = [3, 1]
        var inFlight: [UInt64] = [0, 0]
        var counts = [0, 0]
        var queue: [Int] = []
        for n in 0..<10_000 {
            let i = LeastRequests.pick(count: 2, start: n % 2, weights: weights, load: { inFlight[$0] }, eligible: { _ in true })!
            counts[i] += 1
            inFlight[i] += 1
            queue.append(i)
            if queue.count > 40 { inFlight[queue.removeFirst()] -= 1 }
        }
        XCTAssertLessThanOrEqual(abs(counts[0] - 7_500), 200, "\(counts)")
    }

    private func keys(_ n: Int) -> [UInt64] { (0..<n).map { StableHash.hash("user-\($0)") } }

    func testConsistentHashSpreadsKeysByWeight() {
        let ring = ConsistentHashRing(targets: ["http://a:1", "http://b:1", "http://c:1"], weights: [1, 1, 2])
        var counts = [0, 0, 0]
        for k in keys(20_000) { counts[ring.lookup(k) { _ in true }!] += 1 }
        XCTAssertEqual(Double(counts[2]) / 20_000, 0.5, accuracy: 0.05, "\(counts)")
        XCTAssertEqual(Double(counts[0]) / 20_000, 0.25, accuracy: 0.05, "\(counts)")
    }

    func testConsistentHashRemapsAboutOneNthWhenATargetIsAdded() {
        let four = (1...4).map { "http://10.0.0.\($0):80" }
        let before = ConsistentHashRing(targets: four, weights: [1, 1, 1, 1])
        let after = ConsistentHashRing(targets: four + ["http://10.0.0.5:80"], weights: [1, 1, 1, 1, 1])
        let sample = keys(20_000)
        var moved = 0
        for k in sample {
            let a = before.lookup(k) { _ in true }!, b = after.lookup(k) { _ in true }!
            if a != b {
                moved += 1
                XCTAssertEqual(b, 4, "a key only ever moves to the new target")
            }
        }
        XCTAssertEqual(Double(moved) / Double(sample.count), 0.2, accuracy: 0.04, "≈ 1/5 of the keys move")
    }

    func testConsistentHashMovesOnlyTheKeysOfAnIneligibleTarget() {
        let ring = ConsistentHashRing(targets: (1...5).map { "http://10.0.0.\($0):80" }, weights: [1, 1, 1, 1, 1])
        var moved = 0
        let sample = keys(20_000)
        for k in sample {
            let a = ring.lookup(k) { _ in true }!, b = ring.lookup(k) { $0 != 2 }!
            if a != b {
                moved += 1
                XCTAssertEqual(a, 2)
            }
        }
        XCTAssertEqual(Double(moved) / Double(sample.count), 0.2, accuracy: 0.04)
        XCTAssertNil(ring.lookup(sample[0]) { _ in false })
    }
}
