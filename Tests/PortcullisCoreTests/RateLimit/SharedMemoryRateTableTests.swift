import Foundation
import XCTest
@testable import PortcullisCore
@testable import PortcullisRuntime

func temporaryPath(_ name: String) -> String {
    let dir = NSTemporaryDirectory() + "portcullis-rl-\(getpid())"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir + "/" + name
}

final class InMemoryRateLimitStoreContractTests: XCTestCase {
    let contract = RateLimitStoreContract(makeStore: { InMemoryRateLimitStore() })
    func testMatchesThePureAlgorithms() throws { try contract.matchesThePureAlgorithms() }
    func testAdmitsExactlyTheLimitPerWindow() throws { try contract.admitsExactlyTheLimitPerWindow() }
    func testRefundAndIndependentKeys() throws { try contract.refundGivesBackAndKeysAreIndependent() }
}

final class SharedMemoryRateTableTests: XCTestCase {
    let t0: Int64 = 1_700_000_000_000_000

    func makeContract(slots: Int = 4096) throws -> RateLimitStoreContract {
        let path = temporaryPath("contract-\(UUID().uuidString).table")
        let table = try SharedMemoryRateTable.create(path: path, slots: slots)
        // Every "store" is a separate mapping of the same file, as in separate workers.
        return RateLimitStoreContract(makeStore: { _ = table; return try SharedMemoryRateTable.open(path: path) })
    }

    func testMatchesThePureAlgorithms() throws { try makeContract().matchesThePureAlgorithms() }
    func testAdmitsExactlyTheLimitPerWindow() throws { try makeContract().admitsExactlyTheLimitPerWindow() }
    func testRefundAndIndependentKeys() throws { try makeContract().refundGivesBackAndKeysAreIndependent() }

    func testThreadsOnSeparateMappingsAdmitExactlyTheLimit() throws {
        let contract = try makeContract()
        try contract.concurrentRequestsAdmitExactlyTheLimit(.fixedWindow, threads: 8, perThread: 2_000, limit: 5_000)
        try contract.concurrentRequestsAdmitExactlyTheLimit(.tokenBucket, threads: 8, perThread: 2_000, limit: 5_000)
        try contract.concurrentRequestsAdmitExactlyTheLimit(.slidingWindow, threads: 8, perThread: 2_000, limit: 5_000)
    }

    func testCountersSurviveReopeningAndSizeIsFixed() throws {
        let path = temporaryPath("survive.table")
        let p = RateLimitParams(algorithm: .fixedWindow, limit: 3, windowMicros: 60_000_000)
        let key = RateLimitKey(text: "survive")
        do {
            let table = try SharedMemoryRateTable.create(path: path, slots: 128)
            XCTAssertEqual(try table.acquire(key, params: p, now: t0, cost: 1).remaining, 2)
        }
        // A restarted worker maps the same segment and sees the count.
        let reopened = try SharedMemoryRateTable.open(path: path)
        XCTAssertEqual(reopened.slots, 128)
        XCTAssertEqual(try reopened.acquire(key, params: p, now: t0, cost: 1).remaining, 1)
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int
        XCTAssertEqual(size, SharedMemoryRateTable.fileSize(slots: 128))
    }

    func testOpenRejectsWhatIsNotATable() throws {
        let path = temporaryPath("garbage.table")
        FileManager.default.createFile(atPath: path, contents: Data(repeating: 7, count: 4096))
        XCTAssertThrowsError(try SharedMemoryRateTable.open(path: path)) { error in
            XCTAssertTrue("\(error)".contains("is not a version 1 rate-limit table"), "\(error)")
        }
        XCTAssertThrowsError(try SharedMemoryRateTable.open(path: temporaryPath("missing.table")))
        XCTAssertThrowsError(try SharedMemoryRateTable.create(path: temporaryPath("tiny.table"), slots: 4))
    }

    func testExpiredSlotsAreReusedAndNewOwnersStartFresh() throws {
        let table = try SharedMemoryRateTable.create(path: temporaryPath("expiry.table"), slots: 64)
        let p = RateLimitParams(algorithm: .fixedWindow, limit: 1, windowMicros: 1_000_000)
        // 32 new keys per second for 200 s: each second's keys expire before the next second's
        // arrive, so their slots are reused; the few live evictions (a probe window full of this
        // second's keys) never hand a count to the new owner.
        var denied = 0
        for second in 0..<200 {
            for k in 0..<32 {
                let d = try table.acquire(RateLimitKey(hash: StableHash.mix(UInt64(second * 32 + k))), params: p,
                                          now: t0 + Int64(second) * 1_000_000, cost: 1)
                if !d.allowed { denied += 1 }
            }
        }
        XCTAssertEqual(denied, 0)
        XCTAssertEqual(table.stats.insertions, 200 * 32)
        XCTAssertLessThan(table.stats.evictions, 200 * 32 / 10, "mostly expired slots are reused, not live ones evicted")
    }

    /// 1 000 000 distinct keys through a 4096-slot table: the file never grows, live counters are
    /// evicted and counted, and a hot key (the one with the latest expiry) is still limited exactly.
    func testTablePressureKeepsMemoryBoundedAndHotKeyLimited() throws {
        let path = temporaryPath("pressure.table")
        let table = try SharedMemoryRateTable.create(path: path, slots: 4096)
        let cold = RateLimitParams(algorithm: .tokenBucket, limit: 10, windowMicros: 1_000_000)
        let hot = RateLimitParams(algorithm: .tokenBucket, limit: 50, windowMicros: 3_600_000_000)
        let hotKey = RateLimitKey(text: "hot")
        var hotAdmitted = 0
        var now = t0
        for i in 0..<1_000_000 {
            now += 1
            _ = try table.acquire(RateLimitKey(hash: StableHash.mix(UInt64(i) &+ 0x5151)), params: cold, now: now, cost: 1)
            if i % 1_000 == 0, try table.acquire(hotKey, params: hot, now: now, cost: 1).allowed { hotAdmitted += 1 }
        }
        XCTAssertEqual(hotAdmitted, 50, "the hot key is limited exactly despite the pressure")
        XCTAssertGreaterThan(table.stats.evictions, 0)
        XCTAssertGreaterThan(table.stats.insertions, 900_000)
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int
        XCTAssertEqual(size, SharedMemoryRateTable.fileSize(slots: 4096))
    }

    /// The fixed-window tie-break, under the churn of the integration test: 400 single-request
    /// keys through 64 slots within one window. A key that has used more than every neighbour
    /// (2 of 3) is never the one evicted, so it is admitted exactly once more, in every one of 300
    /// hash layouts. A key that has used only as much as its neighbours (1) ties with them and
    /// can go like any of them; when it does, it comes back fresh (the documented bound).
    func testFixedWindowKeyThatUsedMostOutlivesSingleRequestChurn() throws {
        let p = RateLimitParams(algorithm: .fixedWindow, limit: 3, windowMicros: 120_000_000)
        var tiedKeysEvicted = 0
        for layout in 0..<300 {
            let path = temporaryPath("churn-\(layout).table")
            defer { unlink(path) }
            let table = try SharedMemoryRateTable.create(path: path, slots: 64)
            var now = (t0 / p.windowMicros) * p.windowMicros + 1_000_000
            let hot = RateLimitKey(hash: StableHash.mix(UInt64(layout) &* 7_919 &+ 0xBEEF))
            let tied = RateLimitKey(hash: StableHash.mix(UInt64(layout) &* 7_919 &+ 0xF00D))
            XCTAssertTrue(try table.acquire(hot, params: p, now: now, cost: 1).allowed)
            XCTAssertTrue(try table.acquire(hot, params: p, now: now, cost: 1).allowed)
            XCTAssertTrue(try table.acquire(tied, params: p, now: now, cost: 1).allowed)
            var hotAdmitted = 0
            for i in 0..<400 {
                now += 1_000
                let cold = RateLimitKey(hash: StableHash.mix(UInt64(layout) << 20 | UInt64(i)))
                XCTAssertTrue(try table.acquire(cold, params: p, now: now, cost: 1).allowed)
                if i % 40 == 0, try table.acquire(hot, params: p, now: now, cost: 1).allowed { hotAdmitted += 1 }
            }
            XCTAssertEqual(hotAdmitted, 1, "layout \(layout): the key that used the most stays limited")
            // 2 more for a key still counted at 1; 3 if the churn evicted it.
            if try (0..<5).filter({ _ in try table.acquire(tied, params: p, now: now, cost: 1).allowed }).count == 3 { tiedKeysEvicted += 1 }
        }
        XCTAssertGreaterThan(tiedKeysEvicted, 0, "a key tied with the churn is evicted in some layouts (the rule has no favourite among equals)")
    }

    /// Issue 14.3, the documented rule and its bound: when all 8 probe slots are live, the slot
    /// expiring soonest is evicted, whatever its count. A key held at its limit on a 60 s window
    /// loses to single-request keys of 3600 s windows, and once evicted it admits at most its
    /// limit again (what it had used), never more.
    func testEvictionTakesTheSoonestExpiryAndForgetsAtMostTheVictimsCount() throws {
        let table = try SharedMemoryRateTable.create(path: temporaryPath("evict-rule.table"), slots: 8)
        let minute = RateLimitParams(algorithm: .fixedWindow, limit: 3, windowMicros: 60_000_000)
        let hour = RateLimitParams(algorithm: .fixedWindow, limit: 100, windowMicros: 3_600_000_000)
        let now = (t0 / 3_600_000_000) * 3_600_000_000 + 10_000_000  // 10 s into an hour (and a minute)
        let hot = RateLimitKey(text: "hot")
        XCTAssertEqual(try (0..<5).filter { _ in try table.acquire(hot, params: minute, now: now, cost: 1).allowed }.count, 3)
        for i in 0..<7 {
            for _ in 0..<(i + 2) { XCTAssertTrue(try table.acquire(RateLimitKey(text: "cold-\(i)"), params: hour, now: now, cost: 1).allowed) }
        }
        XCTAssertEqual(table.stats.evictions, 0)
        // The table is full: the next key evicts the slot that expires soonest, the hot key's.
        XCTAssertTrue(try table.acquire(RateLimitKey(text: "newcomer"), params: hour, now: now, cost: 1).allowed)
        XCTAssertEqual(table.stats.evictions, 1)
        // The hot key returns fresh, evicting in turn the hour key that used the least (equal
        // expiries: the smallest state goes, the newcomer's single request): it admits its whole
        // limit again, the bound on what one eviction can add, and then it is limited again.
        let again = try (0..<5).filter { _ in try table.acquire(hot, params: minute, now: now, cost: 1).allowed }.count
        XCTAssertEqual(again, 3)
        XCTAssertEqual(table.stats.evictions, 2)
        // The keys that were not evicted kept their counts: cold-6 had used 8.
        XCTAssertEqual(try table.acquire(RateLimitKey(text: "cold-6"), params: hour, now: now, cost: 1).remaining, 91)
    }

    func testObserverCountsInTheSegment() throws {
        let table = try SharedMemoryRateTable.create(path: temporaryPath("observer.table"), slots: 64)
        let observer = table.observer(log: { _ in })
        observer.storeFailure()
        observer.degradedDecision()
        observer.degradedDecision()
        let other = try SharedMemoryRateTable.open(path: table.path)
        XCTAssertEqual(other.stats.storeFailures, 1)
        XCTAssertEqual(other.stats.degradedDecisions, 2)
    }
}

/// Several processes on one table: the test binary re-runs itself as "workers" that map the
/// segment with `open(path:)`, as the gateway's workers do.
final class SharedMemoryRateTableProcessTests: XCTestCase {
    static let tableEnv = "PORTCULLIS_RL_CHILD_TABLE"
    let t0: Int64 = 1_700_000_000_000_000

    /// The child's body: hammer one key from 2 threads, write the admitted count to a file.
    /// Run directly (without the parent's environment) it has nothing to do.
    func testChildWorker() throws {
        guard let path = ProcessInfo.processInfo.environment[Self.tableEnv],
              let out = ProcessInfo.processInfo.environment["PORTCULLIS_RL_CHILD_OUT"],
              let attempts = Int(ProcessInfo.processInfo.environment["PORTCULLIS_RL_CHILD_ATTEMPTS"] ?? "") else {
            throw XCTSkip("runs only as a child of testWorkerProcessesAdmitExactlyTheLimit")
        }
        let table = try SharedMemoryRateTable.open(path: path)
        let victim = ProcessInfo.processInfo.environment["PORTCULLIS_RL_CHILD_MODE"] == "victim"
        // The victim writes on every call (a bucket that never empties) until it is killed.
        let p = victim ? RateLimitParams(algorithm: .tokenBucket, limit: 1_000_000_000, windowMicros: 1_000_000)
            : RateLimitParams(algorithm: .fixedWindow, limit: 3_000, windowMicros: 3_600_000_000)
        let key = RateLimitKey(text: victim ? "victim" : "multi-process")
        let now = t0
        let counts = UnsafeMutableBufferPointer<Int>.allocate(capacity: 2)
        counts.initialize(repeating: 0)
        nonisolated(unsafe) let c = counts
        DispatchQueue.concurrentPerform(iterations: 2) { t in
            for _ in 0..<attempts where (try? table.acquire(key, params: p, now: now, cost: 1))?.allowed == true { c[t] += 1 }
        }
        try String(counts.reduce(0, +)).write(toFile: out, atomically: true, encoding: .utf8)
    }

    private func spawnChild(table: String, out: String, attempts: Int, victim: Bool = false) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
        p.arguments = ["PortcullisCoreTests.SharedMemoryRateTableProcessTests/testChildWorker"]
        var env = ProcessInfo.processInfo.environment
        env[Self.tableEnv] = table
        env["PORTCULLIS_RL_CHILD_OUT"] = out
        env["PORTCULLIS_RL_CHILD_ATTEMPTS"] = String(attempts)
        env["PORTCULLIS_RL_CHILD_MODE"] = victim ? "victim" : "worker"
        p.environment = env
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    func testWorkerProcessesAdmitExactlyTheLimitEvenWhenOneIsKilled() throws {
        let path = temporaryPath("processes-\(UUID().uuidString).table")
        let table = try SharedMemoryRateTable.create(path: path, slots: 1024)
        // A worker SIGKILLed in the middle of its updates leaves nothing locked.
        let victim = try spawnChild(table: path, out: path + ".victim", attempts: 500_000_000, victim: true)
        for _ in 0..<400 where table.stats.insertions == 0 { usleep(25_000) }
        XCTAssertEqual(table.stats.insertions, 1, "the victim is writing")
        usleep(100_000)
        kill(victim.processIdentifier, SIGKILL)
        victim.waitUntilExit()
        XCTAssertEqual(victim.terminationReason, .uncaughtSignal)
        let bucket = RateLimitParams(algorithm: .tokenBucket, limit: 1_000_000_000, windowMicros: 1_000_000)
        XCTAssertTrue(try table.acquire(RateLimitKey(text: "victim"), params: bucket, now: t0, cost: 1).allowed)
        // Four new workers share one limit exactly.
        let p = RateLimitParams(algorithm: .fixedWindow, limit: 3_000, windowMicros: 3_600_000_000)
        let key = RateLimitKey(text: "multi-process")
        let left = 3_000
        let children = try (0..<4).map { try spawnChild(table: path, out: path + ".out\($0)", attempts: 2_000) }
        for c in children { c.waitUntilExit() }
        let admitted = try (0..<4).map { i -> Int in
            XCTAssertEqual(children[i].terminationStatus, 0)
            return Int(try String(contentsOfFile: path + ".out\(i)", encoding: .utf8)) ?? -1
        }
        XCTAssertEqual(admitted.reduce(0, +), left, "\(admitted)")
        XCTAssertFalse(try table.acquire(key, params: p, now: t0, cost: 1).allowed)
    }
}
