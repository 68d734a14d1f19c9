import Foundation
import XCTest
@testable import PortcullisCore

/// The behaviour every `RateLimitStore` must have (like swift-log's backend contract). Each
/// store's test class calls every case with its own factory; `makeStore` is called once per
/// thread, since a store object may be used by one thread at a time.
struct RateLimitStoreContract {
    let makeStore: () throws -> RateLimitStore
    /// Keeps keys of different runs apart in a store that outlives the test (Redis).
    let run = String(UInt64.random(in: 0...UInt64.max), radix: 36)
    let t0: Int64 = 1_700_000_000_000_000

    func key(_ name: String) -> RateLimitKey { RateLimitKey(text: "contract|\(run)|\(name)") }

    /// A scripted mix of the three algorithms, several keys, refunds and clock jumps, compared
    /// decision by decision with the pure algorithms.
    func matchesThePureAlgorithms(file: StaticString = #filePath, line: UInt = #line) throws {
        let store = try makeStore()
        let params = [
            RateLimitParams(algorithm: .tokenBucket, limit: 10, windowMicros: 1_000_000, burst: 4),
            RateLimitParams(algorithm: .tokenBucket, limit: 3, windowMicros: 10_000_000),
            RateLimitParams(algorithm: .fixedWindow, limit: 5, windowMicros: 2_000_000),
            RateLimitParams(algorithm: .slidingWindow, limit: 6, windowMicros: 3_000_000),
            RateLimitParams(algorithm: .slidingWindow, limit: 1, windowMicros: 1_000_000),
        ]
        var reference: [Int: UInt64] = [:]
        var rng = SplitMix(seed: 42)
        var now = t0 + 123_457
        for step in 0..<600 {
            now += Int64(rng.next() % 400_000)
            let i = Int(rng.next() % UInt64(params.count * 2))
            let p = params[i % params.count]
            let k = key("ref-\(i)")
            let cost: Int64 = rng.next() % 10 == 0 ? 2 : 1
            if rng.next() % 8 == 0 {
                try store.refund(k, params: p, now: now, cost: cost)
                reference[i] = RateLimitAlgorithms.refund(p, state: reference[i] ?? 0, now: now, cost: cost)
                continue
            }
            let got = try store.acquire(k, params: p, now: now, cost: cost)
            let (want, state) = RateLimitAlgorithms.decide(p, state: reference[i] ?? 0, now: now, cost: cost)
            reference[i] = state
            XCTAssertEqual(got, want, "step \(step), \(p), cost \(cost)", file: file, line: line)
        }
    }

    func admitsExactlyTheLimitPerWindow(file: StaticString = #filePath, line: UInt = #line) throws {
        let store = try makeStore()
        let p = RateLimitParams(algorithm: .fixedWindow, limit: 7, windowMicros: 10_000_000)
        let k = key("exact")
        let admitted = try (0..<20).filter { _ in try store.acquire(k, params: p, now: t0 + 1, cost: 1).allowed }.count
        XCTAssertEqual(admitted, 7, file: file, line: line)
        let next = try store.acquire(k, params: p, now: t0 + 10_000_000, cost: 1)
        XCTAssertEqual(next.remaining, 6, "a new window starts fresh", file: file, line: line)
    }

    func refundGivesBackAndKeysAreIndependent(file: StaticString = #filePath, line: UInt = #line) throws {
        let store = try makeStore()
        let p = RateLimitParams(algorithm: .tokenBucket, limit: 2, windowMicros: 60_000_000)
        let a = key("a"), b = key("b")
        XCTAssertTrue(try store.acquire(a, params: p, now: t0, cost: 1).allowed)
        XCTAssertTrue(try store.acquire(a, params: p, now: t0, cost: 1).allowed)
        XCTAssertFalse(try store.acquire(a, params: p, now: t0, cost: 1).allowed)
        XCTAssertEqual(try store.acquire(b, params: p, now: t0, cost: 1).remaining, 1, file: file, line: line)
        try store.refund(a, params: p, now: t0, cost: 1)
        XCTAssertTrue(try store.acquire(a, params: p, now: t0, cost: 1).allowed, file: file, line: line)
        // Refunding a key that was never used is harmless.
        try store.refund(key("never"), params: p, now: t0, cost: 1)
    }

    /// Threads hammering one key with a frozen clock: exactly `limit` admitted, never more.
    func concurrentRequestsAdmitExactlyTheLimit(_ algorithm: RateLimitAlgorithm, threads: Int, perThread: Int, limit: Int64,
                                                file: StaticString = #filePath, line: UInt = #line) throws {
        let p = RateLimitParams(algorithm: algorithm, limit: limit, windowMicros: 3_600_000_000)
        let k = key("hammer-\(algorithm.rawValue)")
        let stores = try (0..<threads).map { _ in try makeStore() }
        let counts = UnsafeMutableBufferPointer<Int>.allocate(capacity: threads)
        counts.initialize(repeating: 0)
        defer { counts.deallocate() }
        let errors = UnsafeMutableBufferPointer<Int>.allocate(capacity: threads)
        errors.initialize(repeating: 0)
        defer { errors.deallocate() }
        nonisolated(unsafe) let unsafeStores = stores
        nonisolated(unsafe) let c = counts, e = errors
        let now = t0
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            for _ in 0..<perThread {
                do {
                    if try unsafeStores[t].acquire(k, params: p, now: now, cost: 1).allowed { c[t] += 1 }
                } catch {
                    e[t] += 1
                }
            }
        }
        XCTAssertEqual(errors.reduce(0, +), 0, file: file, line: line)
        XCTAssertEqual(Int64(counts.reduce(0, +)), limit, "\(algorithm)", file: file, line: line)
    }
}
