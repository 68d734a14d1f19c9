/// A W3C Trace Context (`traceparent`, version 00): a 128-bit trace id, the 64-bit id of the
/// caller's span, and the flags (bit 0: sampled).
public struct TraceContext: Sendable, Equatable {
    public var traceHigh: UInt64
    public var traceLow: UInt64
    public var spanId: UInt64
    public var flags: UInt8

    public init(traceHigh: UInt64, traceLow: UInt64, spanId: UInt64, flags: UInt8) {
        self.traceHigh = traceHigh
        self.traceLow = traceLow
        self.spanId = spanId
        self.flags = flags
    }

    public var sampled: Bool { flags & 1 == 1 }

    /// Parses a `traceparent` value by the W3C rules: `version-traceid-parentid-flags` in
    /// lower-case hex; version `ff` is invalid; version 00 is exactly 55 characters; a later
    /// version may be longer if a `-` follows the flags (only the known fields are read);
    /// all-zero trace or parent ids are invalid.
    public static func parse(_ value: String) -> TraceContext? {
        var value = value
        return value.withUTF8 { b -> TraceContext? in
            guard b.count >= 55, b[2] == 0x2D, b[35] == 0x2D, b[52] == 0x2D,
                  let version = hex(b, 0, 2), version != 0xFF else { return nil }
            if version == 0 { guard b.count == 55 else { return nil } } else if b.count > 55, b[55] != 0x2D { return nil }
            guard let high = hex(b, 3, 16), let low = hex(b, 19, 16), let span = hex(b, 36, 16), let flags = hex(b, 53, 2),
                  high | low != 0, span != 0 else { return nil }
            return TraceContext(traceHigh: high, traceLow: low, spanId: span, flags: UInt8(flags))
        }
    }

    /// `count` lower-case hex digits at `offset` (nil if any is not one).
    private static func hex(_ b: UnsafeBufferPointer<UInt8>, _ offset: Int, _ count: Int) -> UInt64? {
        var v: UInt64 = 0
        for i in offset..<offset + count {
            let c = b[i]
            let d: UInt8
            switch c {
            case 0x30...0x39: d = c - 0x30
            case 0x61...0x66: d = c - 0x61 + 10
            default: return nil
            }
            v = v << 4 | UInt64(d)
        }
        return v
    }

    /// The trace id as 32 lower-case hex digits (one allocation, written in place).
    public var traceIdHex: String {
        String(unsafeUninitializedCapacity: 32) { out in
            writeTraceId(into: out)
            return 32
        }
    }

    private func writeTraceId(into out: UnsafeMutableBufferPointer<UInt8>) {
        Self.writeHex(traceHigh, digits: 16, into: out, at: 0)
        Self.writeHex(traceLow, digits: 16, into: out, at: 16)
    }

    /// Appends the trace id as 32 lower-case hex digits (no `String`: the access log).
    public func appendTraceIdHex<Sink: ByteSink>(to bytes: inout Sink) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { out in
            writeTraceId(into: out)
            bytes.append(bytes: UnsafeBufferPointer(out))
        }
    }

    /// The `traceparent` value (version 00), written in place.
    public var header: String {
        String(unsafeUninitializedCapacity: 55) { out in
            out[0] = 0x30; out[1] = 0x30; out[2] = 0x2D; out[35] = 0x2D; out[52] = 0x2D
            Self.writeHex(traceHigh, digits: 16, into: out, at: 3)
            Self.writeHex(traceLow, digits: 16, into: out, at: 19)
            Self.writeHex(spanId, digits: 16, into: out, at: 36)
            Self.writeHex(UInt64(flags), digits: 2, into: out, at: 53)
            return 55
        }
    }

    private static func writeHex(_ v: UInt64, digits: Int, into out: UnsafeMutableBufferPointer<UInt8>, at offset: Int) {
        if digits == 16 {
            // Eight digits per store (no loop per digit: two ids per request, in the upstream
            // head and the log line).
            UnsafeMutableRawPointer(out.baseAddress! + offset).storeBytes(of: hexDigits(UInt32(truncatingIfNeeded: v >> 32)), as: UInt64.self)
            UnsafeMutableRawPointer(out.baseAddress! + offset + 8).storeBytes(of: hexDigits(UInt32(truncatingIfNeeded: v)), as: UInt64.self)
            return
        }
        var v = v
        for i in stride(from: offset + digits - 1, through: offset, by: -1) {
            let d = UInt8(v & 0xF)
            out[i] = d < 10 ? 0x30 + d : 0x61 + d - 10
            v >>= 4
        }
    }

    /// `x` as eight lower-case hex digits, most significant first in memory order: each
    /// nibble spread into a byte, then '0' added, and 'a' - '0' - 10 more for nibbles above 9.
    static func hexDigits(_ x: UInt32) -> UInt64 {
        var v = UInt64(x)
        v = ((v & 0xFFFF_0000) << 16) | (v & 0xFFFF)
        v = ((v & 0x0000_FF00_0000_FF00) << 8) | (v & 0x0000_00FF_0000_00FF)
        v = ((v & 0x00F0_00F0_00F0_00F0) << 4) | (v & 0x000F_000F_000F_000F)
        let letters = ((v &+ 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101
        v = v &+ 0x3030_3030_3030_3030 &+ letters &* 0x27
        return v.bigEndian
    }
}

/// What the gateway does with the trace context of a request it forwards: a valid incoming
/// parent is kept (same trace id and flags, the caller's `tracestate`) with a new span id for
/// the gateway's hop; an absent or invalid one (several `traceparent` headers included) starts
/// a new trace, sampled, without `tracestate`.
public enum TracePropagation {
    public enum Origin: String, Sendable { case kept, started, replaced }

    /// `tracestate` values longer than this (W3C: at most 32 members of up to 256 chars; 512
    /// is what a vendor must propagate) are not passed on.
    public static let maxTraceStateBytes = 512

    public static func decide(traceparent: [String], tracestate: [String], random: inout TraceIdGenerator)
        -> (context: TraceContext, tracestate: String?, origin: Origin) {
        if traceparent.count == 1, var parent = TraceContext.parse(traceparent[0]) {
            parent.spanId = random.nextNonZero()
            let state = tracestate.joined(separator: ",")
            let keep = !state.isEmpty && state.utf8.count <= maxTraceStateBytes && HeaderHygiene.isSafeHeaderValue(state)
            return (parent, keep ? state : nil, .kept)
        }
        let started = TraceContext(traceHigh: random.next(), traceLow: random.nextNonZero(), spanId: random.nextNonZero(), flags: 1)
        return (started, nil, traceparent.isEmpty ? .started : .replaced)
    }
}

/// Random trace and span ids without a syscall per request: SplitMix64, one per loop, seeded
/// once from the system's generator. Ids need to be unique, not secret.
public struct TraceIdGenerator: Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public init() {
        var system = SystemRandomNumberGenerator()
        state = system.next()
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public mutating func nextNonZero() -> UInt64 {
        while true {
            let v = next()
            if v != 0 { return v }
        }
    }
}
