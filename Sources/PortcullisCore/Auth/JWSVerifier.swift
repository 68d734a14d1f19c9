/// Why a token was refused. `description` is safe to show a client: it never repeats any part
/// of the token, a key or a claim value (an attacker-chosen `kid` could otherwise be reflected
/// into a header).
public enum TokenError: Error, Sendable, Equatable, CustomStringConvertible {
    case tooLarge
    case malformed(String)
    case algorithmNone
    case unsupportedAlgorithm
    case unsupportedCritical
    case unknownKey
    case badSignature
    case untrustedIssuer
    case expired
    case notYetValid
    case wrongAudience
    case missingClaim(String)
    case invalidClaim(String)

    public var description: String {
        switch self {
        case .tooLarge: return "the token is too large"
        case .malformed(let why): return "the token is malformed: \(why)"
        case .algorithmNone: return "unsigned tokens are not accepted"
        case .unsupportedAlgorithm: return "the token's algorithm does not match any configured key"
        case .unsupportedCritical: return "the token has a critical header parameter that is not understood"
        case .unknownKey: return "no configured key matches the token"
        case .badSignature: return "the token signature is invalid"
        case .untrustedIssuer: return "the token issuer is not trusted"
        case .expired: return "the token has expired"
        case .notYetValid: return "the token is not valid yet"
        case .wrongAudience: return "the token audience is not accepted"
        case .missingClaim(let name): return "the token lacks the required claim \(name)"
        case .invalidClaim(let name): return "the token claim \(name) has an invalid value"
        }
    }
}

/// A compact JWS split and decoded, before its signature is checked.
public struct ParsedJWS: Sendable {
    public let header: JSONObject
    public let algorithmName: String
    public let kid: String?
    /// The raw payload bytes (JSON claims for a JWT).
    public let payload: [UInt8]
    let signingInput: [UInt8]
    let signature: [UInt8]

    /// Splits and decodes `token` strictly: exactly three segments, canonical base64url, a JSON
    /// object header without duplicate keys, a string `alg` that is not `none`, and no `crit`.
    /// Header parameters that would make a verifier fetch or trust key material from the token
    /// (`jku`, `x5u`, `jwk`, `x5c`) are ignored: keys only ever come from configuration.
    public static func parse(_ token: [UInt8], maxBytes: Int) throws(TokenError) -> ParsedJWS {
        guard token.count <= maxBytes else { throw .tooLarge }
        var dots: [Int] = []
        for (i, c) in token.enumerated() where c == 0x2E {
            dots.append(i)
            if dots.count > 2 { throw .malformed("expected three segments") }
        }
        guard dots.count == 2 else { throw .malformed("expected three segments") }
        let headerPart = token[..<dots[0]]
        let payloadPart = token[(dots[0] + 1)..<dots[1]]
        let signaturePart = token[(dots[1] + 1)...]
        guard !headerPart.isEmpty else { throw .malformed("empty header") }
        guard !signaturePart.isEmpty else { throw .malformed("empty signature") }
        guard let headerBytes = Base64URL.decode(headerPart),
              let payload = Base64URL.decode(payloadPart),
              let signature = Base64URL.decode(signaturePart)
        else { throw .malformed("invalid base64url") }
        guard let headerValue = try? JSONCodec.parse(headerBytes, rejectDuplicateKeys: true),
              let header = headerValue.objectValue
        else { throw .malformed("the header is not a JSON object") }
        guard let alg = header["alg"]?.stringValue else { throw .malformed("the header has no alg") }
        if alg.lowercased() == "none" { throw .algorithmNone }
        // RFC 7515 §4.1.11: a recipient must reject a token whose `crit` it does not fully
        // understand. This verifier understands no extension, so any `crit` is refused.
        if header["crit"] != nil { throw .unsupportedCritical }
        let kid: String?
        switch header["kid"] {
        case nil: kid = nil
        case .string(let s)?: kid = s
        default: throw .malformed("kid must be a string")
        }
        return ParsedJWS(header: header, algorithmName: alg, kid: kid, payload: payload,
                         signingInput: Array(token[..<dots[1]]), signature: signature)
    }

    /// Checks the signature with the candidate keys. With a `kid`, only keys with that id are
    /// tried; without one, every key whose algorithm equals the header's `alg`. A key is used
    /// only when its own algorithm equals `alg`, so the token never selects the algorithm.
    public func verify(with keys: [VerificationKey]) throws(TokenError) -> VerificationKey {
        guard let algorithm = JWSAlgorithm(rawValue: algorithmName) else { throw .unsupportedAlgorithm }
        var sawKid = false
        var sawAlgorithm = false
        for key in keys {
            if let kid {
                guard key.kid == kid else { continue }
                sawKid = true
            }
            guard key.algorithm == algorithm else { continue }
            sawAlgorithm = true
            if key.verify(signature: signature, signingInput: signingInput) { return key }
        }
        if sawAlgorithm { throw .badSignature }
        if kid != nil && !sawKid { throw .unknownKey }
        throw .unsupportedAlgorithm
    }
}
