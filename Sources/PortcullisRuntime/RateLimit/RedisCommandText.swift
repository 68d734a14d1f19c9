import PortcullisCore

/// Redis commands as RESP, the text Redis reads: `*<count>\r\n`, then `$<length>\r\n<bytes>\r\n`
/// per argument — byte for byte what hiredis's `redisFormatCommandArgv` makes of the same
/// arguments. The store writes each command into one reused buffer and hands hiredis the bytes
/// (`redisAsyncFormattedCommand`), so a rate-limit call makes no `String` per argument and no
/// argument arrays.
enum RedisCommandText {
    /// Appends the command `args`.
    static func append(_ args: [String], to out: inout [UInt8]) {
        appendCount(args.count, to: &out)
        for a in args {
            var a = a  // withUTF8 is free for a native string
            a.withUTF8 { appendBulk($0, to: &out) }
        }
    }

    /// `*<count>\r\n`: the number of arguments that follow.
    static func appendCount(_ count: Int, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "*"))
        out.appendDecimal(count)
        out.appendASCII("\r\n")
    }

    /// One argument.
    static func appendBulk(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        appendLength(bytes.count, to: &out)
        out.append(contentsOf: bytes)
        out.appendASCII("\r\n")
    }

    /// One ASCII literal argument.
    static func appendBulk(_ literal: StaticString, to out: inout [UInt8]) {
        appendBulk(UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount), to: &out)
    }

    /// One argument: `value` in decimal, as `String(value)` writes it.
    static func appendBulk(decimal value: Int64, to out: inout [UInt8]) {
        DecimalText.withDigits(of: Int(value)) { appendBulk($0, to: &out) }
    }

    /// One argument: `prefix` and `value` in 16 lower-case hex digits (a counter's key).
    static func appendBulk(prefix: [UInt8], hex value: UInt64, to out: inout [UInt8]) {
        appendLength(prefix.count + 16, to: &out)
        out.append(contentsOf: prefix)
        appendHex(value, to: &out)
        out.appendASCII("\r\n")
    }

    /// `value` in 16 lower-case hex digits, leading zeros included.
    static func appendHex(_ value: UInt64, to out: inout [UInt8]) {
        for i in 0..<16 {
            let nibble = UInt8(truncatingIfNeeded: value >> UInt64(60 - 4 * i)) & 0xF
            out.append(nibble < 10 ? 0x30 + nibble : 0x61 + nibble - 10)
        }
    }

    private static func appendLength(_ length: Int, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "$"))
        out.appendDecimal(length)
        out.appendASCII("\r\n")
    }
}
