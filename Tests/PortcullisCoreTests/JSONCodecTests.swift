import XCTest
@testable import PortcullisCore

/// The fast JSON reader must give exactly jansson's answers (value, or error with position),
/// and the byte serialiser must escape exactly as before.
/// (`SplitMix`, the seeded generator, is shared with the rate-limit tests.)
final class JSONCodecTests: XCTestCase {
    // MARK: Helpers

    /// Same types, same member order, same bits (so -0.0 and 0.0 differ).
    private func assertIdentical(_ a: JSONValue, _ b: JSONValue, _ context: String, file: StaticString = #filePath, line: UInt = #line) {
        switch (a, b) {
        case (.null, .null): return
        case (.bool(let x), .bool(let y)) where x == y: return
        case (.int(let x), .int(let y)) where x == y: return
        case (.double(let x), .double(let y)) where x.bitPattern == y.bitPattern: return
        case (.string(let x), .string(let y)) where Array(x.utf8) == Array(y.utf8): return
        case (.array(let x), .array(let y)) where x.count == y.count:
            for (p, q) in zip(x, y) { assertIdentical(p, q, context, file: file, line: line) }
            return
        case (.object(let x), .object(let y)) where x.keys == y.keys:
            for (p, q) in zip(x.entries, y.entries) { assertIdentical(p.value, q.value, context, file: file, line: line) }
            return
        default:
            XCTFail("\(context): \(a) differs from \(b)", file: file, line: line)
        }
    }

    /// `JSONCodec.parse` (fast reader first) against jansson alone, in both duplicate modes.
    private func assertAgreesWithJansson(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        for reject in [false, true] {
            let context = "\(String(decoding: bytes.prefix(80), as: UTF8.self).debugDescription) reject=\(reject)"
            let reference = Result { () throws(JSONParseError) in try JSONCodec.parseWithJansson(bytes, rejectDuplicateKeys: reject) }
            let actual = Result { () throws(JSONParseError) in try JSONCodec.parse(bytes, rejectDuplicateKeys: reject) }
            switch (reference, actual) {
            case (.success(let r), .success(let a)): assertIdentical(r, a, context, file: file, line: line)
            case (.failure(let r), .failure(let a)): XCTAssertEqual(r, a, context, file: file, line: line)
            default: XCTFail("\(context): jansson \(reference), codec \(actual)", file: file, line: line)
            }
        }
    }

    private func assertAgreesWithJansson(_ text: String, file: StaticString = #filePath, line: UInt = #line) {
        assertAgreesWithJansson(Array(text.utf8), file: file, line: line)
    }

    private func fastParse(_ text: String) -> JSONValue? {
        Array(text.utf8).withUnsafeBufferPointer { JSONFastParser.parse($0, rejectDuplicateKeys: false) }
    }

    // MARK: Reading

    func testEdgeCasesMatchJansson() {
        let cases = [
            // scalars and whitespace
            "null", "true", "false", " \t\r\n1 \n", "\"\"", "0", "-0", "-0.0", "0.0", "1E2", "1e+2", "1e-2", "-1.5e-3",
            "123456789012345", "0.1", "3.141592653589793", "1.7976931348623157e308", "5e-324", "2.2250738585072014e-308",
            "9007199254740993.0", "0.30000000000000004", "1e22", "1e23", "123456789012345678e-5", "0e999",
            // integer limits
            "9223372036854775807", "-9223372036854775808", "9223372036854775808", "-9223372036854775809",
            "99999999999999999999999",
            // reals out of range
            "1e400", "-1e400", "1e-400", "1e99999999999999999999",
            // strings and escapes
            #""\"\\\/\b\f\n\r\t""#, #""\u00e9\u20AC\uffff""#, #""\ud83d\ude00""#, #""\uD83D\uDE00x""#, #""\u0000""#,
            #""a\u0000b""#, #""\ud800""#, #""\udc00""#, #""\ud800\u0041""#, #""\ud800x""#, #""\u12""#, #""\x""#,
            "\"é漢字😀\"", "\"\u{7F}\"", "\"a\tb\"", "\"a\nb\"", "\"abc", "\"abcdefgh\\", "\"abcdefghijklmnop\"",
            // containers
            "[]", "{}", "[1,2,[3,{\"a\":[]}]]", "{\"a\":{\"b\":{\"c\":null}}}", "[1,]", "[,1]", "{\"a\":1,}", "{\"a\"}",
            "{\"a\" 1}", "{1:2}", "[1 2]", "{\"a\":1 \"b\":2}", "[", "{", "]", "[] []", "[]x", "{}\u{0}",
            // duplicate and NUL keys
            #"{"a":1,"b":2,"a":3}"#, #"{"a":1,"a":{"x":1},"a":[2]}"#, #"{"a\u0000b":1}"#, #"{"\u0061":1,"a":2}"#,
            // syntax errors
            "", " ", "01", "-01", "1.", ".5", "-", "+1", "1e", "1e+", "tru", "truex", "nul", "nulll", "NaN",
            "Infinity", "[1.5.3]", "0x10", "\u{FEFF}1", "'a'", "1 2",
        ]
        for text in cases { assertAgreesWithJansson(text) }
    }

    func testInvalidUTF8MatchesJansson() {
        let sequences: [[UInt8]] = [
            [0xC0, 0xAF], [0xC1, 0xBF], [0xE0, 0x80, 0xAF], [0xED, 0xA0, 0x80], [0xED, 0x9F, 0xBF], [0xF4, 0x90, 0x80, 0x80],
            [0xF5, 0x80, 0x80, 0x80], [0x80], [0xBF], [0xC3], [0xE2, 0x82], [0xF0, 0x9F, 0x98], [0xFF], [0xC3, 0xA9],
            [0xF0, 0x9F, 0x98, 0x80], [0xEF, 0xBF, 0xBF],
        ]
        for bytes in sequences {
            assertAgreesWithJansson([0x22] + bytes + [0x22])
            assertAgreesWithJansson(Array(#"{"k":""#.utf8) + bytes + Array(#"\n"}"#.utf8))
            assertAgreesWithJansson([0x22] + bytes + Array(#"\u00e9""#.utf8))
            assertAgreesWithJansson(bytes)
        }
    }

    func testNestingLimitIsJanssons() {
        for depth in [2047, 2048, 2049] {
            assertAgreesWithJansson(String(repeating: "[", count: depth) + String(repeating: "]", count: depth))
            assertAgreesWithJansson(String(repeating: "[", count: depth) + "1" + String(repeating: "]", count: depth))
            assertAgreesWithJansson(String(repeating: "{\"a\":", count: depth) + "1" + String(repeating: "}", count: depth))
        }
        // 2048 nested values are the most jansson reads, and the fast reader reads them itself.
        XCTAssertNotNil(fastParse(String(repeating: "[", count: 2048) + String(repeating: "]", count: 2048)))
        XCTAssertNil(fastParse(String(repeating: "[", count: 2048) + "1" + String(repeating: "]", count: 2048)))
    }

    func testDuplicateKeysKeepFirstPositionAndLastValue() throws {
        let value = try JSONCodec.parse(#"{"a":1,"b":2,"a":3}"#, rejectDuplicateKeys: false)
        XCTAssertEqual(value.objectValue?.keys, ["a", "b"])
        XCTAssertEqual(value["a"], 3)
        XCTAssertThrowsError(try JSONCodec.parse(#"{"a":1,"b":2,"a":3}"#, rejectDuplicateKeys: true))
        // Above the linear-scan size the reader indexes the keys; same answers.
        let many = (0..<40).map { "\"k\($0)\":\($0)" }.joined(separator: ",")
        assertAgreesWithJansson("{\(many),\"k7\":\"again\",\"k39\":[1]}")
        assertAgreesWithJansson("{\(many)}")
        let manyValue = try JSONCodec.parse("{\(many),\"k7\":\"again\"}", rejectDuplicateKeys: false)
        XCTAssertEqual(manyValue.objectValue?.count, 40)
        XCTAssertEqual(manyValue["k7"], "again")
        XCTAssertEqual(manyValue.objectValue?.keys[7], "k7")
    }

    func testFastReaderHandlesTheCommonCasesItself() {
        // These must not fall back to jansson: they are what bodies are made of.
        for text in [#"{"a":[1,-2,3.5,true,false,null,"x\n\u00e9\ud83d\ude00"],"b":{}}"#, "-0.0", "1e-400", "\"\\u0000\""] {
            XCTAssertNotNil(fastParse(text), text)
        }
        XCTAssertEqual(fastParse("-0"), .int(0))
        XCTAssertEqual(fastParse("-0.0")?.doubleValue?.sign, .minus)
        XCTAssertEqual(fastParse("\"\\ud83d\\ude00\""), "😀")
        XCTAssertEqual(fastParse("-9223372036854775808"), .int(.min))
        for refused in ["1e400", "9223372036854775808", #"{"a\u0000":1}"#, "\"\\ud800\"", "01"] {
            XCTAssertNil(fastParse(refused), refused)
        }
    }

    func testNumbersMatchStrtod() {
        // Clinger's fast path and strtod must agree bit for bit.
        var rng = SplitMix(seed: 7)
        for _ in 0..<3000 {
            let digits = Int(rng.next() % 19) + 1
            var mantissa = String(rng.next() % 9 + 1)
            for _ in 1..<digits { mantissa += String(rng.next() % 10) }
            let point = Int(rng.next() % UInt64(digits + 1))
            var text = point == 0 || point == digits ? mantissa : String(mantissa.prefix(point)) + "." + mantissa.dropFirst(point)
            if point == digits { text += ".0" }
            if rng.next() % 2 == 0 { text += "e" + (rng.next() % 2 == 0 ? "-" : "") + String(rng.next() % 40) }
            if rng.next() % 3 == 0 { text = "-" + text }
            assertAgreesWithJansson(text)
        }
    }

    func testRandomMutationsMatchJansson() {
        let seeds = [
            #"{"user_name":"alice","email":"a@example.com","items":[{"sku":"x-1","qty":2,"price":9.5}],"ok":true,"n":null}"#,
            #"[1,-2.5e3,"a\"b\\c\u00e9",{"k":[{}],"k2":"\ud83d\ude00"},false]"#,
            #"{"a":{"b":{"c":[0,1,2,3,4,5,6,7,8,9]}},"long":"abcdefghijklmnopqrstuvwxyz0123456789"}"#,
        ]
        let alphabet = Array(#"{}[]:,"\/ubfnrt0123456789-+.eEaxlsN "#.utf8) + [0x00, 0x0A, 0x1F, 0x7F, 0x80, 0xC3, 0xA9, 0xED, 0xF0, 0xFF]
        var rng = SplitMix(seed: 42)
        for round in 0..<4000 {
            var bytes = Array(seeds[round % seeds.count].utf8)
            for _ in 0..<(1 + rng.next() % 3) {
                let at = Int(rng.next() % UInt64(bytes.count))
                let byte = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                switch rng.next() % 3 {
                case 0: bytes[at] = byte
                case 1: bytes.insert(byte, at: at)
                default: if bytes.count > 1 { bytes.remove(at: at) }
                }
            }
            assertAgreesWithJansson(bytes)
        }
    }

    // MARK: Writing

    /// The escaping rule, one byte at a time: the reference for the word-at-a-time writer.
    private func referenceQuoted(_ s: String) -> [UInt8] {
        var out: [UInt8] = [0x22]
        for c in s.utf8 {
            switch c {
            case 0x22, 0x5C: out += [0x5C, c]
            case 0x0A: out += Array("\\n".utf8)
            case 0x0D: out += Array("\\r".utf8)
            case 0x09: out += Array("\\t".utf8)
            case 0..<0x20, 0x7F: out += Array(String(format: "\\u%04x", c).utf8)
            default: out.append(c)
            }
        }
        return out + [0x22]
    }

    func testStringEscapingAtEveryPosition() {
        let specials: [Character] = ["\"", "\\", "\n", "\r", "\t", "\u{0}", "\u{1}", "\u{1F}", "\u{7F}", "é", "😀", " ", "~"]
        for length in [0, 1, 7, 8, 9, 15, 16, 17, 33] {
            for position in 0..<max(length, 1) {
                for special in specials {
                    var chars = Array(repeating: Character("a"), count: length)
                    if position < length { chars[position] = special }
                    let s = String(chars)
                    var out: [UInt8] = []
                    JSONLineWriter.appendQuoted(s, to: &out)
                    XCTAssertEqual(out, referenceQuoted(s), s.debugDescription)
                    XCTAssertEqual(JSONCodec.serializeBytes(.string(s), capacity: 1), out, s.debugDescription)
                }
            }
        }
        let all = String(decoding: (0..<128).map { UInt8($0) }, as: UTF8.self) + "é漢😀"
        XCTAssertEqual(JSONCodec.serializeBytes(.string(all)), referenceQuoted(all))
    }

    /// The serialiser's own buffer grows from any size hint and writes what an array gets.
    func testSerialiserBufferGrowsAndMatchesAnArray() throws {
        let items = (0..<200).map { #"{"name":"item-\#($0)","price":\#(Double($0) * 1.5),"tags":["a","\n"],"n":\#($0),"x":null}"# }
        let text = "{\"items\":[" + items.joined(separator: ",") + "],\"ok\":true,\"big\":123456789012345678901234567890}"
        let value = try JSONCodec.parse(Array(text.utf8), rejectDuplicateKeys: false, keepLargeNumbers: true)
        var reference: [UInt8] = []
        JSONCodec.write(value, into: &reference)
        XCTAssertGreaterThan(reference.count, 10_000)
        for capacity in [-1, 0, 1, 2, 17, 100, 4096, 1 << 16] {
            XCTAssertEqual(JSONCodec.serializeBytes(value, capacity: capacity), reference, "capacity \(capacity)")
        }
        var buffer = ByteBuffer(capacity: 1)
        defer { buffer.deallocate() }
        var expected: [UInt8] = []
        for i in 0..<1000 {
            let piece = Array(repeating: UInt8(truncatingIfNeeded: i), count: i % 37)
            piece.withUnsafeBufferPointer { buffer.append(bytes: $0) }
            buffer.append(UInt8(truncatingIfNeeded: i &* 7))
            expected += piece + [UInt8(truncatingIfNeeded: i &* 7)]
        }
        XCTAssertEqual(buffer.array, expected)
    }

    func testNumbersSerialiseAsBefore() {
        let ints: [Int64] = [0, 1, -1, 9, 10, 99, 100, 1234567890, .max, .min, .min + 1]
        for i in ints { XCTAssertEqual(JSONCodec.serialize(.int(i)), String(i)) }
        let doubles: [Double] = [0, -0.0, 1, -1, 1.5, 100, 1e15, 1e16, 1e21, 1e300, 1.7976931348623157e308, 5e-324,
                                 0.1, 1 / 3, 123456.789, -2.5e-7, 3.141592653589793]
        for d in doubles {
            var expected = String(format: "%.15g", d)
            if !expected.contains(where: { $0 == "." || $0 == "e" }) { expected += ".0" }
            XCTAssertEqual(JSONCodec.serialize(.double(d)), expected, "\(d)")
        }
        XCTAssertEqual(JSONCodec.serialize(.double(.nan)), "null")
        XCTAssertEqual(JSONCodec.serialize(.double(.infinity)), "null")
        XCTAssertEqual(JSONCodec.serialize(.double(-.infinity)), "null")
    }

    func testRoundTrip() throws {
        let text = #"{"a":[1,-2,3.5,true,false,null,"x\n\u0000é😀"],"b":{},"c":[],"d":-0.0,"e":1e-7,"f":{"g":{"h":"\"\\"}}}"#
        let value = try JSONCodec.parse(text)
        let bytes = JSONCodec.serializeBytes(value)
        assertIdentical(try JSONCodec.parse(bytes), value, "round trip")
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self),
                       #"{"a":[1,-2,3.5,true,false,null,"x\n\u0000é😀"],"b":{},"c":[],"d":-0.0,"e":1e-07,"f":{"g":{"h":"\"\\"}}}"#)
    }

    /// The access log's byte writers give what the `String` formatting gave.
    func testLineWriterWritesNumbersTimesAndHexAsBytes() {
        var w = JSONLineWriter()
        w.field("a", Int.min)
        w.field("b", 0)
        w.field("c", 1_234_567)
        w.field("d", nil as Int?)
        w.field("e", milliseconds: 1.05)
        w.field("g", milliseconds: 12)
        w.field("h", milliseconds: .nan)
        w.field("s", "q\"\u{01}")
        let date = Date(timeIntervalSince1970: 1_795_000_000.1235)
        w.field("t") { RFC3339.append(date, milliseconds: true, to: &$0) }
        let trace = TraceContext(traceHigh: 0x0123_4567_89AB_CDEF, traceLow: 0xF, spanId: 1, flags: 1)
        w.field("x") { trace.appendTraceIdHex(to: &$0) }
        let line = String(decoding: w.finish(), as: UTF8.self)
        XCTAssertEqual(line, #"{"a":\#(Int.min),"b":0,"c":1234567,"d":null,"e":1.050,"g":12,"h":null,"s":"q\"\u0001","#
            + #""t":"\#(RFC3339.format(date, milliseconds: true))","x":"\#(trace.traceIdHex)"}"# + "\n")
        XCTAssertEqual(RFC3339.format(date, milliseconds: true), "2026-11-18T11:06:40.123Z")
        XCTAssertEqual(trace.traceIdHex, "0123456789abcdef000000000000000f")
    }
}
