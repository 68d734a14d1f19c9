import Foundation

/// Reads JSON bytes straight into `JSONValue`: the hot path of body transforms and token claims.
///
/// It accepts a subset of what jansson accepts with the flags `JSONCodec.parse` uses
/// (`JSON_DECODE_ANY | JSON_ALLOW_NUL`, optionally `JSON_REJECT_DUPLICATES`) and builds the
/// value jansson's tree would convert to: integers as `Int64` (`-0` is `0`), other numbers as
/// the double `strtod` gives, duplicate keys at the first one's position with the last one's value, at
/// most 2048 nested values. On anything else (a syntax error, an integer or real out of range,
/// a NUL in a key, a locale that `strtod` disagrees with) it gives up, and `JSONCodec` asks
/// jansson, whose verdict and error position stay the reference. A case this reader does not
/// handle therefore costs time, never a different answer.
///
/// Why not jansson alone: its lexer copies every byte through a stream and a string buffer,
/// every object is a hash table, and the tree is then converted once more into Swift values;
/// for a 2 KB body that was most of a transform's cost.
struct JSONFastParser {
    /// jansson's `JSON_PARSER_MAX_DEPTH`; like jansson, every value counts (scalars too).
    static let maxDepth = 2048
    /// Objects up to this size look for duplicate keys linearly; bigger ones build an index,
    /// so a body with many keys cannot make parsing quadratic.
    private static let linearKeyScanLimit = 16

    /// The reader gave up; jansson decides.
    struct GiveUp: Error {}

    private let bytes: UnsafeBufferPointer<UInt8>
    private let rejectDuplicateKeys: Bool
    /// Out-of-range numbers become `.number(text)` instead of jansson's error.
    private let keepLargeNumbers: Bool
    private var index = 0
    private var depth = 0
    /// Members and elements of the containers being read, so each container is allocated once
    /// at its final size and its values are moved, not copied, into it.
    private let members = MoveStack<(key: String, value: JSONValue)>()
    private let elements = MoveStack<JSONValue>()
    /// Unescaped bytes of a string with escapes.
    private var scratch: [UInt8] = []

    private init(bytes: UnsafeBufferPointer<UInt8>, rejectDuplicateKeys: Bool, keepLargeNumbers: Bool) {
        self.bytes = bytes
        self.rejectDuplicateKeys = rejectDuplicateKeys
        self.keepLargeNumbers = keepLargeNumbers
    }

    /// The document in `bytes`, or nil when this reader leaves the decision to jansson.
    static func parse(_ bytes: UnsafeBufferPointer<UInt8>, rejectDuplicateKeys: Bool, keepLargeNumbers: Bool = false) -> JSONValue? {
        var parser = JSONFastParser(bytes: bytes, rejectDuplicateKeys: rejectDuplicateKeys, keepLargeNumbers: keepLargeNumbers)
        do {
            let value = try parser.parseValue()
            parser.skipWhitespace()
            // (Not a `?:` with nil: JSONValue is ExpressibleByNilLiteral, so that nil would be .null.)
            guard parser.index == bytes.count else { return nil }
            return value
        } catch {
            return nil
        }
    }

    // MARK: Values

    private mutating func parseValue() throws(GiveUp) -> JSONValue {
        depth += 1
        guard depth <= Self.maxDepth else { throw GiveUp() }
        defer { depth -= 1 }
        skipWhitespace()
        guard index < bytes.count else { throw GiveUp() }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString(isKey: false))
        case UInt8(ascii: "t"): try expectWord("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectWord("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectWord("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw GiveUp()
        }
    }

    private mutating func parseObject() throws(GiveUp) -> JSONValue {
        index += 1
        let base = members.count
        var keyIndex: [String: Int]?
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return .object(JSONObject())
        }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw GiveUp() }
            let key = try parseString(isKey: true)
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw GiveUp() }
            index += 1
            let value = try parseValue()
            let count = members.count - base
            var existing: Int?
            if count <= Self.linearKeyScanLimit {
                existing = members.firstIndex(from: base) { $0.key == key }
            } else {
                if keyIndex == nil {
                    var built: [String: Int] = [:]
                    built.reserveCapacity(count * 2)
                    for i in base..<members.count { built[members[i].key] = i }
                    keyIndex = built
                }
                existing = keyIndex![key]
                if existing == nil { keyIndex![key] = members.count }
            }
            if let existing {
                // jansson keeps the first occurrence's position and the last one's value.
                if rejectDuplicateKeys { throw GiveUp() }
                members[existing].value = value
            } else {
                members.push((key, value))
            }
            skipWhitespace()
            guard index < bytes.count else { throw GiveUp() }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            guard bytes[index] == UInt8(ascii: "}") else { throw GiveUp() }
            index += 1
            return .object(JSONObject(uncheckedPairs: members.pop(from: base)))
        }
    }

    private mutating func parseArray() throws(GiveUp) -> JSONValue {
        index += 1
        let base = elements.count
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            return .array([])
        }
        while true {
            elements.push(try parseValue())
            skipWhitespace()
            guard index < bytes.count else { throw GiveUp() }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            guard bytes[index] == UInt8(ascii: "]") else { throw GiveUp() }
            index += 1
            return .array(elements.pop(from: base))
        }
    }

    /// `true`, `false` or `null`; what follows is checked by the caller (jansson reads a word
    /// such as `truex` as one invalid token, and so does this reader, by giving up on the `x`).
    private mutating func expectWord(_ word: StaticString) throws(GiveUp) {
        let count = word.utf8CodeUnitCount
        guard bytes.count - index >= count else { throw GiveUp() }
        let text = UnsafeBufferPointer(start: word.utf8Start, count: count)
        for i in 0..<count where bytes[index + i] != text[i] { throw GiveUp() }
        index += count
    }

    // MARK: Numbers

    /// jansson's grammar: an integer without fraction or exponent is an `Int64` (out of range:
    /// jansson's error), anything else a `strtod` double (overflow: jansson's error).
    private mutating func parseNumber() throws(GiveUp) -> JSONValue {
        let start = index
        let negative = bytes[index] == UInt8(ascii: "-")
        if negative { index += 1 }
        let digitsStart = index
        guard index < bytes.count, isDigit(bytes[index]) else { throw GiveUp() }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
            if index < bytes.count, isDigit(bytes[index]) { throw GiveUp() }  // leading zero
        } else {
            skipDigits()
        }
        let digitsEnd = index
        var isReal = false
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard index < bytes.count, isDigit(bytes[index]) else { throw GiveUp() }
            skipDigits()
            isReal = true
        }
        if index < bytes.count, bytes[index] | 0x20 == UInt8(ascii: "e") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count, isDigit(bytes[index]) else { throw GiveUp() }
            skipDigits()
            isReal = true
        }
        do throws(GiveUp) {
            guard isReal else { return .int(try integer(digitsStart..<digitsEnd, negative: negative)) }
            return .double(try real(start..<index))
        } catch {
            guard keepLargeNumbers, isOutOfRange(start..<index, isReal: isReal) else { throw error }
            return .number(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self))
        }
    }

    /// True when the (grammatical) number in `range` does not fit its type: an integer beyond
    /// `Int64`, a real `strtod` overflows. Anything else that made the reader give up (a
    /// locale's decimal comma) is left to jansson.
    private func isOutOfRange(_ range: Range<Int>, isReal: Bool) -> Bool {
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
        guard isReal else { return true }
        return text.withCString { chars in
            var end: UnsafeMutablePointer<CChar>?
            let value = strtod(chars, &end)
            return end.map { UnsafePointer($0) - chars } == range.count && !value.isFinite
        }
    }

    /// Accumulated negatively so that `Int64.min` fits.
    private func integer(_ digits: Range<Int>, negative: Bool) throws(GiveUp) -> Int64 {
        var value: Int64 = 0
        for i in digits {
            let (times10, o1) = value.multipliedReportingOverflow(by: 10)
            let (next, o2) = times10.subtractingReportingOverflow(Int64(bytes[i] &- UInt8(ascii: "0")))
            guard !o1, !o2 else { throw GiveUp() }
            value = next
        }
        if negative { return value }
        guard value != .min else { throw GiveUp() }
        return -value
    }

    /// The double `strtod` (which jansson uses) makes of the number in `range`.
    private mutating func real(_ range: Range<Int>) throws(GiveUp) -> Double {
        if let exact = exactReal(range) { return exact }
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[range]))
        scratch.append(0)
        let (value, consumed) = scratch.withUnsafeBufferPointer { buf in
            buf.withMemoryRebound(to: CChar.self) { chars -> (Double, Int) in
                var end: UnsafeMutablePointer<CChar>?
                let value = strtod(chars.baseAddress!, &end)
                return (value, end.map { UnsafePointer($0) - chars.baseAddress! } ?? 0)
            }
        }
        // A locale whose decimal point is not "." stops strtod early; overflow is jansson's error.
        guard consumed == range.count, value.isFinite else { throw GiveUp() }
        return value
    }

    /// Exact powers of ten as doubles (10^22 is the largest one).
    private static let powersOfTen: [Double] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
        1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ]

    /// Clinger's fast path: with at most 15 significant digits the digits are an exact double,
    /// and so is 10^e for |e| <= 22; one multiplication or division then rounds once, to the
    /// same correctly rounded value `strtod` returns. Nil for anything else (strtod decides).
    private func exactReal(_ range: Range<Int>) -> Double? {
        var i = range.lowerBound
        let negative = bytes[i] == UInt8(ascii: "-")
        if negative { i += 1 }
        var mantissa: UInt64 = 0
        var significantDigits = 0
        var exponent = 0
        var inFraction = false
        while i < range.upperBound {
            let c = bytes[i]
            if c == UInt8(ascii: ".") {
                inFraction = true
            } else if isDigit(c) {
                if mantissa != 0 || c != UInt8(ascii: "0") { significantDigits += 1 }
                guard significantDigits <= 15 else { return nil }
                mantissa = mantissa * 10 + UInt64(c - UInt8(ascii: "0"))
                if inFraction { exponent -= 1 }
            } else {
                break  // "e" or "E"
            }
            i += 1
        }
        if i < range.upperBound {
            i += 1
            var exponentNegative = false
            if bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") {
                exponentNegative = bytes[i] == UInt8(ascii: "-")
                i += 1
            }
            var written = 0
            while i < range.upperBound {
                written = written * 10 + Int(bytes[i] - UInt8(ascii: "0"))
                guard written < 10_000 else { return nil }
                i += 1
            }
            exponent += exponentNegative ? -written : written
        }
        if mantissa == 0 { return negative ? -0.0 : 0.0 }
        guard exponent >= -22, exponent <= 22 else { return nil }
        var value = Double(mantissa)
        value = exponent >= 0 ? value * Self.powersOfTen[exponent] : value / Self.powersOfTen[-exponent]
        return negative ? -value : value
    }

    private mutating func skipDigits() {
        while index < bytes.count, isDigit(bytes[index]) { index += 1 }
    }

    private func isDigit(_ c: UInt8) -> Bool { c &- UInt8(ascii: "0") < 10 }

    // MARK: Strings

    /// A string starting at the opening quote. Raw control characters are jansson's error; the
    /// UTF-8 must be well-formed (what jansson's decoder checks: no overlong forms, surrogates
    /// or code points above U+10FFFF), which `String(validating:)` checks the same way.
    private mutating func parseString(isKey: Bool) throws(GiveUp) -> String {
        index += 1
        let start = index
        var ascii = true
        while true {
            while bytes.count - index >= 8 {
                let mask = JSONByteScan.readerAttention(JSONByteScan.load(bytes.baseAddress! + index))
                if mask == 0 { index += 8; continue }
                index += JSONByteScan.firstFlagged(mask)
                break
            }
            guard index < bytes.count else { break }
            let c = bytes[index]
            if c == UInt8(ascii: "\"") {
                let text = UnsafeBufferPointer(rebasing: bytes[start..<index])
                index += 1
                if ascii { return String(decoding: text, as: UTF8.self) }
                guard let string = String(validating: text, as: UTF8.self) else { throw GiveUp() }
                return string
            }
            if c == UInt8(ascii: "\\") { return try parseEscapedString(from: start, isKey: isKey) }
            if c < 0x20 { throw GiveUp() }
            if c >= 0x80 { ascii = false }
            index += 1
        }
        throw GiveUp()
    }

    /// The rest of a string that has escapes, unescaped into `scratch`. Escapes produce
    /// well-formed UTF-8 that can neither complete nor break a raw sequence, so validating the
    /// whole result validates the raw bytes.
    private mutating func parseEscapedString(from start: Int, isKey: Bool) throws(GiveUp) -> String {
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<index]))
        while index < bytes.count {
            let c = bytes[index]
            index += 1
            switch c {
            case UInt8(ascii: "\""):
                guard let string = String(validating: scratch, as: UTF8.self) else { throw GiveUp() }
                return string
            case UInt8(ascii: "\\"):
                guard index < bytes.count else { throw GiveUp() }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scratch.append(escape)
                case UInt8(ascii: "b"): scratch.append(0x08)
                case UInt8(ascii: "f"): scratch.append(0x0C)
                case UInt8(ascii: "n"): scratch.append(0x0A)
                case UInt8(ascii: "r"): scratch.append(0x0D)
                case UInt8(ascii: "t"): scratch.append(0x09)
                case UInt8(ascii: "u"):
                    let scalar = try unicodeEscape()
                    // jansson refuses a NUL in an object key even with JSON_ALLOW_NUL.
                    if isKey && scalar == 0 { throw GiveUp() }
                    appendUTF8(scalar)
                default: throw GiveUp()
                }
            case 0..<0x20:
                throw GiveUp()
            default:
                scratch.append(c)
            }
        }
        throw GiveUp()
    }

    /// The code point of `\uXXXX` (the `\u` already read), joining a surrogate pair; a lone
    /// surrogate is jansson's error.
    private mutating func unicodeEscape() throws(GiveUp) -> UInt32 {
        let first = try hex4()
        switch first {
        case 0xD800...0xDBFF:
            guard bytes.count - index >= 2, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                throw GiveUp()
            }
            index += 2
            let second = try hex4()
            guard (0xDC00...0xDFFF).contains(second) else { throw GiveUp() }
            return 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        case 0xDC00...0xDFFF:
            throw GiveUp()
        default:
            return first
        }
    }

    private mutating func hex4() throws(GiveUp) -> UInt32 {
        guard bytes.count - index >= 4 else { throw GiveUp() }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[index]
            index += 1
            let digit: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = c - UInt8(ascii: "A") + 10
            default: throw GiveUp()
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    private mutating func appendUTF8(_ scalar: UInt32) {
        switch scalar {
        case 0..<0x80:
            scratch.append(UInt8(scalar))
        case 0x80..<0x800:
            scratch.append(UInt8(0xC0 | scalar >> 6))
            scratch.append(UInt8(0x80 | scalar & 0x3F))
        case 0x800..<0x10000:
            scratch.append(UInt8(0xE0 | scalar >> 12))
            scratch.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            scratch.append(UInt8(0x80 | scalar & 0x3F))
        default:
            scratch.append(UInt8(0xF0 | scalar >> 18))
            scratch.append(UInt8(0x80 | scalar >> 12 & 0x3F))
            scratch.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            scratch.append(UInt8(0x80 | scalar & 0x3F))
        }
    }

    // MARK: Whitespace

    /// Space, tab, LF and CR, as jansson skips them.
    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }
}

/// A stack whose top elements move into a new array in one go: `Array(slice)` followed by
/// `removeSubrange` would retain and release every value, through the runtime's generic tuple
/// witnesses, which cost more than reading them.
final class MoveStack<Element> {
    private var storage: UnsafeMutablePointer<Element>
    private var capacity: Int
    private(set) var count = 0

    init(capacity: Int = 64) {
        self.capacity = capacity
        storage = .allocate(capacity: capacity)
    }

    deinit {
        storage.deinitialize(count: count)
        storage.deallocate()
    }

    func push(_ element: consuming Element) {
        if count == capacity {
            let grown = UnsafeMutablePointer<Element>.allocate(capacity: capacity * 2)
            grown.moveInitialize(from: storage, count: count)
            storage.deallocate()
            storage = grown
            capacity *= 2
        }
        (storage + count).initialize(to: element)
        count += 1
    }

    /// Removes the elements from `start` up, returning them as an array.
    func pop(from start: Int) -> [Element] {
        let n = count - start
        guard n > 0 else { return [] }
        let popped = [Element](unsafeUninitializedCapacity: n) { buffer, initialized in
            buffer.baseAddress!.moveInitialize(from: storage + start, count: n)
            initialized = n
        }
        count = start
        return popped
    }

    subscript(index: Int) -> Element {
        get { storage[index] }
        _modify { yield &storage[index] }
    }

    func firstIndex(from start: Int, where predicate: (Element) -> Bool) -> Int? {
        for i in start..<count where predicate(storage[i]) { return i }
        return nil
    }
}
