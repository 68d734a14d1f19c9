import Crypto
import _CryptoExtras

/// The JWS algorithms the verifier supports (RFC 7518 §3, RFC 8037 for EdDSA). `none` is not
/// a case: it cannot be configured, so it can never match a key.
public enum JWSAlgorithm: String, Sendable, CaseIterable {
    case hs256 = "HS256", hs384 = "HS384", hs512 = "HS512"
    case rs256 = "RS256", rs384 = "RS384", rs512 = "RS512"
    case ps256 = "PS256", ps384 = "PS384", ps512 = "PS512"
    case es256 = "ES256", es384 = "ES384", es512 = "ES512"
    case edDSA = "EdDSA"

    /// The key type an algorithm needs; a key is built for exactly one family.
    public enum Family: String, Sendable { case hmac = "oct", rsa = "RSA", ec = "EC", okp = "OKP" }

    public var family: Family {
        switch self {
        case .hs256, .hs384, .hs512: return .hmac
        case .rs256, .rs384, .rs512, .ps256, .ps384, .ps512: return .rsa
        case .es256, .es384, .es512: return .ec
        case .edDSA: return .okp
        }
    }

    /// Minimum HMAC key length: RFC 7518 §3.2 requires at least the hash output size.
    public var minimumSecretBytes: Int {
        switch self {
        case .hs256: return 32
        case .hs384: return 48
        case .hs512: return 64
        default: return 0
        }
    }

    /// The JWK curve name of an EC algorithm.
    public var curve: String? {
        switch self {
        case .es256: return "P-256"
        case .es384: return "P-384"
        case .es512: return "P-521"
        case .edDSA: return "Ed25519"
        default: return nil
        }
    }

    public static var names: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

/// A key that verifies JWS signatures of exactly one algorithm. The algorithm is fixed when
/// the key is built from configuration or a JWKS, so a token cannot choose how it is checked:
/// an HMAC check with an RSA public key as the secret is impossible by construction, because
/// an RSA key is stored as `.rsa` and only ever reaches the RSA verifier.
public struct VerificationKey: Sendable {
    enum Material: Sendable {
        case hmac(SymmetricKey)
        case rsa(_RSA.Signing.PublicKey)
        case p256(P256.Signing.PublicKey)
        case p384(P384.Signing.PublicKey)
        case p521(P521.Signing.PublicKey)
        case ed25519(Curve25519.Signing.PublicKey)
    }

    /// Key id (`kid`), when the key has one.
    public let kid: String?
    public let algorithm: JWSAlgorithm
    let material: Material

    init(kid: String?, algorithm: JWSAlgorithm, material: Material) {
        self.kid = kid
        self.algorithm = algorithm
        self.material = material
    }

    /// Verifies `signature` over `signingInput` (the ASCII `header.payload`).
    public func verify(signature: [UInt8], signingInput: [UInt8]) -> Bool {
        switch (material, algorithm) {
        case (.hmac(let key), .hs256):
            return HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: signingInput, using: key)
        case (.hmac(let key), .hs384):
            return HMAC<SHA384>.isValidAuthenticationCode(signature, authenticating: signingInput, using: key)
        case (.hmac(let key), .hs512):
            return HMAC<SHA512>.isValidAuthenticationCode(signature, authenticating: signingInput, using: key)
        case (.rsa(let key), .rs256):
            return key.isValidSignature(.init(rawRepresentation: signature), for: SHA256.hash(data: signingInput), padding: .insecurePKCS1v1_5)
        case (.rsa(let key), .rs384):
            return key.isValidSignature(.init(rawRepresentation: signature), for: SHA384.hash(data: signingInput), padding: .insecurePKCS1v1_5)
        case (.rsa(let key), .rs512):
            return key.isValidSignature(.init(rawRepresentation: signature), for: SHA512.hash(data: signingInput), padding: .insecurePKCS1v1_5)
        case (.rsa(let key), .ps256):
            return key.isValidSignature(.init(rawRepresentation: signature), for: SHA256.hash(data: signingInput), padding: .PSS)
        case (.rsa(let key), .ps384):
            return key.isValidSignature(.init(rawRepresentation: signature), for: SHA384.hash(data: signingInput), padding: .PSS)
        case (.rsa(let key), .ps512):
            return key.isValidSignature(.init(rawRepresentation: signature), for: SHA512.hash(data: signingInput), padding: .PSS)
        case (.p256(let key), .es256):
            // JWS ECDSA signatures are R||S, exactly twice the field size (RFC 7518 §3.4).
            guard signature.count == 64, let sig = try? P256.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
            return key.isValidSignature(sig, for: SHA256.hash(data: signingInput))
        case (.p384(let key), .es384):
            guard signature.count == 96, let sig = try? P384.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
            return key.isValidSignature(sig, for: SHA384.hash(data: signingInput))
        case (.p521(let key), .es512):
            guard signature.count == 132, let sig = try? P521.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
            return key.isValidSignature(sig, for: SHA512.hash(data: signingInput))
        case (.ed25519(let key), .edDSA):
            guard signature.count == 64 else { return false }
            return key.isValidSignature(signature, for: signingInput)
        default:
            // Unreachable through the public constructors, which pair material and algorithm.
            return false
        }
    }
}

/// Why a key could not be built; the text is safe for config errors (it never repeats key bytes).
public struct KeyError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension VerificationKey {
    /// An HMAC key from a configured secret (its UTF-8 bytes).
    public static func secret(_ secret: [UInt8], algorithm: JWSAlgorithm, kid: String?) throws(KeyError) -> VerificationKey {
        guard algorithm.family == .hmac else { throw KeyError("a secret can only be used with HS256, HS384 or HS512, not \(algorithm.rawValue)") }
        guard secret.count >= algorithm.minimumSecretBytes else {
            throw KeyError("\(algorithm.rawValue) needs a secret of at least \(algorithm.minimumSecretBytes) bytes, found \(secret.count)")
        }
        return VerificationKey(kid: kid, algorithm: algorithm, material: .hmac(SymmetricKey(data: secret)))
    }

    /// A public key from PEM (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo) for an
    /// asymmetric algorithm.
    public static func pem(_ pem: String, algorithm: JWSAlgorithm, kid: String?) throws(KeyError) -> VerificationKey {
        do {
            switch algorithm {
            case .hs256, .hs384, .hs512:
                throw KeyError("a PEM public key cannot be used with \(algorithm.rawValue); HMAC needs a \"secret\"")
            case .rs256, .rs384, .rs512, .ps256, .ps384, .ps512:
                return VerificationKey(kid: kid, algorithm: algorithm, material: .rsa(try _RSA.Signing.PublicKey(pemRepresentation: pem)))
            case .es256:
                return VerificationKey(kid: kid, algorithm: algorithm, material: .p256(try P256.Signing.PublicKey(pemRepresentation: pem)))
            case .es384:
                return VerificationKey(kid: kid, algorithm: algorithm, material: .p384(try P384.Signing.PublicKey(pemRepresentation: pem)))
            case .es512:
                return VerificationKey(kid: kid, algorithm: algorithm, material: .p521(try P521.Signing.PublicKey(pemRepresentation: pem)))
            case .edDSA:
                return VerificationKey(kid: kid, algorithm: algorithm, material: .ed25519(try Curve25519.Signing.PublicKey(pemRepresentation: pem)))
            }
        } catch let error as KeyError {
            throw error
        } catch {
            throw KeyError("not a valid \(algorithm.family.rawValue) public key in PEM form for \(algorithm.rawValue) (RSA keys need at least 2048 bits)")
        }
    }

    /// A key from a JWK object (RFC 7517). `defaultAlgorithm` is used when the JWK has no
    /// `alg`; a JWK without `alg` and no default is refused, because the algorithm must come
    /// from the key's owner, never from a token. Keys marked for encryption (`use` other than
    /// `sig`, or `key_ops` without `verify`) are refused.
    public static func jwk(_ jwk: JSONObject, defaultAlgorithm: JWSAlgorithm? = nil) throws(KeyError) -> VerificationKey {
        func string(_ name: String) throws(KeyError) -> String? {
            guard let v = jwk[name] else { return nil }
            guard let s = v.stringValue else { throw KeyError("JWK member \"\(name)\" must be a string") }
            return s
        }
        func bytes(_ name: String) throws(KeyError) -> [UInt8] {
            guard let s = try string(name) else { throw KeyError("JWK member \"\(name)\" is missing") }
            guard let b = Base64URL.decode(s), !b.isEmpty else { throw KeyError("JWK member \"\(name)\" is not base64url") }
            return b
        }
        guard let kty = try string("kty") else { throw KeyError("JWK member \"kty\" is missing") }
        let kid = try string("kid")
        if let use = try string("use"), use != "sig" { throw KeyError("JWK \"use\" is \"\(use)\"; only \"sig\" keys verify signatures") }
        if let ops = jwk["key_ops"] {
            guard let list = ops.arrayValue, list.allSatisfy({ $0.stringValue != nil }) else { throw KeyError("JWK \"key_ops\" must be an array of strings") }
            if !list.contains(.string("verify")) { throw KeyError("JWK \"key_ops\" does not include \"verify\"") }
        }
        let algorithm: JWSAlgorithm
        if let name = try string("alg") {
            guard let a = JWSAlgorithm(rawValue: name) else { throw KeyError("unsupported JWK \"alg\" \"\(name)\" (supported: \(JWSAlgorithm.names))") }
            algorithm = a
        } else if let defaultAlgorithm {
            algorithm = defaultAlgorithm
        } else {
            throw KeyError("JWK has no \"alg\"; give one so the algorithm is bound to the key")
        }
        guard algorithm.family.rawValue == kty else {
            throw KeyError("JWK \"kty\" \"\(kty)\" does not fit \"alg\" \(algorithm.rawValue) (needs \"\(algorithm.family.rawValue)\")")
        }
        do {
            switch algorithm.family {
            case .hmac:
                return try secret(try bytes("k"), algorithm: algorithm, kid: kid)
            case .rsa:
                let key = try _RSA.Signing.PublicKey(n: try bytes("n"), e: try bytes("e"))
                return VerificationKey(kid: kid, algorithm: algorithm, material: .rsa(key))
            case .ec, .okp:
                let crv = try string("crv")
                guard crv == algorithm.curve else {
                    throw KeyError("JWK \"crv\" \"\(crv ?? "")\" does not fit \(algorithm.rawValue) (needs \"\(algorithm.curve ?? "")\")")
                }
                if algorithm == .edDSA {
                    return VerificationKey(kid: kid, algorithm: algorithm,
                                           material: .ed25519(try Curve25519.Signing.PublicKey(rawRepresentation: try bytes("x"))))
                }
                // x963: 0x04 || X || Y, each coordinate left-padded to the field size.
                let size = algorithm == .es256 ? 32 : algorithm == .es384 ? 48 : 66
                let x = try bytes("x"), y = try bytes("y")
                guard x.count == size, y.count == size else { throw KeyError("JWK EC coordinates must be \(size) bytes for \(crv ?? "")") }
                let point = [0x04] + x + y
                switch algorithm {
                case .es256: return VerificationKey(kid: kid, algorithm: algorithm, material: .p256(try P256.Signing.PublicKey(x963Representation: point)))
                case .es384: return VerificationKey(kid: kid, algorithm: algorithm, material: .p384(try P384.Signing.PublicKey(x963Representation: point)))
                default: return VerificationKey(kid: kid, algorithm: algorithm, material: .p521(try P521.Signing.PublicKey(x963Representation: point)))
                }
            }
        } catch let error as KeyError {
            throw error
        } catch {
            throw KeyError("JWK is not a valid \(kty) public key for \(algorithm.rawValue) (RSA keys need at least 2048 bits)")
        }
    }

    /// Parses a JWK Set (`{"keys": [...]}`). Keys that cannot be used are reported and left
    /// out, so one exotic key in a provider's set does not disable the others.
    public static func jwkSet(_ document: JSONValue) -> (keys: [VerificationKey], problems: [String]) {
        guard let list = document["keys"]?.arrayValue else { return ([], ["a JWK Set needs a \"keys\" array"]) }
        var keys: [VerificationKey] = []
        var problems: [String] = []
        for (i, item) in list.enumerated() {
            guard let object = item.objectValue else { problems.append("keys/\(i): not an object"); continue }
            do { keys.append(try jwk(object)) } catch { problems.append("keys/\(i): \(error.description)") }
        }
        return (keys, problems)
    }
}
