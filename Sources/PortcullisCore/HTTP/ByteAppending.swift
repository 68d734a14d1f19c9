extension Array where Element == UInt8 {
    /// Appends the UTF-8 of `text` in one copy. `append(contentsOf: text.utf8)` goes through
    /// the view's generic copy, several times the cost for the short fields of a head or a
    /// log line.
    @inlinable
    public mutating func appendUTF8(_ text: String) {
        var text = text  // withUTF8 is free for a native string
        text.withUTF8 { append(contentsOf: $0) }
    }

    @inlinable
    public mutating func appendUTF8(_ text: Substring) {
        var text = text
        text.withUTF8 { append(contentsOf: $0) }
    }

    /// Appends an ASCII literal with one copy (a literal's `.utf8` view goes through the
    /// generic path too).
    @inlinable
    public mutating func appendASCII(_ literal: StaticString) {
        append(contentsOf: UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    /// Appends `value` in decimal, as `String(value)` writes it, without making the `String`.
    /// Byte by byte: for a handful of digits that is cheaper than the generic
    /// `append(contentsOf:)` of a buffer.
    public mutating func appendDecimal(_ value: Int) {
        DecimalText.forEachByte(of: value) { append($0) }
    }
}

/// Decimal numbers as ASCII bytes.
public enum DecimalText {
    /// Calls `body` with the bytes of `value` in decimal, as `String(value)` writes it. The
    /// digits are made from the last by division by the constant 10 (a multiplication) into
    /// a buffer on the stack: the `div` instructions of a divisor that changes per digit cost
    /// tens of cycles each, which instruction counts do not show.
    @inline(__always)
    public static func withDigits<R>(of value: Int, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        // 20 digits and a sign at most (Int.min).
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { buffer in
            let end = buffer.count
            var i = end
            var m = value.magnitude
            repeat {
                i -= 1
                buffer[i] = 0x30 &+ UInt8(truncatingIfNeeded: m % 10)
                m /= 10
            } while m > 0
            if value < 0 {
                i -= 1
                buffer[i] = UInt8(ascii: "-")
            }
            return body(UnsafeBufferPointer(rebasing: buffer[i..<end]))
        }
    }

    /// Calls `body` with each byte of `value` in decimal, as `String(value)` writes it.
    @inline(__always)
    public static func forEachByte(of value: Int, _ body: (UInt8) -> Void) {
        withDigits(of: value) { for b in $0 { body(b) } }
    }
}
