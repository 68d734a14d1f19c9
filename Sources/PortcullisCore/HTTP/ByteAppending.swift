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
    public mutating func appendDecimal(_ value: Int) {
        DecimalText.forEachByte(of: value) { append($0) }
    }
}

/// Decimal numbers as ASCII bytes.
public enum DecimalText {
    /// Calls `body` with each byte of `value` in decimal, as `String(value)` writes it.
    @inline(__always)
    public static func forEachByte(of value: Int, _ body: (UInt8) -> Void) {
        if value < 0 { body(UInt8(ascii: "-")) }
        let magnitude = value.magnitude
        var divisor: UInt = 1
        while magnitude / divisor >= 10 { divisor *= 10 }
        while divisor > 0 {
            body(0x30 + UInt8(magnitude / divisor % 10))
            divisor /= 10
        }
    }
}
