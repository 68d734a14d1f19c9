import XCTest
@testable import PortcullisCore

final class TraceContextTests: XCTestCase {
    let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    func testParsesAndRendersVersion00() throws {
        let t = try XCTUnwrap(TraceContext.parse(valid))
        XCTAssertEqual(t.traceIdHex, "4bf92f3577b34da6a3ce929d0e0e4736")
        XCTAssertEqual(t.spanId, 0x00f0_67aa_0ba9_02b7)
        XCTAssertTrue(t.sampled)
        XCTAssertEqual(t.header, valid)
    }

    /// The ids are written eight digits at a time: every nibble value in every position, and
    /// random ids, render as `String(radix: 16)` does.
    func testHexDigitsMatchStringRadix() {
        var values: [UInt64] = [0, .max, 0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210, 0x0a0a_0a0a_0a0a_0a0a, 0x9999_9999_9999_9999]
        var random = TraceIdGenerator(seed: 7)
        for _ in 0..<1000 { values.append(random.nextNonZero()) }
        for high in values.prefix(20) {
            for low in values {
                let t = TraceContext(traceHigh: high, traceLow: low, spanId: low ^ high, flags: 1)
                func hex(_ v: UInt64) -> String { String(repeating: "0", count: 16 - String(v, radix: 16).count) + String(v, radix: 16) }
                XCTAssertEqual(t.traceIdHex, hex(high) + hex(low))
                XCTAssertEqual(t.header, "00-\(hex(high))\(hex(low))-\(hex(low ^ high))-01")
                var bytes: [UInt8] = [0x78]
                t.appendTraceIdHex(to: &bytes)
                XCTAssertEqual(bytes, [0x78] + Array((hex(high) + hex(low)).utf8))
            }
        }
    }

    func testRejectsWhatTheRecommendationCallsInvalid() {
        for bad in [
            "", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",  // short
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  // version 00 with more
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  // version ff
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  // zero parent
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  // upper case
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            XCTAssertNil(TraceContext.parse(bad), bad)
        }
    }

    func testAcceptsALaterVersionWithMoreFields() {
        XCTAssertNotNil(TraceContext.parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future"))
        XCTAssertNil(TraceContext.parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00x"))
    }

    func testKeptParentGetsANewSpanAndKeepsFlagsAndState() {
        var random = TraceIdGenerator(seed: 42)
        let d = TracePropagation.decide(traceparent: [valid.replacingOccurrences(of: "-01", with: "-00")], tracestate: ["a=1", "b=2"], random: &random)
        XCTAssertEqual(d.origin, .kept)
        XCTAssertEqual(d.context.traceIdHex, "4bf92f3577b34da6a3ce929d0e0e4736")
        XCTAssertNotEqual(d.context.spanId, 0x00f0_67aa_0ba9_02b7)
        XCTAssertFalse(d.context.sampled, "the caller's not-sampled decision is respected")
        XCTAssertEqual(d.tracestate, "a=1,b=2")
    }

    func testAbsentStartsAndInvalidReplaces() {
        var random = TraceIdGenerator(seed: 7)
        let started = TracePropagation.decide(traceparent: [], tracestate: [], random: &random)
        XCTAssertEqual(started.origin, .started)
        XCTAssertTrue(started.context.sampled)
        XCTAssertNotNil(TraceContext.parse(started.context.header))
        let replaced = TracePropagation.decide(traceparent: ["garbage"], tracestate: ["a=1"], random: &random)
        XCTAssertEqual(replaced.origin, .replaced)
        XCTAssertNil(replaced.tracestate, "tracestate of an invalid parent is dropped")
        XCTAssertNotEqual(replaced.context.traceIdHex, started.context.traceIdHex)
        let twice = TracePropagation.decide(traceparent: [valid, valid], tracestate: [], random: &random)
        XCTAssertEqual(twice.origin, .replaced)
    }

    func testGeneratorIsDeterministicPerSeedAndNeverZero() {
        var a = TraceIdGenerator(seed: 1), b = TraceIdGenerator(seed: 1)
        let xs = (0..<1000).map { _ in a.nextNonZero() }
        XCTAssertEqual(xs, (0..<1000).map { _ in b.nextNonZero() })
        XCTAssertFalse(xs.contains(0))
        XCTAssertEqual(Set(xs).count, 1000)
    }
}
