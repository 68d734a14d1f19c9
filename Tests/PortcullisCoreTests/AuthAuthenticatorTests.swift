import Foundation
import XCTest
@testable import PortcullisCore

final class AuthAuthenticatorTests: XCTestCase {
    static let keyA = "key-a-0123456789"
    static let keyB = "key-b-0123456789"
    static let keyOld = "key-old-0123456789"

    static func digest(_ key: String) -> KeyDigest { KeyDigest(hex: APIKeyMaterial.digestHex(key))! }

    static let consumers = [
        Consumer(id: "acme", name: "Acme", groups: ["partners"], scopes: ["orders:read"],
                 apiKeys: [APIKeyCredential(id: "acme-2026", digest: digest(keyA)),
                           APIKeyCredential(id: "acme-2027", digest: digest(keyB)),
                           APIKeyCredential(id: "acme-2025", digest: digest(keyOld), expires: testNow)],
                 certificates: [CertificateCredential(id: "acme-cert", match: .sha256Fingerprint(String(repeating: "ab", count: 32))),
                                CertificateCredential(id: "acme-dn", match: .subjectDN("CN=acme,O=Acme"))]),
        Consumer(id: "alice", groups: ["staff"]),
    ]

    func makeAuth(queryParam: String? = nil) -> Authenticator {
        var issuer = JWTIssuerConfig(issuer: "https://issuer.test", audiences: ["portcullis"], keys: [TestTokens.key(.hs256)])
        issuer.requiredClaims = ["exp"]
        return Authenticator(settings: AuthSettings(apiKey: APIKeySettings(header: "X-API-Key", queryParam: queryParam),
                                                    jwt: JWTSettings(issuers: [issuer])),
                             consumers: Self.consumers)
    }

    func request(_ headers: [(String, String)] = [], query: String = "", cert: ClientCertificateFacts? = nil) -> GatewayRequest {
        var r = GatewayRequest(method: "GET", path: "/private/x", rawQuery: query, headers: HTTPHeaders(headers))
        r.clientCertificate = cert
        return r
    }

    func problem(_ outcome: AuthOutcome, file: StaticString = #filePath, line: UInt = #line) -> ProblemDetails? {
        if case .rejected(let p) = outcome { return p }
        XCTFail("expected a rejection, got \(outcome)", file: file, line: line)
        return nil
    }

    func testSeveralAPIKeysPerConsumerAndExpiry() {
        let auth = makeAuth()
        let policy = RouteAuthPolicy(methods: [.apiKey])
        for (key, id) in [(Self.keyA, "acme-2026"), (Self.keyB, "acme-2027")] {
            let identity = auth.authenticate(request([("x-api-key", key)]), policy: policy, now: testNow).identity
            XCTAssertEqual(identity?.consumerId, "acme")
            XCTAssertEqual(identity?.credentialId, id)
            XCTAssertEqual(identity?.credentialKind, .apiKey)
            XCTAssertEqual(identity?.groups, ["partners"])
        }
        XCTAssertEqual(auth.authenticate(request([("X-API-Key", Self.keyOld)]), policy: policy, now: testNow - 1).identity?.credentialId, "acme-2025")
        let expired = problem(auth.authenticate(request([("X-API-Key", Self.keyOld)]), policy: policy, now: testNow))
        XCTAssertEqual(expired?.status, 401)
        XCTAssertEqual(expired?.detail, "the API key has expired")
        let unknown = problem(auth.authenticate(request([("X-API-Key", "guess")]), policy: policy, now: testNow))
        XCTAssertEqual(unknown?.status, 401)
        XCTAssertEqual(unknown?.headers["WWW-Authenticate"],
                       #"Bearer realm="portcullis", error="invalid_token", error_description="the API key is not valid""#)
        XCTAssertFalse(JSONCodec.serialize(.object(unknown!.extensions)).contains("guess"))
        XCTAssertFalse(String(decoding: unknown!.body(requestId: "r"), as: UTF8.self).contains("guess"))
    }

    func testQueryParameterIsOffByDefault() {
        let policy = RouteAuthPolicy(methods: [.apiKey])
        XCTAssertEqual(problem(makeAuth().authenticate(request(query: "api_key=\(Self.keyA)"), policy: policy, now: testNow))?.type,
                       "https://portcullis.dev/problems/authentication-required")
        let withQuery = makeAuth(queryParam: "api_key")
        XCTAssertEqual(withQuery.authenticate(request(query: "api_key=\(Self.keyA)"), policy: policy, now: testNow).identity?.consumerId, "acme")
        XCTAssertEqual(Authenticator.credentialQueryParameters(withQuery.settings), ["api_key"])
        XCTAssertEqual(Authenticator.credentialQueryParameters(makeAuth().settings), [])
    }

    func testNoCredentialAnonymousAndInvalidOnAnonymousRoute() {
        let auth = makeAuth()
        let none = problem(auth.authenticate(request(), policy: RouteAuthPolicy(), now: testNow))
        XCTAssertEqual(none?.status, 401)
        XCTAssertEqual(none?.headers["WWW-Authenticate"], #"Bearer realm="portcullis""#, "no error parameter without a credential")
        XCTAssertEqual(auth.authenticate(request(), policy: RouteAuthPolicy(anonymous: true), now: testNow), .anonymous)
        XCTAssertEqual(problem(auth.authenticate(request([("X-API-Key", "bad")]), policy: RouteAuthPolicy(anonymous: true), now: testNow))?.status, 401)
        // A credential of a kind the route does not accept is not looked at.
        let token = TestTokens.jwt(alg: .hs256, claims: claims())
        XCTAssertEqual(problem(auth.authenticate(request([("Authorization", "Bearer " + token)]), policy: RouteAuthPolicy(methods: [.apiKey]), now: testNow))?.headers["WWW-Authenticate"],
                       #"Bearer realm="portcullis""#)
    }

    func testBearerTokenAndSafeErrors() {
        let auth = makeAuth()
        let token = TestTokens.jwt(alg: .hs256, claims: claims(extra: [("scope", "orders:read orders:write")]))
        let identity = auth.authenticate(request([("authorization", "bearer " + token)]), policy: RouteAuthPolicy(), now: testNow).identity
        XCTAssertEqual(identity?.consumerId, "alice")
        XCTAssertEqual(identity?.groups, ["staff"], "groups come from the consumer named by the identity claim")
        XCTAssertEqual(identity?.credentialKind, .jwt)
        let tampered = token.dropLast(2) + "AA"
        let p = problem(auth.authenticate(request([("Authorization", "Bearer " + tampered)]), policy: RouteAuthPolicy(), now: testNow))
        XCTAssertEqual(p?.status, 401)
        XCTAssertEqual(p?.headers["WWW-Authenticate"],
                       #"Bearer realm="portcullis", error="invalid_token", error_description="the token signature is invalid""#)
        let body = String(decoding: p!.body(requestId: "req-1"), as: UTF8.self)
        XCTAssertTrue(body.contains("\"request_id\":\"req-1\""))
        XCTAssertFalse(body.contains(String(tampered.prefix(20))))
        // Basic credentials are not bearer tokens.
        XCTAssertEqual(problem(auth.authenticate(request([("Authorization", "Basic YTpi")]), policy: RouteAuthPolicy(methods: [.jwt]), now: testNow))?.headers["WWW-Authenticate"],
                       #"Bearer realm="portcullis""#)
    }

    func testScopesAndGroupsAnswer403() {
        let auth = makeAuth()
        let scoped = RouteAuthPolicy(methods: [.apiKey, .jwt], scopes: ["orders:read", "orders:write"])
        let p = problem(auth.authenticate(request([("X-API-Key", Self.keyA)]), policy: scoped, now: testNow))
        XCTAssertEqual(p?.status, 403)
        XCTAssertEqual(p?.headers["WWW-Authenticate"],
                       #"Bearer realm="portcullis", error="insufficient_scope", error_description="the credential lacks a required scope", scope="orders:read orders:write""#)
        let token = TestTokens.jwt(alg: .hs256, claims: claims(extra: [("scp", ["orders:write", "orders:read"])]))
        XCTAssertEqual(auth.authenticate(request([("Authorization", "Bearer " + token)]), policy: scoped, now: testNow).identity?.consumerId, "alice")
        let grouped = RouteAuthPolicy(methods: [.apiKey, .jwt], groups: ["partners"])
        XCTAssertEqual(auth.authenticate(request([("X-API-Key", Self.keyA)]), policy: grouped, now: testNow).identity?.consumerId, "acme")
        let forbidden = problem(auth.authenticate(request([("Authorization", "Bearer " + token)]), policy: grouped, now: testNow))
        XCTAssertEqual(forbidden?.status, 403)
        XCTAssertEqual(forbidden?.type, "https://portcullis.dev/problems/forbidden-group")
    }

    /// authentication.md: groups are checked before scopes, and a 403 for a scope names the
    /// route's scopes in the header and in `required_scopes`.
    func testGroupsAreCheckedBeforeScopesAndTheScopeAnswerNamesTheRequiredScopes() {
        let auth = makeAuth()
        let both = RouteAuthPolicy(methods: [.apiKey], scopes: ["admin"], groups: ["staff"])
        let p = problem(auth.authenticate(request([("X-API-Key", Self.keyA)]), policy: both, now: testNow))
        XCTAssertEqual(p?.type, "https://portcullis.dev/problems/forbidden-group")
        XCTAssertNil(p?.headers["WWW-Authenticate"])
        let scoped = RouteAuthPolicy(methods: [.apiKey], scopes: ["admin", "orders:read"])
        let s = problem(auth.authenticate(request([("X-API-Key", Self.keyA)]), policy: scoped, now: testNow))
        XCTAssertEqual(s?.type, "https://portcullis.dev/problems/insufficient-scope")
        XCTAssertEqual(s?.extensions["required_scopes"], .array(["admin", "orders:read"]))
        XCTAssertEqual(s?.headers["WWW-Authenticate"]?.hasSuffix(#"scope="admin orders:read""#), true)
    }

    /// authentication.md: with `audiences` configured a token without `aud` is refused, and
    /// `scp` as a string is split on spaces like `scope`.
    func testMissingAudienceIsRefusedAndScpStringIsSpaceSeparated() {
        let auth = makeAuth()
        let policy = RouteAuthPolicy(methods: [.jwt])
        let noAud = TestTokens.jwt(alg: .hs256, claims: .object(JSONObject([("iss", "https://issuer.test"), ("sub", "alice"),
                                                                             ("exp", .int(testNow + 600))])))
        XCTAssertEqual(problem(auth.authenticate(request([("Authorization", "Bearer " + noAud)]), policy: policy, now: testNow))?.detail,
                       "the token lacks the required claim aud")
        let scp = TestTokens.jwt(alg: .hs256, claims: claims(extra: [("scp", "a b")]))
        XCTAssertEqual(auth.authenticate(request([("Authorization", "Bearer " + scp)]), policy: policy, now: testNow).identity?.scopes, ["a", "b"])
    }

    func testClientCertificates() {
        let auth = makeAuth()
        let policy = RouteAuthPolicy(methods: [.mtls])
        let fp = String(repeating: "AB:", count: 31) + "AB"
        XCTAssertEqual(auth.authenticate(request(cert: .init(verify: "SUCCESS", fingerprint: fp, subjectDN: nil)), policy: policy, now: testNow).identity?.credentialId, "acme-cert")
        XCTAssertEqual(auth.authenticate(request(cert: .init(verify: "SUCCESS", fingerprint: nil, subjectDN: "CN=acme,O=Acme")), policy: policy, now: testNow).identity?.credentialId, "acme-dn")
        XCTAssertEqual(problem(auth.authenticate(request(cert: .init(verify: "FAILED:unable to verify", fingerprint: fp, subjectDN: nil)), policy: policy, now: testNow))?.detail,
                       "the client certificate was not verified")
        XCTAssertEqual(problem(auth.authenticate(request(cert: .init(verify: "SUCCESS", fingerprint: String(repeating: "cd", count: 32), subjectDN: "CN=x")), policy: policy, now: testNow))?.detail,
                       "the client certificate is not assigned to a consumer")
        XCTAssertEqual(problem(auth.authenticate(request(cert: .init(verify: "NONE", fingerprint: nil, subjectDN: nil)), policy: policy, now: testNow))?.headers["WWW-Authenticate"],
                       #"Bearer realm="portcullis""#)
        // Headers a client sends can never stand in for nginx's facts.
        let spoofed = request([("X-SSL-Client-Verify", "SUCCESS"), ("X-SSL-Client-Fingerprint", fp), ("PORTCULLIS_SSL_CLIENT_VERIFY", "SUCCESS"),
                               ("Ssl-Client-S-Dn", "CN=acme,O=Acme")])
        XCTAssertEqual(problem(auth.authenticate(spoofed, policy: policy, now: testNow))?.status, 401)
    }

    func testCertificateFingerprintFromPEM() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/auth")
        let pem = try String(contentsOf: dir.appendingPathComponent("client-cert.pem"), encoding: .utf8)
        let expected = try String(contentsOf: dir.appendingPathComponent("client-cert.sha256"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(CertificateFingerprint.sha256Hex(pem: pem), expected)
        // nginx's $ssl_client_cert indents continuation lines with a tab.
        let nginxStyle = pem.split(separator: "\n").enumerated().map { $0.offset == 0 ? String($0.element) : "\t" + $0.element }.joined(separator: "\n")
        XCTAssertEqual(CertificateFingerprint.sha256Hex(pem: nginxStyle), expected)
        XCTAssertNil(CertificateFingerprint.sha256Hex(pem: "not a certificate"))
    }

    func testUpstreamHeadersStripCredentialsAndSpoofedIdentity() {
        let settings = makeAuth().settings
        var headers = HTTPHeaders([("Authorization", "Bearer abc.def.ghi"), ("X-API-Key", "secret"), ("x-consumer-id", "admin"),
                                   ("X-Consumer-Groups", "root"), ("X-Credential-ID", "x"), ("X-Authenticated-Scopes", "all"), ("Accept", "*/*")])
        let identity = Identity(consumerId: "acme", groups: ["partners", "beta"], credentialId: "acme-2026", credentialKind: .apiKey, scopes: ["a", "b"])
        Authenticator.upstreamHeaders(&headers, identity: identity, settings: settings, policy: RouteAuthPolicy())
        XCTAssertEqual(headers.fields.map(\.name), ["Accept", "X-Consumer-ID", "X-Consumer-Groups", "X-Credential-ID", "X-Authenticated-Scopes"])
        XCTAssertEqual(headers["x-consumer-id"], "acme")
        XCTAssertEqual(headers["x-consumer-groups"], "partners,beta")
        XCTAssertEqual(headers["x-authenticated-scopes"], "a b")
        // Routes without auth keep the client's Authorization (the upstream may use it) but never its identity headers.
        var open = HTTPHeaders([("Authorization", "Basic YTpi"), ("X-Consumer-ID", "admin")])
        Authenticator.upstreamHeaders(&open, identity: nil, settings: settings, policy: nil)
        XCTAssertEqual(open.fields.map(\.name), ["Authorization"])
        // Routes without auth pass the key header and a Bearer token on; routes with auth pass
        // only other Authorization schemes.
        var unguarded = HTTPHeaders([("Authorization", "Bearer abc.def.ghi"), ("X-API-Key", "secret")])
        Authenticator.upstreamHeaders(&unguarded, identity: nil, settings: settings, policy: nil)
        XCTAssertEqual(unguarded.fields.map(\.name), ["Authorization", "X-API-Key"])
        var basic = HTTPHeaders([("Authorization", "Basic YTpi"), ("X-API-Key", "secret")])
        Authenticator.upstreamHeaders(&basic, identity: identity, settings: settings, policy: RouteAuthPolicy())
        XCTAssertEqual(basic["authorization"], "Basic YTpi")
        XCTAssertNil(basic["x-api-key"])
    }
}
