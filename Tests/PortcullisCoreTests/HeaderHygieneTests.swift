import XCTest
@testable import PortcullisCore

final class HeaderHygieneTests: XCTestCase {
    private let facts = ConnectionFacts(clientAddress: "10.1.2.3", scheme: "https", host: "api.example.com")

    func testHopByHopAndConnectionNamedHeadersAreStripped() {
        let incoming = HTTPHeaders([("Connection", "keep-alive, X-Secret"), ("X-Secret", "s"), ("Keep-Alive", "5"),
                                    ("TE", "trailers"), ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"),
                                    ("Proxy-Authorization", "Basic x"), ("Accept", "*/*")])
        let out = HeaderHygiene.upstreamRequestHeaders(incoming, facts: facts, requestId: "rid")
        XCTAssertEqual(out.fields.map(\.name), ["Accept", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-ID"])
    }

    func testForwardedHeadersComeFromNginxNotTheClient() {
        let incoming = HTTPHeaders([("X-Forwarded-For", "6.6.6.6"), ("x-forwarded-proto", "gopher"), ("X-Real-IP", "6.6.6.6"),
                                    ("Forwarded", "for=6.6.6.6"), ("X-Request-ID", "client")])
        let out = HeaderHygiene.upstreamRequestHeaders(incoming, facts: facts, requestId: "rid")
        XCTAssertEqual(out.values("X-Forwarded-For"), ["10.1.2.3"])
        XCTAssertEqual(out.values("X-Forwarded-Proto"), ["https"])
        XCTAssertEqual(out["X-Forwarded-Host"], "api.example.com")
        XCTAssertEqual(out.values("X-Request-ID"), ["rid"])
        XCTAssertFalse(out.contains("X-Real-IP"))
        XCTAssertFalse(out.contains("Forwarded"))
    }

    func testResponseHopByHopStripped() {
        let upstream = HTTPHeaders([("Connection", "X-Hop"), ("X-Hop", "leak"), ("Keep-Alive", "timeout=5"),
                                    ("Content-Type", "application/json"), ("Status", "200")])
        XCTAssertEqual(HeaderHygiene.downstreamResponseHeaders(upstream).fields.map(\.name), ["Content-Type"])
    }

    func testUnsafeHeaderValues() {
        XCTAssertTrue(HeaderHygiene.isSafeHeaderValue("plain value\twith tab"))
        XCTAssertFalse(HeaderHygiene.isSafeHeaderValue("a\r\nSet-Cookie: x"))
        XCTAssertFalse(HeaderHygiene.isSafeHeaderValue("nul\u{0}"))
        XCTAssertTrue(HeaderHygiene.isToken("X-Custom_1"))
        XCTAssertFalse(HeaderHygiene.isToken("Bad Header"))
    }

    /// The word-at-a-time check agrees with the byte-wise rule for every byte value at every
    /// position of values that span several words (tab allowed, other controls and DEL not).
    func testSafeHeaderValueForEveryByteAtEveryPosition() {
        let filler = Array("abcdefghijklmnopqrst\u{e9}".utf8)
        for byte in 0...255 {
            let b = UInt8(byte)
            let expected = !((b < 0x20 && b != 0x09) || b == 0x7F)
            for position in 0..<filler.count {
                var value = filler
                value[position] = b
                let got = value.withUnsafeBufferPointer { HeaderHygiene.isSafeHeaderValue($0) }
                XCTAssertEqual(got, expected, "byte \(b) at \(position)")
            }
        }
        XCTAssertTrue(HeaderHygiene.isSafeHeaderValue(""))
        XCTAssertTrue(HeaderHygiene.isSafeHeaderValue(String(repeating: "\t", count: 17)))
        XCTAssertFalse(HeaderHygiene.isSafeHeaderValue(String(repeating: "x", count: 16) + "\u{7F}"))
    }

    func testRequestIdAcceptance() {
        XCTAssertEqual(RequestID.choose(clientSupplied: "abc-123_x.y", nginxGenerated: "n"), "abc-123_x.y")
        XCTAssertEqual(RequestID.choose(clientSupplied: "bad id", nginxGenerated: "n"), "n")
        XCTAssertEqual(RequestID.choose(clientSupplied: String(repeating: "a", count: 129), nginxGenerated: "n"), "n")
        XCTAssertEqual(RequestID.choose(clientSupplied: String(repeating: "a", count: 128), nginxGenerated: "n").count, 128)
        XCTAssertEqual(RequestID.choose(clientSupplied: "", nginxGenerated: "n"), "n")
        XCTAssertEqual(RequestID.choose(clientSupplied: nil, nginxGenerated: "n"), "n")
    }

    func testProblemBodyCarriesRequestId() throws {
        let body = ProblemDetails.methodNotAllowed("POST", allowed: ["GET"]).body(requestId: "r-1")
        let json = try JSONCodec.parse(body)
        XCTAssertEqual(json["status"], .int(405))
        XCTAssertEqual(json["request_id"], "r-1")
        XCTAssertEqual(json["type"]?.stringValue?.hasSuffix("/method-not-allowed"), true)
        XCTAssertEqual(json["allowed"], ["GET"])
    }

    func testQueryAndPercentEncoding() {
        let request = GatewayRequest(method: "GET", path: "/", rawQuery: "a=1&b=x%20y&c+d=%2B&flag")
        XCTAssertEqual(request.queryValue("b"), "x y")
        XCTAssertEqual(request.queryValue("c d"), "+")
        XCTAssertEqual(request.queryValue("flag"), "")
        XCTAssertEqual(PercentEncoding.encode("/a b/ü?#", allowed: .path), "/a%20b/%C3%BC%3F%23")
    }

    func testConnectionTokensAreMatchedAsASetAnyCase() {
        var fields: [(String, String)] = (0..<900).map { ("X-H\($0)", "v") }
        let tokens = (0..<7000).map { "x-h\($0 * 2)" } + ["close", "Keep-Alive"]
        fields.append(("Connection", tokens.joined(separator: ", ")))
        fields.append(("Keep-Alive", "timeout=5"))
        var headers = HTTPHeaders(fields)
        HeaderHygiene.stripHopByHop(&headers)
        XCTAssertEqual(headers.count, 450, "every even X-H named by Connection goes, the odd ones stay")
        XCTAssertNil(headers["X-H0"])
        XCTAssertEqual(headers["X-H1"], "v")
        XCTAssertNil(headers["Connection"])
        XCTAssertNil(headers["keep-alive"])
    }

    func testNothingHopByHopLeavesHeadersUntouched() {
        var headers = HTTPHeaders([("Content-Type", "text/plain"), ("X-Close", "1")])
        HeaderHygiene.stripHopByHop(&headers)
        XCTAssertEqual(headers, HTTPHeaders([("Content-Type", "text/plain"), ("X-Close", "1")]))
    }

    /// The check names exactly the gateway-owned fields, every other `X-Forwarded-*` field and
    /// the client's framing.
    func testReplacedUpstreamIsGatewayOwnedEveryXForwardedPlusFraming() {
        let expected = HeaderHygiene.gatewayOwned.union(["content-length", "expect", "x-forwarded-prefix", "x-forwarded-ssl",
                                                         "x-forwarded-fox", "X-Forwarded-Prot", "x-forwarded-", "x-forwarded-é"])
        for name in expected {
            XCTAssertTrue(HeaderHygiene.isReplacedUpstream(name), name)
            XCTAssertTrue(HeaderHygiene.isReplacedUpstream(name.uppercased()), name)
        }
        for name in ["x-forwarded", "x-forwardedd-for", "forwarder", "x-request-i", "content-lengths", "expects", "", "x-real-ip2",
                     "y-forwarded-for", "x_forwarded_for"] {
            XCTAssertFalse(HeaderHygiene.isReplacedUpstream(name), name)
        }
    }

    /// Every byte: a token byte exactly when RFC 9110 lists it as `tchar`.
    func testTokenBytesAreRFC9110Tchar() {
        let tchar = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        for c in UInt8.min...UInt8.max {
            XCTAssertEqual(HeaderHygiene.isTokenByte(c), tchar.contains(c), "byte \(c)")
            XCTAssertEqual([c].withUnsafeBufferPointer { HeaderHygiene.isToken($0) }, tchar.contains(c), "byte \(c)")
        }
        XCTAssertFalse(HeaderHygiene.isToken(""))
        XCTAssertTrue(HeaderHygiene.isToken("X-Request-ID"))
        XCTAssertFalse(HeaderHygiene.isToken("X Request"))
    }
}
