import Crypto
import XCTest
@testable import PortcullisCore

/// Records every call, to prove the verifier never asks for keys it should not.
final class SpySource: JWKSSource, @unchecked Sendable {
    var keys: [VerificationKey]
    var unknownKidNotes = 0
    init(keys: [VerificationKey]) { self.keys = keys }
    func currentKeys() -> [VerificationKey] { keys }
    func noteUnknownKid(now: Int64) { unknownKidNotes += 1 }
}

final class AuthJWTAttackTests: XCTestCase {
    func verify(_ token: String, _ auth: Authenticator, now: Int64 = testNow) -> Result<Identity, TokenError> {
        auth.verifyToken(Array(token.utf8), now: now)
    }

    func assertRejected(_ token: String, _ auth: Authenticator, _ expected: TokenError? = nil, now: Int64 = testNow,
                        file: StaticString = #filePath, line: UInt = #line) {
        switch verify(token, auth, now: now) {
        case .success: XCTFail("token accepted", file: file, line: line)
        case .failure(let error): if let expected { XCTAssertEqual(error, expected, file: file, line: line) }
        }
    }

    func testEveryAlgorithmRoundTrips() throws {
        for alg in JWSAlgorithm.allCases {
            let auth = Authenticator.testing(keys: [TestTokens.key(alg, kid: "k1")])
            let token = TestTokens.jwt(alg: alg, kid: "k1", claims: claims(extra: [("scope", "read write")]))
            let identity = try verify(token, auth).get()
            XCTAssertEqual(identity.consumerId, "alice", alg.rawValue)
            XCTAssertEqual(identity.scopes, ["read", "write"])
            XCTAssertEqual(identity.credentialId, "k1")
            XCTAssertEqual(identity.claims["sub"], "alice")
            // Without kid, the key of the matching algorithm is tried.
            XCTAssertNoThrow(try verify(TestTokens.jwt(alg: alg, claims: claims()), auth).get(), alg.rawValue)
        }
    }

    func testAlgNoneInEveryCasingIsRejected() {
        let auth = Authenticator.testing(keys: [TestTokens.key(.hs256)])
        let payload = TestTokens.segment(claims())
        for name in ["none", "None", "NONE", "nOnE", "NoNe", "nonE"] {
            let header = TestTokens.segment(#"{"alg":"\#(name)"}"#)
            assertRejected(header + "." + payload + ".", auth)  // unsigned form
            assertRejected(header + "." + payload + ".c2ln", auth, .algorithmNone)
        }
    }

    func testHS256SignedWithTheRSAPublicKeyIsRejected() throws {
        let pem = TestKeys.rsa.publicKey.pemRepresentation
        let jwkBytes = JSONCodec.serializeBytes(.object(TestKeys.rsaJWK(kid: "rsa", alg: "RS256")))
        let auth = Authenticator.testing(keys: [try .pem(pem, algorithm: .rs256, kid: "rsa"), try .jwk(TestKeys.rsaJWK(kid: "rsa2", alg: "RS256"))])
        for secret in [Array(pem.utf8), Array(pem.utf8) + [0x0A], jwkBytes, Array(TestKeys.rsa.publicKey.derRepresentation)] {
            for kid in ["rsa", "rsa2", nil] {
                var header = JSONObject([("alg", "HS256")])
                if let kid { header["kid"] = .string(kid) }
                let input = TestTokens.segment(.object(header)) + "." + TestTokens.segment(claims())
                let mac = HMAC<SHA256>.authenticationCode(for: Array(input.utf8), using: SymmetricKey(data: secret))
                assertRejected(input + "." + Base64URL.encode(Array(mac)), auth, .unsupportedAlgorithm)
            }
        }
        // By construction: public-key material cannot become an HMAC key, nor a secret an RSA key.
        XCTAssertThrowsError(try VerificationKey.pem(pem, algorithm: .hs256, kid: nil))
        XCTAssertThrowsError(try VerificationKey.secret(Array(pem.utf8), algorithm: .rs256, kid: nil))
        var confused = TestKeys.rsaJWK(kid: "x", alg: "HS256")
        XCTAssertThrowsError(try VerificationKey.jwk(confused))
        confused["alg"] = nil
        XCTAssertThrowsError(try VerificationKey.jwk(confused), "a JWK without alg is refused")
    }

    func testAlgorithmMismatchWithTheKeyIsRejected() {
        let auth = Authenticator.testing(keys: [TestTokens.key(.rs256, kid: "k")])
        for alg in [JWSAlgorithm.ps256, .rs384, .rs512, .ps512] {
            assertRejected(TestTokens.jwt(alg: alg, kid: "k", claims: claims()), auth, .unsupportedAlgorithm)
        }
        assertRejected(TestTokens.sign(header: TestTokens.segment(#"{"alg":"RS1"}"#), payload: TestTokens.segment(claims()), alg: .rs256),
                       auth, .unsupportedAlgorithm)
    }

    func testKidTraversalAndInjectionFindNoKey() {
        let spy = SpySource(keys: [TestTokens.key(.es256, kid: "good")])
        let auth = Authenticator.testing(keys: [], source: JWKSKeyStore(keys: spy.keys))
        let spied = Authenticator(settings: auth.settings, consumers: [], jwksSources: ["http://idp.test/jwks": spy])
        for kid in ["../../../../etc/passwd", "/dev/null", "good/../good", "' OR '1'='1", "good\"; DROP TABLE keys;--",
                    "good\u{0}", "%2e%2e%2fetc", "*", "", String(repeating: "A", count: 4000)] {
            let token = TestTokens.jwt(alg: .es256, kid: kid, claims: claims())
            assertRejected(token, spied, .unknownKey)
            if case .failure(let e) = verify(token, spied) { XCTAssertFalse(e.description.contains(kid) && !kid.isEmpty && kid != "*") }
        }
        XCTAssertEqual(spy.unknownKidNotes, 20, "each unknown kid is reported to the source (which applies the cooldown)")
        XCTAssertNoThrow(try verify(TestTokens.jwt(alg: .es256, kid: "good", claims: claims()), spied).get())
    }

    func testEmbeddedKeyHeadersAreIgnoredAndNeverFetched() throws {
        let configured = TestTokens.key(.es256, kid: "k")
        let spy = SpySource(keys: [])
        var settings = Authenticator.testing(keys: [configured]).settings
        settings.jwt.issuers[0].jwksURL = "http://idp.test/jwks"
        let auth = Authenticator(settings: settings, consumers: [], jwksSources: ["http://idp.test/jwks": spy])
        // The attacker signs with their own key and ships it in the header.
        let attacker = P256.Signing.PrivateKey()
        let raw = Array(attacker.publicKey.rawRepresentation)
        let jwk: JSONValue = .object(JSONObject([("kty", "EC"), ("crv", "P-256"), ("alg", "ES256"),
                                                 ("x", .string(Base64URL.encode(raw[0..<32]))), ("y", .string(Base64URL.encode(raw[32...])))]))
        let header = TestTokens.segment(.object(JSONObject([("alg", "ES256"), ("kid", "k"), ("jwk", jwk),
                                                            ("jku", "http://127.0.0.1:9/jwks.json"), ("x5u", "http://127.0.0.1:9/cert.pem")])))
        let input = header + "." + TestTokens.segment(claims())
        let sig = try attacker.signature(for: SHA256.hash(data: Array(input.utf8))).rawRepresentation
        assertRejected(input + "." + Base64URL.encode(Array(sig)), auth, .badSignature)
        // A genuine token carrying the same headers verifies with the configured key only.
        let genuine = TestTokens.jwt(alg: .es256, kid: "k", claims: claims(),
                                     extraHeader: [("jku", "http://127.0.0.1:9/jwks.json"), ("x5u", "http://127.0.0.1:9/c.pem"), ("jwk", jwk)])
        XCTAssertNoThrow(try verify(genuine, auth).get())
        XCTAssertEqual(spy.unknownKidNotes, 0, "the key source was never asked to fetch anything")
    }

    func testStructuralAttacks() {
        let auth = Authenticator.testing(keys: [TestTokens.key(.hs256)])
        let good = TestTokens.jwt(alg: .hs256, claims: claims())
        let parts = good.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        XCTAssertNoThrow(try verify(good, auth).get())
        assertRejected(parts[0] + "." + parts[1] + ".", auth, .malformed("empty signature"))
        assertRejected(parts[0] + "." + parts[1], auth, .malformed("expected three segments"))
        assertRejected(good + "." + parts[2], auth, .malformed("expected three segments"))
        assertRejected(good + ".", auth, .malformed("expected three segments"))
        assertRejected("." + parts[1] + "." + parts[2], auth)
        assertRejected("", auth)
        assertRejected("...", auth)
    }

    func testES256WithRAndSZeroIsRejected() {
        let auth = Authenticator.testing(keys: [TestTokens.key(.es256)])
        let input = TestTokens.segment(#"{"alg":"ES256"}"#) + "." + TestTokens.segment(claims())
        assertRejected(input + "." + Base64URL.encode([UInt8](repeating: 0, count: 64)), auth, .badSignature)
        // DER-encoded or wrongly sized signatures are refused before any curve arithmetic.
        let good = TestTokens.jwt(alg: .es256, claims: claims())
        let sig = Base64URL.decode(String(good.split(separator: ".")[2]))!
        assertRejected(input + "." + Base64URL.encode(sig + [0]), auth, .badSignature)
        assertRejected(input + "." + Base64URL.encode(Array(sig.dropLast())), auth, .badSignature)
    }

    func testCritIsRejected() {
        let auth = Authenticator.testing(keys: [TestTokens.key(.hs256)])
        assertRejected(TestTokens.jwt(alg: .hs256, claims: claims(), extraHeader: [("crit", ["exp"]), ("exp", 1)]), auth, .unsupportedCritical)
        assertRejected(TestTokens.jwt(alg: .hs256, claims: claims(), extraHeader: [("crit", [])]), auth, .unsupportedCritical)
    }

    func testExpAndNbfAtTheEdgeOfTheLeeway() {
        let auth = Authenticator.testing(keys: [TestTokens.key(.hs256)], leeway: 30, required: [])
        let expired = TestTokens.jwt(alg: .hs256, claims: claims(exp: testNow - 30))
        let inside = TestTokens.jwt(alg: .hs256, claims: claims(exp: testNow - 29))
        XCTAssertNoThrow(try verify(inside, auth).get(), "one second inside the leeway")
        assertRejected(expired, auth, .expired)
        assertRejected(TestTokens.jwt(alg: .hs256, claims: claims(exp: testNow - 31)), auth, .expired)
        XCTAssertNoThrow(try verify(TestTokens.jwt(alg: .hs256, claims: claims(nbf: testNow + 30)), auth).get(), "nbf at the leeway")
        XCTAssertNoThrow(try verify(TestTokens.jwt(alg: .hs256, claims: claims(nbf: testNow + 29)), auth).get())
        assertRejected(TestTokens.jwt(alg: .hs256, claims: claims(nbf: testNow + 31)), auth, .notYetValid)
        assertRejected(TestTokens.jwt(alg: .hs256, claims: claims(extra: [("exp", "tomorrow")])), auth, .invalidClaim("exp"))
        // A cached token expires with its exp, not later.
        XCTAssertNoThrow(try verify(inside, auth, now: testNow).get())
        assertRejected(inside, auth, .expired, now: testNow + 1)
        // exp is required by default.
        let strict = Authenticator.testing(keys: [TestTokens.key(.hs256)])
        assertRejected(TestTokens.jwt(alg: .hs256, claims: claims(exp: nil)), strict, .missingClaim("exp"))
    }

    func testWrongIssuerAndAudience() {
        let auth = Authenticator.testing(keys: [TestTokens.key(.hs256)])
        assertRejected(TestTokens.jwt(alg: .hs256, claims: claims(iss: "https://evil.test")), auth, .untrustedIssuer)
        assertRejected(TestTokens.jwt(alg: .hs256, claims: claims(aud: "someone-else")), auth, .wrongAudience)
        assertRejected(TestTokens.jwt(alg: .hs256, claims: claims(aud: ["a", "b"])), auth, .wrongAudience)
        assertRejected(TestTokens.jwt(alg: .hs256, claims: claims(aud: 5)), auth, .invalidClaim("aud"))
        XCTAssertNoThrow(try verify(TestTokens.jwt(alg: .hs256, claims: claims(aud: ["a", "portcullis"])), auth).get())
        var noIss = claims().objectValue!
        noIss["iss"] = nil
        assertRejected(TestTokens.jwt(alg: .hs256, claims: .object(noIss)), auth, .missingClaim("iss"))
    }

    func testOversizedTokenIsRejectedBeforeParsing() {
        let auth = Authenticator.testing(keys: [TestTokens.key(.hs256)])
        let big = TestTokens.jwt(alg: .hs256, claims: claims(extra: [("pad", .string(String(repeating: "x", count: 100 * 1024)))]))
        XCTAssertGreaterThan(big.utf8.count, 100 * 1024)
        assertRejected(big, auth, .tooLarge)
        XCTAssertThrowsError(try ParsedJWS.parse(Array(big.utf8), maxBytes: 8192))
    }

    func testDuplicateKeysInHeaderOrClaimsAreRejected() {
        let auth = Authenticator.testing(keys: [TestTokens.key(.hs256)])
        let dupHeader = TestTokens.sign(header: TestTokens.segment(#"{"alg":"HS256","alg":"none"}"#), payload: TestTokens.segment(claims()), alg: .hs256)
        assertRejected(dupHeader, auth, .malformed("the header is not a JSON object"))
        let dupClaims = TestTokens.sign(header: TestTokens.segment(#"{"alg":"HS256"}"#),
                                        payload: TestTokens.segment(#"{"iss":"https://issuer.test","sub":"alice","sub":"admin","aud":"portcullis","exp":1900000000}"#),
                                        alg: .hs256)
        assertRejected(dupClaims, auth, .malformed("the claims are not a JSON object"))
    }

    func testBadBase64URLIsRejected() {
        let auth = Authenticator.testing(keys: [TestTokens.key(.hs256)])
        let good = TestTokens.jwt(alg: .hs256, claims: claims())
        let p = good.split(separator: ".").map(String.init)
        // Padded, standard-alphabet, whitespace and non-canonical spellings of each segment.
        let signature = p[2]
        for variant in [p[0] + "=." + p[1] + "." + signature, p[0] + "." + p[1] + "==." + signature, p[0] + "." + p[1] + "." + signature + "=",
                        p[0] + "." + p[1] + "." + signature.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/") + (signature.contains("-") || signature.contains("_") ? "" : "+"),
                        p[0] + " ." + p[1] + "." + signature, p[0] + "." + p[1] + ".\n" + signature, p[0] + "." + p[1] + "." + signature + "A"] {
            assertRejected(variant, auth)
        }
        XCTAssertNil(Base64URL.decode("QQ="))
        XCTAssertNil(Base64URL.decode("QR"), "non-zero unused bits")
        XCTAssertEqual(Base64URL.decode("QQ"), [0x41])
        XCTAssertNil(Base64URL.decode("Q"))
        XCTAssertNil(Base64URL.decode("a+b/"))
        XCTAssertEqual(Base64URL.encode([0xFB, 0xFF]), "-_8")
    }

    func testScopesFromScopeAndScp() throws {
        let auth = Authenticator.testing(keys: [TestTokens.key(.hs256)])
        XCTAssertEqual(try verify(TestTokens.jwt(alg: .hs256, claims: claims(extra: [("scp", ["a", "b"])])), auth).get().scopes, ["a", "b"])
        XCTAssertEqual(try verify(TestTokens.jwt(alg: .hs256, claims: claims(extra: [("scope", "x  y")])), auth).get().scopes, ["x", "y"])
        assertRejected(TestTokens.jwt(alg: .hs256, claims: claims(extra: [("scp", [1])])), auth, .invalidClaim("scp"))
        assertRejected(TestTokens.jwt(alg: .hs256, claims: claims(sub: "a\r\nX-Consumer-ID: admin")), auth, .invalidClaim("sub"))
    }

    func testCacheServesRepeatedTokensAndIsBounded() throws {
        let auth = Authenticator.testing(keys: [TestTokens.key(.rs256)], cacheEntries: 3)
        var tokens: [String] = []
        for i in 0..<5 { tokens.append(TestTokens.jwt(alg: .rs256, claims: claims(sub: "u\(i)"))) }
        for t in tokens { _ = try verify(t, auth).get() }
        XCTAssertEqual(auth.cache.count, 3, "FIFO eviction keeps the cache bounded")
        XCTAssertNotNil(auth.cache.lookup(Array(tokens[4].utf8), now: testNow))
        XCTAssertNil(auth.cache.lookup(Array(tokens[0].utf8), now: testNow))
        XCTAssertEqual(try verify(tokens[4], auth).get().consumerId, "u4")
        // Entries end at the earlier of exp (+leeway) and the TTL.
        XCTAssertNil(auth.cache.lookup(Array(tokens[4].utf8), now: testNow + 301))
    }

    func testJWKSStoreRotationAndRefetchCooldown() throws {
        let store = JWKSKeyStore(keys: [TestTokens.key(.rs256, kid: "old")], refetchCooldownSeconds: 10)
        let auth = Authenticator.testing(keys: [], source: store)
        let rotated = TestTokens.jwt(alg: .rs256, kid: "new", claims: claims())
        assertRejected(rotated, auth, .unknownKey)
        XCTAssertTrue(store.takeRefetchRequest())
        XCTAssertFalse(store.takeRefetchRequest())
        assertRejected(rotated, auth, .unknownKey, now: testNow + 5)
        XCTAssertFalse(store.takeRefetchRequest(), "within the cooldown no new refetch is requested")
        assertRejected(rotated, auth, .unknownKey, now: testNow + 10)
        XCTAssertTrue(store.takeRefetchRequest())
        store.replace(keys: [TestTokens.key(.rs256, kid: "new")])
        XCTAssertEqual(try verify(rotated, auth, now: testNow + 11).get().consumerId, "alice", "a new kid is accepted without restart")
    }

    func testJWKSetParsingSkipsUnusableKeys() throws {
        let p256 = Array(TestKeys.p256.publicKey.rawRepresentation)
        let ed = Array(TestKeys.ed25519.publicKey.rawRepresentation)
        let set: JSONValue = ["keys": [
            .object(TestKeys.rsaJWK(kid: "r", alg: "RS256")),
            ["kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "e", "x": .string(Base64URL.encode(p256[0..<32])), "y": .string(Base64URL.encode(p256[32...]))],
            ["kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": "o", "x": .string(Base64URL.encode(ed))],
            ["kty": "oct", "alg": "HS256", "kid": "s", "k": .string(Base64URL.encode(TestKeys.secret))],
            ["kty": "RSA", "alg": "RSA-OAEP", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB"],
            ["kty": "EC", "crv": "P-384", "alg": "ES256", "kid": "bad-curve", "x": "AA", "y": "AA"],
        ]]
        let (keys, problems) = VerificationKey.jwkSet(set)
        XCTAssertEqual(keys.map(\.kid), ["r", "e", "o", "s"])
        XCTAssertEqual(problems.count, 2)
        let auth = Authenticator.testing(keys: keys)
        for (alg, kid) in [(JWSAlgorithm.rs256, "r"), (.es256, "e"), (.edDSA, "o"), (.hs256, "s")] {
            XCTAssertNoThrow(try verify(TestTokens.jwt(alg: alg, kid: kid, claims: claims()), auth).get(), kid)
        }
        XCTAssertThrowsError(try VerificationKey.secret(Array("short".utf8), algorithm: .hs256, kid: nil))
    }
}
