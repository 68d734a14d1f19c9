import Foundation
import XCTest
@testable import PortcullisCore

final class AuthConfigTests: XCTestCase {
    static let configDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("config").path

    func parse(_ json: String, file: String = "t.json") -> Result<GatewayConfig, ConfigErrors> {
        do { return .success(try ConfigLoader.parse(bytes: Array(json.utf8), file: file)) } catch { return .failure(error) }
    }

    func issues(_ json: String) -> [String] {
        if case .failure(let e) = parse(json) { return e.issues.map { "\($0.pointer): \($0.message)" } }
        return []
    }

    static let base = #""upstreams": {"echo": {"targets": ["http://127.0.0.1:9000"]}}"#

    /// The demo configuration's auth part (issue 3 contract), read against config/demo-jwks.json.
    static let demo = #"""
    {
      "upstreams": {"echo": {"targets": ["http://127.0.0.1:9000"]}},
      "consumers": [
        {"id": "demo", "name": "Demo consumer", "groups": ["demo"],
         "api_keys": [{"id": "demo-key", "sha256": "090d1548c9d65f413a1a2c828a0bee3a7ae02d2137caf51e6029e6c3cb1f1fa4"}]}
      ],
      "auth": {
        "api_key": {"header": "X-API-Key", "query_param": null},
        "jwt": {"issuers": [
          {"issuer": "portcullis-demo", "audiences": ["portcullis"],
           "keys": [{"secret": "demo-hs256-secret-change-me-0123456789", "alg": "HS256", "kid": "demo-hs256"}],
           "jwks_file": "demo-jwks.json"}
        ]}
      },
      "routes": [
        {"name": "private", "match": {"prefix": "/private/"}, "upstream": "echo", "auth": {"methods": ["api_key", "jwt"]}}
      ]
    }
    """#

    func testDemoConfigParsesAndAuthenticates() throws {
        let config = try ConfigLoader.parse(bytes: Array(Self.demo.utf8), file: Self.configDir + "/portcullis.json", files: FixtureFiles())
        XCTAssertEqual(config.routes[0].auth, RouteAuthPolicy(methods: [.apiKey, .jwt]))
        XCTAssertEqual(config.auth.jwt.issuers[0].keys.map(\.kid), ["demo-hs256", "demo-rs256"])
        let auth = Authenticator(config: config)
        let policy = try XCTUnwrap(config.routes[0].auth)
        let byKey = GatewayRequest(method: "GET", path: "/private/", headers: HTTPHeaders([("X-API-Key", "demo-key-change-me")]))
        XCTAssertEqual(auth.authenticate(byKey, policy: policy, now: testNow).identity?.consumerId, "demo")
        // An HS256 demo token made the way a tutorial reader would.
        let secret = Array("demo-hs256-secret-change-me-0123456789".utf8)
        let input = TestTokens.segment(#"{"alg":"HS256","typ":"JWT"}"#) + "." + TestTokens.segment(#"{"iss":"portcullis-demo","aud":"portcullis","sub":"demo","exp":\#(testNow + 60)}"#)
        let mac = HMACHelper.sha256(input, secret)
        let byToken = GatewayRequest(method: "GET", path: "/private/", headers: HTTPHeaders([("Authorization", "Bearer " + input + "." + mac)]))
        XCTAssertEqual(auth.authenticate(byToken, policy: policy, now: testNow).identity?.consumerId, "demo")
    }

    func testEveryErrorHasAPointer() {
        let found = issues(#"""
        {\#(Self.base),
         "consumers": [
           {"id": "a", "api_keys": [{"id": "k1", "sha256": "zz"}, {"id": "k2", "sha256": "090d1548c9d65f413a1a2c828a0bee3a7ae02d2137caf51e6029e6c3cb1f1fa4", "expires": "next week"}]},
           {"id": "a", "api_keys": [{"id": "k3", "sha256": "090D1548C9D65F413A1A2C828A0BEE3A7AE02D2137CAF51E6029E6C3CB1F1FA4"}],
            "certificates": [{"sha256_fingerprint": "12"}, {"subject_dn": "CN=x", "sha256_fingerprint": "ab"}], "colour": "red"}
         ],
         "auth": {"api_key": {"header": "X API"},
                  "jwt": {"issuers": [
                     {"issuer": "i", "keys": [{"secret": "short", "alg": "HS256"}, {"pem": "-----BEGIN PUBLIC KEY-----", "alg": "HS256"},
                                              {"kty": "RSA", "alg": "HS256", "n": "AQAB", "e": "AQAB"}, {"secret": "x", "alg": "none"}],
                      "jwks_file": "missing.json", "jwks_url": "ftp://x"},
                     {"issuer": "i", "keys": []}]}},
         "routes": [{"match": {"prefix": "/"}, "upstream": "echo", "auth": {"methods": ["api_key", "basic"], "scopes": ["a b"]}},
                    {"match": {"prefix": "/j"}, "upstream": "echo", "auth": {"methods": ["jwt"], "groups": ["g"], "extra": 1}}]}
        """#)
        let expected = [
            "/consumers/0/api_keys/0/sha256: expected 64 hexadecimal characters",
            "/consumers/0/api_keys/1/expires: expected an RFC 3339 time",
            "/consumers/1/id: duplicate consumer id \"a\"",
            "/consumers/1/api_keys/0/sha256: duplicate API key digest",
            "/consumers/1/certificates/0/sha256_fingerprint: expected a SHA-256 fingerprint",
            "/consumers/1/certificates/1: give either",
            "/consumers/1/colour: unknown field",
            "/auth/api_key/header: \"X API\" is not a valid header name",
            "/auth/jwt/issuers/0/keys/0/alg: HS256 needs a secret of at least 32 bytes",
            "/auth/jwt/issuers/0/keys/1/alg: a PEM public key cannot be used with HS256",
            "/auth/jwt/issuers/0/keys/2: JWK \"kty\" \"RSA\" does not fit \"alg\" HS256",
            "/auth/jwt/issuers/0/keys/3/alg: unsupported algorithm \"none\"",
            "/auth/jwt/issuers/0/jwks_file: cannot read",
            "/auth/jwt/issuers/0/jwks_url: expected an http:// or https:// URL",
            "/auth/jwt/issuers/1/issuer: duplicate issuer \"i\"",
            "/routes/0/auth/methods/1: unknown method \"basic\"",
            "/routes/0/auth/scopes/0: invalid scope name",
            "/routes/1/auth/extra: unknown field",
        ]
        for e in expected {
            XCTAssertTrue(found.contains { $0.hasPrefix(e) }, "missing: \(e)\nfound:\n\(found.joined(separator: "\n"))")
        }
    }

    func testRouteWithoutAuthAndPolicyDefaults() throws {
        let config = try parse(#"{\#(Self.base), "routes": [{"match": {"prefix": "/echo/"}, "upstream": "echo"}, {"match": {"prefix": "/p/"}, "upstream": "echo", "auth": {"anonymous": true}}]}"#).get()
        XCTAssertNil(config.routes[0].auth)
        XCTAssertEqual(config.routes[1].auth, RouteAuthPolicy(methods: [.apiKey, .jwt, .mtls], anonymous: true))
        XCTAssertTrue(config.consumers.isEmpty)
        XCTAssertEqual(config.auth.apiKey, APIKeySettings())
    }

    func testJWTOnlyRouteNeedsAnIssuer() {
        XCTAssertTrue(issues(#"{\#(Self.base), "routes": [{"match": {"prefix": "/"}, "upstream": "echo", "auth": {"methods": ["jwt"]}}]}"#)
            .contains { $0.hasPrefix("/routes/0/auth/methods: the route accepts only \"jwt\" but no issuer") })
    }

    func testExpiryFormats() throws {
        XCTAssertEqual(RFC3339.parse("1970-01-01T00:00:00Z"), 0)
        XCTAssertEqual(RFC3339.parse("2027-01-01T00:00:00Z"), 1_798_761_600)
        XCTAssertEqual(RFC3339.parse("2027-01-01T01:00:00.5+01:00"), 1_798_761_600)
        XCTAssertEqual(RFC3339.parse("2024-02-29T12:00:00Z"), 1_709_208_000)
        XCTAssertNil(RFC3339.parse("2023-02-29T12:00:00Z"))
        XCTAssertNil(RFC3339.parse("2027-01-01 00:00:00"))
        let config = try parse(#"{\#(Self.base), "routes": [], "consumers": [{"id": "c", "api_keys": [{"id": "a", "sha256": "\#(String(repeating: "1", count: 64))", "expires": "2027-01-01T00:00:00Z"}, {"id": "b", "sha256": "\#(String(repeating: "2", count: 64))", "expires": 1798761600}]}]}"#).get()
        XCTAssertEqual(config.consumers[0].apiKeys.map(\.expires), [1_798_761_600, 1_798_761_600])
    }

    func testGeneratedKeysAreRandomAndHashAsConfigured() {
        let a = APIKeyMaterial.generate(), b = APIKeyMaterial.generate()
        XCTAssertNotEqual(a, b)
        XCTAssertEqual(a.utf8.count, 43)
        XCTAssertEqual(Base64URL.decode(a)?.count, 32)
        XCTAssertEqual(APIKeyMaterial.digestHex("demo-key-change-me"), "090d1548c9d65f413a1a2c828a0bee3a7ae02d2137caf51e6029e6c3cb1f1fa4")
    }
}
