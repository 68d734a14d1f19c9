/// Writes one flat JSON object straight into bytes: the access log's hot path, where building a
/// jansson tree per request would cost more than the line is worth. It writes into a
/// `ByteBuffer` (plain stores and copies: a byte array's checks on each of a line's thirty-odd
/// appends were a third of its cost).
public struct JSONLineWriter {
    public private(set) var bytes: ByteBuffer
    private var first = true
    /// The writer allocated `bytes` itself (`finish()` frees it).
    private let owned: Bool

    public init(capacity: Int = 512) {
        bytes = ByteBuffer(capacity: capacity)
        owned = true
        bytes.append(UInt8(ascii: "{"))
    }

    /// A writer that appends its line to `buffer`, which the caller owns: pass it in, then take
    /// `finishAppending()`'s result back (the buffer may have grown into new storage), so lines
    /// go straight into a log buffer.
    public init(appendingTo buffer: ByteBuffer) {
        bytes = buffer
        owned = false
        bytes.append(UInt8(ascii: "{"))
    }

    // Keys are literals (letters, digits, `_`): written as they are, never scanned for escapes.

    public mutating func field(_ key: StaticString, _ value: String?) {
        appendKey(key)
        if let value { appendString(value) } else { bytes.appendASCII("null") }
    }

    public mutating func field(_ key: StaticString, _ value: Int?) {
        appendKey(key)
        guard let value else { return bytes.appendASCII("null") }
        bytes.appendDecimal(value)
    }

    /// A number with at most three decimals (milliseconds with microsecond resolution).
    public mutating func field(_ key: StaticString, milliseconds value: Double?) {
        appendKey(key)
        guard let value, value.isFinite else { bytes.appendASCII("null"); return }
        let micros = Int((value * 1000).rounded())
        bytes.appendDecimal(micros / 1000)
        let frac = abs(micros % 1000)
        if frac != 0 {
            bytes.append(UInt8(ascii: "."))
            bytes.append(0x30 + UInt8(frac / 100))
            bytes.append(0x30 + UInt8(frac / 10 % 10))
            bytes.append(0x30 + UInt8(frac % 10))
        }
    }

    /// A value already serialised as JSON (an array or object), copied as it is.
    public mutating func field(_ key: StaticString, rawJSON: [UInt8]) {
        appendKey(key)
        rawJSON.withUnsafeBufferPointer { bytes.append(bytes: $0) }
    }

    /// A string whose bytes `write` appends, which need no escaping (hex digits, a timestamp):
    /// written between quotes without a `String` or a scan.
    public mutating func field(_ key: StaticString, unescaped write: (inout ByteBuffer) -> Void) {
        appendKey(key)
        bytes.append(UInt8(ascii: "\""))
        write(&bytes)
        bytes.append(UInt8(ascii: "\""))
    }

    /// The finished line, newline-terminated (a writer made with `init(capacity:)`; its
    /// buffer is freed).
    public mutating func finish() -> [UInt8] {
        precondition(owned, "finish() is for a writer that owns its buffer: use finishAppending()")
        end()
        defer { bytes.deallocate() }
        return bytes.array
    }

    /// Ends the line of a writer made with `init(appendingTo:)` and gives the caller's buffer
    /// back, the line appended.
    public mutating func finishAppending() -> ByteBuffer {
        precondition(!owned, "finishAppending() is for a writer appending to a caller's buffer: use finish()")
        end()
        return bytes
    }

    private mutating func end() {
        bytes.append(UInt8(ascii: "}"))
        bytes.append(UInt8(ascii: "\n"))
    }

    private mutating func appendKey(_ key: StaticString) {
        if !first { bytes.append(UInt8(ascii: ",")) }
        first = false
        bytes.append(UInt8(ascii: "\""))
        bytes.appendASCII(key)
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }

    private mutating func appendString(_ s: String) { Self.appendQuoted(s, to: &bytes) }

    /// RFC 8259 string escaping: quotes, backslash and control characters (and DEL).
    static func appendQuoted<Sink: ByteSink>(_ s: String, to bytes: inout Sink) {
        var s = s  // withUTF8 is free for native strings and gives the bytes without per-character iteration
        s.withUTF8 { appendQuoted($0, to: &bytes) }
    }

    /// Copies runs that need no escaping in one go: byte-at-a-time appends were most of the
    /// cost of serialising a transformed body.
    static func appendQuoted<Sink: ByteSink>(_ utf8: UnsafeBufferPointer<UInt8>, to bytes: inout Sink) {
        bytes.append(UInt8(ascii: "\""))
        var runStart = 0
        var i = 0
        while i < utf8.count {
            let remaining = utf8.count - i
            let word = remaining >= 8 ? JSONByteScan.load(utf8.baseAddress! + i) : JSONByteScan.loadTail(utf8.baseAddress! + i, count: remaining)
            let mask = JSONByteScan.escapes(word)
            if mask == 0 { i += min(8, remaining); continue }
            i += JSONByteScan.firstFlagged(mask)  // exact: this byte needs escaping
            let c = utf8[i]
            i += 1
            if runStart < i - 1 { bytes.append(bytes: UnsafeBufferPointer(rebasing: utf8[runStart..<(i - 1)])) }
            runStart = i
            switch c {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                bytes.append(0x5C)
                bytes.append(c)
            case 0x0A:
                bytes.append(0x5C)
                bytes.append(UInt8(ascii: "n"))
            case 0x0D:
                bytes.append(0x5C)
                bytes.append(UInt8(ascii: "r"))
            case 0x09:
                bytes.append(0x5C)
                bytes.append(UInt8(ascii: "t"))
            default:
                bytes.append(0x5C)
                bytes.append(UInt8(ascii: "u"))
                bytes.append(0x30)
                bytes.append(0x30)
                bytes.append(hexDigit(c >> 4))
                bytes.append(hexDigit(c & 15))
            }
        }
        if runStart < utf8.count { bytes.append(bytes: UnsafeBufferPointer(rebasing: utf8[runStart...])) }
        bytes.append(UInt8(ascii: "\""))
    }

    private static func hexDigit(_ n: UInt8) -> UInt8 { n < 10 ? 0x30 + n : 0x61 + n - 10 }
}
