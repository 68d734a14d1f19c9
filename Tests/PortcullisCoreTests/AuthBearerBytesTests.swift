import XCTest
@testable import PortcullisCore

/// The byte-level Bearer checks answer like the Character-level ones they short-cut.
final class AuthBearerBytesTests: XCTestCase {
    static let pieces = ["Bearer", "bearer", "BEARER ", " ", "\t", "bearer ", "Bearer\t", "tok", "a.b.c", "\u{301}", "\u{E9}",
                         "\r\n", "x", "Basic ", "bear"]

    /// Random `Authorization` values from pieces that matter at the scheme's edges.
    static func values(seed: UInt64, count: Int) -> [String] {
        var rng = SplitMix(seed: seed)
        return rng.texts(from: pieces, count: count)
    }

    /// The token as `bearerIdentity` finds it: on the bytes, or on Characters when they may differ.
    static func tokenOnBytes(_ value: String) -> String? {
        var value = value
        let found: Range<Int>?? = value.withUTF8 { Authenticator.bearerTokenRange($0) }
        switch found {
        case .some(.some(let range)): return String(decoding: Array(value.utf8)[range], as: UTF8.self)
        case .some(.none): return nil
        case .none: return Authenticator.bearerToken(value)
        }
    }

    func testTokenRangeAgreesWithCharacters() {
        for value in Self.values(seed: 11, count: 20_000) {
            XCTAssertEqual(Self.tokenOnBytes(value), Authenticator.bearerToken(value), value.debugDescription)
        }
        XCTAssertEqual(Self.tokenOnBytes("Bearer \t abc.def \t"), "abc.def")
        XCTAssertNil(Self.tokenOnBytes("Bearer \t "))
        XCTAssertNil(Self.tokenOnBytes("Bearer \u{301}abc"))  // the space and the accent are one Character
        XCTAssertNil(Authenticator.bearerToken("Bearer \u{301}abc"))
    }

    func testSchemeTestAgreesWithCharacters() {
        for value in Self.values(seed: 12, count: 20_000) {
            let characters = Authenticator.bearerToken(value) != nil || value.asciiLowercased.hasPrefix("bearer")
            XCTAssertEqual(Authenticator.namesBearerScheme(value), characters, value.debugDescription)
        }
        XCTAssertTrue(Authenticator.namesBearerScheme("BEARER"))
        XCTAssertFalse(Authenticator.namesBearerScheme("bearer\u{301} x"))
        XCTAssertFalse(Authenticator.namesBearerScheme("Basic abc"))
    }

    func testIdentityHeaderNames() {
        // The byte comparison covers exactly the published list.
        XCTAssertEqual(Set(Authenticator.identityHeaders.map { $0.lowercased() }),
                       ["x-consumer-id", "x-credential-id", "x-consumer-groups", "x-authenticated-scopes"])
        for name in Authenticator.identityHeaders {
            XCTAssertTrue(Authenticator.isIdentityHeader(name), name)
            XCTAssertTrue(Authenticator.isIdentityHeader(name.lowercased()), name)
            XCTAssertTrue(Authenticator.isIdentityHeader(name.uppercased()), name)
        }
        for name in ["", "X", "x-", "X-Consumer-I", "X-Consumer-IDs", "Y-Consumer-ID", "X_Consumer-ID", "Authorization",
                     "X-Request-ID", "X-Credential-Id\u{301}", "X-Forwarded-For", "X-Forwarded-Proto", "X-Consumer-Idx"] {
            XCTAssertFalse(Authenticator.isIdentityHeader(name), name)
        }
    }
}
