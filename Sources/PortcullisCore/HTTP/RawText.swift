/// Request bytes that are not UTF-8, carried losslessly in a `String`.
///
/// nginx hands over paths, queries and header values as bytes, and a client may send any byte
/// (`/caf%E9`, a header value with 0xE9). Decoding them as UTF-8 with replacement would turn
/// distinct requests into one (`%E9` and `%FF` both become U+FFFD), so they are decoded
/// losslessly instead: well-formed UTF-8 stays as it is, and every other byte `b` becomes the
/// private-use scalar U+10FF00 + `b` (the escape block). A well-formed sequence that itself
/// encodes a scalar of the escape block is escaped byte by byte too, so the mapping is
/// injective: two different byte strings never give the same text, and `bytes(of:)` returns
/// exactly the bytes that came in. Everything that leaves the gateway (upstream headers,
/// percent-encoded paths and queries) goes through `bytes(of:)` / `PercentEncoding.encode`.
public enum RawText {
    /// The first scalar of the escape block: byte `b` is U+10FF00 + `b`.
    static let escapeBase: UInt32 = 0x10_FF00

    /// The text of `bytes`. ASCII and well-formed UTF-8 outside the escape block are returned
    /// as they are (the common case costs one validation pass).
    public static func decode(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
        guard !isPlain(bytes) else { return String(decoding: bytes, as: UTF8.self) }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 8)
        var i = 0
        while i < bytes.count {
            let n = wellFormedLength(bytes, at: i)
            if n > 0 {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[i..<(i + n)]))
                i += n
            } else {
                appendEscape(bytes[i], to: &out)
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode(_ bytes: [UInt8]) -> String {
        bytes.withUnsafeBufferPointer { decode($0) }
    }

    /// True when `text` holds an escaped byte (or may: it holds an escape-block scalar).
    @inlinable
    public static func hasEscapes(_ text: String) -> Bool {
        text.utf8.withContiguousStorageIfAvailable { bytes in
            bytes[asciiPrefixLength(bytes)...].contains(0xF4)
        } ?? text.utf8.contains(0xF4)
    }

    /// How many bytes at the start of `bytes` are ASCII, looked at eight at a time (a byte-wise
    /// loop was most of the cost of checking the short, ASCII values of a request); may stop
    /// up to seven bytes short of the first non-ASCII byte.
    @inlinable
    static func asciiPrefixLength(_ bytes: UnsafeBufferPointer<UInt8>) -> Int {
        guard let base = bytes.baseAddress else { return 0 }
        var i = 0
        while i + 8 <= bytes.count {
            if UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self) & 0x8080_8080_8080_8080 != 0 { break }
            i += 8
        }
        return i
    }

    /// The bytes `text` stands for: escape scalars back to their byte, the rest as UTF-8.
    public static func bytes(of text: String) -> [UInt8] {
        var out: [UInt8] = []
        append(text, to: &out)
        return out
    }

    /// Appends the bytes `text` stands for to `out`. Inlinable: heads written in other
    /// modules take the plain path (one copy) without a generic call.
    @inlinable
    public static func append<Sink: ByteSink>(_ text: String, to out: inout Sink) {
        guard hasEscapes(text) else { return out.appendUTF8(text) }
        appendUnescaping(text, to: &out)
    }

    @usableFromInline
    static func appendUnescaping<Sink: ByteSink>(_ text: String, to out: inout Sink) {
        let u = Array(text.utf8)
        var i = 0
        while i < u.count {
            if let b = escapedByte(u, at: i) {
                out.append(b)
                i += 4
            } else {
                out.append(u[i])
                i += 1
            }
        }
    }

    /// The byte an escape scalar starting at `i` stands for, or nil when none starts there.
    @inline(__always)
    public static func escapedByte(_ u: [UInt8], at i: Int) -> UInt8? {
        guard u[i] == 0xF4, i + 3 < u.count, u[i + 1] == 0x8F, u[i + 2] >= 0xBC, u[i + 2] <= 0xBF else { return nil }
        return (u[i + 2] & 0x03) << 6 | (u[i + 3] & 0x3F)
    }

    // MARK: - Decoding

    /// ASCII, or well-formed UTF-8 without a 0xF4 lead byte (which the escape block needs).
    private static func isPlain(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var i = asciiPrefixLength(bytes)
        while i < bytes.count {
            if bytes[i] < 0x80 { i += 1; continue }
            if bytes[i] == 0xF4 { return false }
            let n = wellFormedLength(bytes, at: i)
            if n == 0 { return false }
            i += n
        }
        return true
    }

    /// Length of the well-formed UTF-8 sequence at `i` (RFC 3629 table), 0 when there is none
    /// or when it encodes a scalar of the escape block.
    private static func wellFormedLength(_ b: UnsafeBufferPointer<UInt8>, at i: Int) -> Int {
        let c = b[i]
        func cont(_ k: Int, _ lo: UInt8 = 0x80, _ hi: UInt8 = 0xBF) -> Bool { i + k < b.count && b[i + k] >= lo && b[i + k] <= hi }
        switch c {
        case 0x00...0x7F: return 1
        case 0xC2...0xDF: return cont(1) ? 2 : 0
        case 0xE0: return cont(1, 0xA0) && cont(2) ? 3 : 0
        case 0xE1...0xEC, 0xEE...0xEF: return cont(1) && cont(2) ? 3 : 0
        case 0xED: return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0
        case 0xF0: return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0
        case 0xF1...0xF3: return cont(1) && cont(2) && cont(3) ? 4 : 0
        case 0xF4:
            guard cont(1, 0x80, 0x8F) && cont(2) && cont(3) else { return 0 }
            return b[i + 1] == 0x8F && b[i + 2] >= 0xBC ? 0 : 4
        default: return 0
        }
    }

    private static func appendEscape(_ byte: UInt8, to out: inout [UInt8]) {
        // U+10FF00 + b in UTF-8: F4 8F (BC + b >> 6) (80 + b & 0x3F).
        out.append(0xF4)
        out.append(0x8F)
        out.append(0xBC | byte >> 6)
        out.append(0x80 | byte & 0x3F)
    }
}
