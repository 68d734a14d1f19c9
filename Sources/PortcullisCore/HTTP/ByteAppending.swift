// The appending helpers of heads and log lines (`appendASCII`, `appendUTF8`, `appendDecimal`)
// are `ByteSink`'s, for byte arrays and `ByteBuffer` alike.

/// Decimal numbers as ASCII bytes.
public enum DecimalText {
    /// Calls `body` with the bytes of `value` in decimal, as `String(value)` writes it. The
    /// digits are made from the last by division by the constant 10 (a multiplication) into
    /// a buffer on the stack: the `div` instructions of a divisor that changes per digit cost
    /// tens of cycles each, which instruction counts do not show.
    @inlinable @inline(__always)
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
    @inlinable @inline(__always)
    public static func forEachByte(of value: Int, _ body: (UInt8) -> Void) {
        withDigits(of: value) { for b in $0 { body(b) } }
    }
}
