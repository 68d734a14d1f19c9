import Crypto
import _CryptoExtras
@testable import PortcullisCore

/// Makes signed test tokens with swift-crypto; private keys are generated in the test run.
enum TestKeys {
    static let rsa = try! _RSA.Signing.PrivateKey(keySize: .bits2048)
    static let p256 = P256.Signing.PrivateKey()
    static let p384 = P384.Signing.PrivateKey()
    static let p521 = P521.Signing.PrivateKey()
    static let ed25519 = Curve25519.Signing.PrivateKey()
    static let secret = Array("test-hs256-secret-0123456789-abcdefghijkl".utf8)
    static let secret512 = Array(String(repeating: "0123456789abcdef", count: 4).utf8)

    static func rsaJWK(kid: String, alg: String) -> JSONObject {
        let p = try! rsa.publicKey.getKeyPrimitives()
        return JSONObject([("kty", "RSA"), ("kid", .string(kid)), ("alg", .string(alg)), ("use", "sig"),
                           ("n", .string(Base64URL.encode(Array(p.modulus)))), ("e", .string(Base64URL.encode(Array(p.publicExponent))))])
    }
}

enum TestTokens {
    static func segment(_ json: String) -> String { Base64URL.encode(Array(json.utf8)) }

    static func segment(_ value: JSONValue) -> String { Base64URL.encode(JSONCodec.serializeBytes(value)) }

    /// `header.payload` signed with `alg` by the matching test key.
    static func sign(header: String, payload: String, alg: JWSAlgorithm) -> String {
        let input = header + "." + payload
        let data = Array(input.utf8)
        let signature: [UInt8]
        switch alg {
        case .hs256: signature = Array(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: TestKeys.secret)))
        case .hs384: signature = Array(HMAC<SHA384>.authenticationCode(for: data, using: SymmetricKey(data: TestKeys.secret512)))
        case .hs512: signature = Array(HMAC<SHA512>.authenticationCode(for: data, using: SymmetricKey(data: TestKeys.secret512)))
        case .rs256: signature = Array(try! TestKeys.rsa.signature(for: SHA256.hash(data: data), padding: .insecurePKCS1v1_5).rawRepresentation)
        case .rs384: signature = Array(try! TestKeys.rsa.signature(for: SHA384.hash(data: data), padding: .insecurePKCS1v1_5).rawRepresentation)
        case .rs512: signature = Array(try! TestKeys.rsa.signature(for: SHA512.hash(data: data), padding: .insecurePKCS1v1_5).rawRepresentation)
        case .ps256: signature = Array(try! TestKeys.rsa.signature(for: SHA256.hash(data: data), padding: .PSS).rawRepresentation)
        case .ps384: signature = Array(try! TestKeys.rsa.signature(for: SHA384.hash(data: data), padding: .PSS).rawRepresentation)
        case .ps512: signature = Array(try! TestKeys.rsa.signature(for: SHA512.hash(data: data), padding: .PSS).rawRepresentation)
        case .es256: signature = Array(try! TestKeys.p256.signature(for: SHA256.hash(data: data)).rawRepresentation)
        case .es384: signature = Array(try! TestKeys.p384.signature(for: SHA384.hash(data: data)).rawRepresentation)
        case .es512: signature = Array(try! TestKeys.p521.signature(for: SHA512.hash(data: data)).rawRepresentation)
        case .edDSA: signature = Array(try! TestKeys.ed25519.signature(for: data))
        }
        return input + "." + Base64URL.encode(signature)
    }

    static func jwt(alg: JWSAlgorithm, kid: String? = nil, claims: JSONValue, extraHeader: [(String, JSONValue)] = []) -> String {
        var header = JSONObject([("alg", .string(alg.rawValue))])
        if let kid { header["kid"] = .string(kid) }
        for (k, v) in extraHeader { header[k] = v }
        return sign(header: segment(.object(header)), payload: segment(claims), alg: alg)
    }

    /// The verification key matching `alg`'s test key.
    static func key(_ alg: JWSAlgorithm, kid: String? = nil) -> VerificationKey {
        switch alg {
        case .hs256: return try! .secret(TestKeys.secret, algorithm: alg, kid: kid)
        case .hs384, .hs512: return try! .secret(TestKeys.secret512, algorithm: alg, kid: kid)
        case .rs256, .rs384, .rs512, .ps256, .ps384, .ps512: return try! .pem(TestKeys.rsa.publicKey.pemRepresentation, algorithm: alg, kid: kid)
        case .es256: return try! .pem(TestKeys.p256.publicKey.pemRepresentation, algorithm: alg, kid: kid)
        case .es384: return try! .pem(TestKeys.p384.publicKey.pemRepresentation, algorithm: alg, kid: kid)
        case .es512: return try! .pem(TestKeys.p521.publicKey.pemRepresentation, algorithm: alg, kid: kid)
        case .edDSA: return try! .pem(TestKeys.ed25519.publicKey.pemRepresentation, algorithm: alg, kid: kid)
        }
    }
}

extension Authenticator {
    /// An authenticator with one issuer `iss`/`aud` over `keys`, for tests.
    static func testing(keys: [VerificationKey], leeway: Int64 = 30, required: [String] = ["exp"],
                        consumers: [Consumer] = [], source: JWKSKeyStore? = nil, cacheEntries: Int = 100) -> Authenticator {
        var issuer = JWTIssuerConfig(issuer: "https://issuer.test", audiences: ["portcullis"], keys: keys, leewaySeconds: leeway,
                                     requiredClaims: required)
        var sources: [String: any JWKSSource] = [:]
        if let source {
            issuer.jwksURL = "http://idp.test/jwks"
            sources["http://idp.test/jwks"] = source
        }
        let settings = AuthSettings(jwt: JWTSettings(issuers: [issuer], cacheEntries: cacheEntries, cacheTTLSeconds: 300))
        return Authenticator(settings: settings, consumers: consumers, jwksSources: sources)
    }
}

let testNow: Int64 = 1_800_000_000

func claims(sub: String = "alice", exp: Int64? = testNow + 600, nbf: Int64? = nil, aud: JSONValue = "portcullis",
            iss: String = "https://issuer.test", extra: [(String, JSONValue)] = []) -> JSONValue {
    var o = JSONObject([("iss", .string(iss)), ("sub", .string(sub)), ("aud", aud)])
    if let exp { o["exp"] = .int(exp) }
    if let nbf { o["nbf"] = .int(nbf) }
    for (k, v) in extra { o[k] = v }
    return .object(o)
}

enum HMACHelper {
    /// base64url HMAC-SHA256 of `input`, as a tutorial's token tool would produce.
    static func sha256(_ input: String, _ secret: [UInt8]) -> String {
        Base64URL.encode(Array(HMAC<SHA256>.authenticationCode(for: Array(input.utf8), using: SymmetricKey(data: secret))))
    }
}
