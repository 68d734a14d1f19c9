import XCTest
@testable import PortcullisCore

/// The pure parts of the hardening fixes (issue 12): raw bytes, byte routing, Connection token
/// cap, X-Accel stripping, the credential rate-limit key.
final class HardeningTests: XCTestCase {
    // MARK: RawText

    func testBytesThatAreNotUTF8RoundTripAndStayDistinct() {
        let inputs: [[UInt8]] = [
            Array("/caf".utf8) + [0xE9], [0x2F, 0xFF], [0xC0, 0xAF], [0xE0, 0x80, 0xAF], [0xED, 0xA0, 0x80],
            [0xF4, 0x90, 0x80, 0x80], [0xF4, 0x8F, 0xBC, 0x80], [0xF4, 0x8F, 0xBF, 0xBF], [0xF4], [0xEF, 0xBF, 0xBD],
            Array("plain ascii".utf8), Array("caf\u{e9} \u{2028}".utf8), [0x80, 0x80, 0xC3],
        ]
        var seen: [String: [UInt8]] = [:]
        for bytes in inputs {
            let text = RawText.decode(bytes)
            XCTAssertEqual(RawText.bytes(of: text), bytes, "round trip of \(bytes)")
            XCTAssertNil(seen[text], "\(bytes) and \(seen[text] ?? []) decode to the same text")
            seen[text] = bytes
            XCTAssertFalse(text.unicodeScalars.contains("\u{FFFD}") && !bytes.starts(with: [0xEF, 0xBF, 0xBD]), "no U+FFFD invented")
        }
        XCTAssertEqual(RawText.decode(Array("caf\u{e9}".utf8)), "caf\u{e9}", "well-formed UTF-8 stays as it is")
    }

    /// ASCII runs are skipped eight bytes at a time: a non-ASCII or escaped byte at every
    /// offset around those words is still found, decoded and written back.
    func testBytesAfterAnASCIIRunOfAnyLengthAreStillDecoded() {
        for length in 0...20 {
            let run = Array(repeating: UInt8(ascii: "a"), count: length)
            for tail: [UInt8] in [[0xE9], [0xC3, 0xA9], [0xF4, 0x8F, 0xBC, 0x80], [0xFF, 0x61]] {
                let bytes = run + tail
                let text = RawText.decode(bytes)
                XCTAssertEqual(RawText.bytes(of: text), bytes, "round trip of \(length) ASCII bytes and \(tail)")
                XCTAssertEqual(RawText.hasEscapes(text), tail != [0xC3, 0xA9], "escapes after \(length) ASCII bytes, then \(tail)")
            }
            XCTAssertEqual(RawText.decode(run), String(repeating: "a", count: length))
            XCTAssertFalse(RawText.hasEscapes(String(repeating: "a", count: length)))
        }
    }

    func testPercentDecodingKeepsBytesAndEncodingRestoresThem() {
        let e9 = PercentEncoding.decode("/echo/caf%E9/%FF")
        let ff = PercentEncoding.decode("/echo/caf%FF/%FF")
        XCTAssertNotEqual(e9, ff)
        XCTAssertEqual(PercentEncoding.encode(e9, allowed: .path), "/echo/caf%E9/%FF")
        XCTAssertEqual(QueryString.parse("q=%E9")[0].value, RawText.decode([0xE9]))
        XCTAssertEqual(QueryString.serialize(QueryString.parse("q=%E9&r=%C3%A9")), "q=%E9&r=%C3%A9")
        XCTAssertEqual(PercentEncoding.encodeNonASCII("a=1&b=" + RawText.decode([0xE9]) + "&c=%41"), "a=1&b=%E9&c=%41")
    }

    // MARK: Routing on bytes

    func testRoutesCompareBytesNotCanonicalEquivalence() {
        let routes = [
            RouteConfig(name: "composed", match: RouteMatch(path: .prefix("/caf\u{e9}/")), upstream: "u"),
            RouteConfig(name: "echo", match: RouteMatch(path: .prefix("/echo/")), upstream: "u"),
        ]
        let router = Router(routes: routes)
        func routeName(_ path: String) -> String? {
            if case .matched(let m) = router.route(GatewayRequest(method: "GET", path: path)) { return routes[m.routeIndex].name }
            return nil
        }
        XCTAssertEqual(routeName("/caf\u{e9}/x"), "composed")
        XCTAssertNil(routeName("/cafe\u{301}/x"), "decomposed é is other bytes, another path")
        XCTAssertEqual(routeName("/echo/\u{338}admin"), "echo", "a / before a combining mark still separates")
        XCTAssertEqual(Router.remainder(of: "/echo/\u{338}admin", afterSegments: 1), "/\u{338}admin")
        XCTAssertEqual(routeName("/echo/" + RawText.decode([0xE9])), "echo")
    }

    // MARK: Connection tokens

    func testConnectionTokenCap() {
        func headers(_ n: Int, spaced: Bool = false) -> HTTPHeaders {
            HTTPHeaders([("Connection", (0..<n).map { "x-\($0)" }.joined(separator: spaced ? " , ,  " : ","))])
        }
        XCTAssertFalse(HeaderHygiene.exceedsConnectionTokenCap(headers(HeaderHygiene.maxConnectionTokens)))
        XCTAssertFalse(HeaderHygiene.exceedsConnectionTokenCap(headers(HeaderHygiene.maxConnectionTokens, spaced: true)), "empty elements do not count")
        XCTAssertTrue(HeaderHygiene.exceedsConnectionTokenCap(headers(HeaderHygiene.maxConnectionTokens + 1)))
        var split = HTTPHeaders([("Connection", (0..<20).map { "a\($0)" }.joined(separator: ","))])
        split.add("connection", (0..<13).map { "b\($0)" }.joined(separator: ","))
        XCTAssertTrue(HeaderHygiene.exceedsConnectionTokenCap(split), "every Connection field counts")
        XCTAssertFalse(HeaderHygiene.exceedsConnectionTokenCap(HTTPHeaders([("X-Connection", "a,b")])))
    }

    func testStrippingManyNamedHeadersRemovesExactlyThose() {
        var fields: [(String, String)] = (0..<900).map { ("X-H\($0)", "v") }
        fields.append(("Connection", (0..<7000).map { "x-h\($0)" }.joined(separator: ", ")))
        fields.append(("Accept", "*/*"))
        var headers = HTTPHeaders(fields)
        HeaderHygiene.stripHopByHop(&headers)
        XCTAssertEqual(headers.fields.map(\.name), ["Accept"])
    }

    // MARK: X-Accel

    func testXAccelFieldsNeverReachNginx() {
        let upstream = HTTPHeaders([("X-Accel-Redirect", "/internal"), ("x-accel-limit-rate", "1"), ("X-Accel-Buffering", "no"),
                                    ("X-Accel-Expires", "0"), ("X-Accelerated", "keep"), ("X-Accel-Charset", "koi8-r"), ("Content-Type", "text/plain")])
        XCTAssertEqual(HeaderHygiene.downstreamResponseHeaders(upstream).fields.map(\.name), ["X-Accel-Buffering", "X-Accelerated", "Content-Type"])
        XCTAssertEqual(HeaderHygiene.downstreamResponseHeaders(upstream, allowAccelBuffering: false).fields.map(\.name), ["X-Accelerated", "Content-Type"])
    }

    // MARK: credential key

    func testCredentialKeyIsOneCredentialOfOneConsumer() {
        let alice = Identity(consumerId: "alice", credentialId: "k1", credentialKind: .apiKey)
        let bob = Identity(consumerId: "bob", credentialId: "k1", credentialKind: .apiKey)
        XCTAssertNotEqual(alice.rateLimitCredential, bob.rateLimitCredential, "same key id, other consumer")
        XCTAssertEqual(alice.rateLimitCredential, "7:api_key5:alice2:k1")

        let iss: JSONObject = JSONObject([("iss", .string("idp"))])
        let jwtAlice = Identity(consumerId: "alice", credentialId: "kid-1", credentialKind: .jwt, claims: iss)
        let jwtBob = Identity(consumerId: "bob", credentialId: "kid-1", credentialKind: .jwt, claims: iss)
        let jwtAliceOtherKey = Identity(consumerId: "alice", credentialId: "kid-2", credentialKind: .jwt, claims: iss)
        XCTAssertNotEqual(jwtAlice.rateLimitCredential, jwtBob.rateLimitCredential, "same kid, other subject")
        XCTAssertEqual(jwtAlice.rateLimitCredential, jwtAliceOtherKey.rateLimitCredential, "one subject of one issuer, whichever key")
        let otherIssuer = Identity(consumerId: "alice", credentialId: "kid-1", credentialKind: .jwt, claims: JSONObject([("iss", .string("idp2"))]))
        XCTAssertNotEqual(jwtAlice.rateLimitCredential, otherIssuer.rateLimitCredential)
        // Separators cannot forge another combination.
        let a = Identity(consumerId: "a2:bc", credentialId: "d", credentialKind: .apiKey)
        let b = Identity(consumerId: "a", credentialId: "bc2:d", credentialKind: .apiKey)
        XCTAssertNotEqual(a.rateLimitCredential, b.rateLimitCredential)
    }
}
