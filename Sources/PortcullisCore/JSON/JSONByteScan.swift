/// Word-at-a-time tests for the bytes JSON strings treat specially, so readers and writers
/// skip plain text eight bytes per step instead of one (a 2 KB body is mostly plain text).
///
/// Each test returns a mask with the high bit of every flagged byte set, words loaded in
/// little-endian order. The lowest flagged byte is always exact (a borrow only runs towards
/// higher bytes), so `firstFlagged` is the offset of the first special byte of the word.
enum JSONByteScan {
    private static let ones: UInt64 = 0x0101_0101_0101_0101
    private static let highBits: UInt64 = 0x8080_8080_8080_8080

    /// Non-zero when some byte of `word` is zero. Exact as an "any" test: a borrow only reaches
    /// bytes above a zero byte.
    @inline(__always) private static func anyZero(_ word: UInt64) -> UInt64 {
        (word &- ones) & ~word & highBits
    }

    /// Non-zero when some byte equals `byte`.
    @inline(__always) private static func anyEqual(_ word: UInt64, _ byte: UInt8) -> UInt64 {
        anyZero(word ^ (ones &* UInt64(byte)))
    }

    /// Non-zero when some byte is a control character (below 0x20).
    @inline(__always) private static func anyControl(_ word: UInt64) -> UInt64 {
        (word &- ones &* 0x20) & ~word & highBits
    }

    /// Eight bytes at `pointer`, whatever the alignment, the first one in the lowest bits.
    @inline(__always) static func load(_ pointer: UnsafePointer<UInt8>) -> UInt64 {
        UInt64(littleEndian: UnsafeRawPointer(pointer).loadUnaligned(as: UInt64.self))
    }

    /// The last `count` (< 8) bytes at `pointer` as a word padded with a byte that is never
    /// special, so short strings are checked in one step too.
    @inline(__always) static func loadTail(_ pointer: UnsafePointer<UInt8>, count: Int) -> UInt64 {
        var word: UInt64 = 0x6161_6161_6161_6161  // "aaaaaaaa"
        withUnsafeMutableBytes(of: &word) { $0.baseAddress!.copyMemory(from: pointer, byteCount: count) }
        return UInt64(littleEndian: word)
    }

    /// The offset (0–7) of the first flagged byte of a non-zero mask.
    @inline(__always) static func firstFlagged(_ mask: UInt64) -> Int { mask.trailingZeroBitCount >> 3 }

    /// Bytes a reader must look at one by one: a quote, a backslash, a control character or a
    /// non-ASCII byte.
    @inline(__always) static func readerAttention(_ word: UInt64) -> UInt64 {
        anyEqual(word, UInt8(ascii: "\"")) | anyEqual(word, UInt8(ascii: "\\")) | anyControl(word) | (word & highBits)
    }

    /// Bytes a writer must escape: a quote, a backslash, a control character or DEL.
    @inline(__always) static func escapes(_ word: UInt64) -> UInt64 {
        anyEqual(word, UInt8(ascii: "\"")) | anyEqual(word, UInt8(ascii: "\\")) | anyControl(word) | anyEqual(word, 0x7F)
    }
}
