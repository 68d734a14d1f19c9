// The appending helpers of heads and log lines (`appendASCII`, `appendUTF8`, `appendDecimal`)
// are `ByteSink`'s, for byte arrays and `ByteBuffer` alike.

/// Decimal numbers as ASCII bytes.
public enum DecimalText {
    /// Calls `body` with each byte of `value` in decimal, as `String(value)` writes it.
    @inlinable @inline(__always)
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
