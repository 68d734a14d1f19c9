import XCTest
@testable import PortcullisCore

/// The byte-level head path (`RawHeaderFields`, `HeaderHygiene.appendDownstreamFields`) against
/// the `HTTPHeaders` path it replaces on the hot path: same fields, same bytes, for every input.
final class RawHeaderFieldsTests: XCTestCase {
    /// Fields fed as a parser would, each name and value in pieces of `piece` bytes.
    private func raw(_ fields: [([UInt8], [UInt8])], piece: Int = .max) -> RawHeaderFields {
        var raw = RawHeaderFields()
        for (name, value) in fields {
            for chunk in chunks(name, piece) { chunk.withUnsafeBytes { raw.appendName($0) } }
            for chunk in chunks(value, piece) { chunk.withUnsafeBytes { raw.appendValue($0) } }
        }
        raw.finish()
        return raw
    }

    private func chunks(_ bytes: [UInt8], _ size: Int) -> [[UInt8]] {
        guard !bytes.isEmpty else { return [[]] }
        return stride(from: 0, to: bytes.count, by: size).map { Array(bytes[$0..<min($0 + size, bytes.count)]) }
    }

    private func text(_ fields: [(String, String)]) -> [([UInt8], [UInt8])] { fields.map { (Array($0.0.utf8), Array($0.1.utf8)) } }

    /// What the `HTTPHeaders` path writes for the same fields.
    private func viaStrings(_ raw: RawHeaderFields, allowAccelBuffering: Bool) -> [UInt8] {
        var out: [UInt8] = []
        HeaderHygiene.appendFields(HeaderHygiene.downstreamResponseHeaders(raw.headers(), allowAccelBuffering: allowAccelBuffering), to: &out)
        return out
    }

    private func viaBytes(_ raw: RawHeaderFields, allowAccelBuffering: Bool) -> [UInt8] {
        var out: [UInt8] = []
        HeaderHygiene.appendDownstreamFields(raw, allowAccelBuffering: allowAccelBuffering, to: &out)
        return out
    }

    private func assertSame(_ raw: RawHeaderFields, file: StaticString = #filePath, line: UInt = #line) {
        for allow in [true, false] {
            XCTAssertEqual(String(decoding: viaBytes(raw, allowAccelBuffering: allow), as: UTF8.self),
                           String(decoding: viaStrings(raw, allowAccelBuffering: allow), as: UTF8.self), file: file, line: line)
            XCTAssertEqual(viaBytes(raw, allowAccelBuffering: allow), viaStrings(raw, allowAccelBuffering: allow), file: file, line: line)
        }
    }

    func testPiecesJoinAndTrailingWhitespaceIsTrimmed() {
        for piece in [1, 2, 3, .max] {
            let fields = raw(text([("Content-Type", "application/json \t"), ("X-Empty", ""), ("Date", "Mon, 30 Nov 2026")]), piece: piece)
            XCTAssertEqual(fields.headers(), HTTPHeaders([("Content-Type", "application/json"), ("X-Empty", ""), ("Date", "Mon, 30 Nov 2026")]),
                           "piece \(piece)")
        }
    }

    func testRemoveAllKeepsNothingOfThePreviousMessage() {
        var fields = raw(text([("A", "1"), ("B", "2")]))
        fields.removeAll()
        XCTAssertEqual(fields.count, 0)
        Array("C".utf8).withUnsafeBytes { fields.appendName($0) }
        Array("3".utf8).withUnsafeBytes { fields.appendValue($0) }
        fields.finish()
        XCTAssertEqual(fields.headers(), HTTPHeaders([("C", "3")]))
    }

    func testValueBeforeAnyNameIsIgnored() {
        var fields = RawHeaderFields()
        Array("stray".utf8).withUnsafeBytes { fields.appendValue($0) }
        fields.finish()
        XCTAssertEqual(fields.count, 0)
        XCTAssertEqual(viaBytes(fields, allowAccelBuffering: true), [])
    }

    func testHygieneMatchesTheStringPath() {
        let cases: [[(String, String)]] = [
            [("Content-Type", "application/json"), ("Content-Length", "74"), ("Connection", "keep-alive"), ("Server", "nginx")],
            [("Connection", "close, X-Secret ,, x-other\t"), ("X-Secret", "s"), ("x-SECRET", "t"), ("X-Other", "o"), ("X-Kept", "k")],
            [("Keep-Alive", "timeout=5"), ("TE", "trailers"), ("Trailer", "X"), ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"),
             ("Proxy-Connection", "x"), ("Proxy-Authenticate", "Basic"), ("Proxy-Authorization", "Basic x"), ("te", "x")],
            [("Status", "500"), ("X-Request-ID", "forged"), ("x-request-id", "forged"), ("X-Accel-Redirect", "/internal"),
             ("X-Accel-Buffering", "no"), ("x-accel-limit-rate", "1"), ("X-Accel-", "short"), ("X-Accelerated", "yes")],
            [("Bad Name", "v"), ("", "empty name"), ("X-Ctl", "a\u{01}b"), ("X-Del", "a\u{7F}"), ("X-Tab", "a\tb"),
             ("X-Utf8", "caf\u{E9}"), ("Ünicode", "v"), ("X-Ok", "fine")],
            [("Connection", ""), ("Connection", "Connection, TE, keep-alive"), ("X-A", "1")],
            [("Connection", ",,,"), ("X-A", "1")],
        ]
        for fields in cases {
            for piece in [1, 4, .max] { assertSame(raw(text(fields), piece: piece)) }
        }
    }

    func testNonUTF8BytesPassUnchanged() {
        let fields: [([UInt8], [UInt8])] = [
            (Array("X-Raw".utf8), [0x61, 0xE9, 0xFF, 0x62]),
            (Array("X-Escape-Block".utf8), [0xF4, 0x8F, 0xBC, 0x80]),
            ([0x58, 0xFF], Array("name not UTF-8".utf8)),
            (Array("Connection".utf8), [0xE9, 0x2C, 0x20, 0x58, 0x2D, 0x52, 0x61, 0x77]),  // "é, X-Raw": names X-Raw
        ]
        let block = raw(fields)
        assertSame(block)
        XCTAssertEqual(viaBytes(block, allowAccelBuffering: true), Array("X-Escape-Block: ".utf8) + [0xF4, 0x8F, 0xBC, 0x80, 0x0D, 0x0A])
    }

    /// Random heads built from hostile pieces: the two paths never differ.
    func testRandomHeadsMatchTheStringPath() {
        var rng = TraceIdGenerator(seed: 0x8A11_0F1E)  // SplitMix64: a fixed, reproducible sequence
        let names = ["Connection", "connection", "Keep-Alive", "X-A", "x-a", "X-Accel-Buffering", "X-Accel-Redirect", "Status",
                     "X-Request-Id", "TE", "Upgrade", "Content-Length", "Set-Cookie", "Bad Name", "", "X-\u{E9}", "close"]
        let values = ["", " ", "x-a", "X-A, close", "keep-alive, Upgrade", "a\u{00}b", "v\r\nInjected: 1", "caf\u{E9}", ",,",
                      "x-accel-buffering", "Status", "1, 2", "\t"]
        for _ in 0..<500 {
            let count = Int(rng.next() % 8)
            var fields: [([UInt8], [UInt8])] = []
            for _ in 0..<count {
                var value = Array(values[Int(rng.next() % UInt64(values.count))].utf8)
                if rng.next() % 5 == 0 { value.append(UInt8(truncatingIfNeeded: rng.next())) }
                fields.append((Array(names[Int(rng.next() % UInt64(names.count))].utf8), value))
            }
            assertSame(raw(fields, piece: Int(rng.next() % 4) + 1))
        }
    }
}
