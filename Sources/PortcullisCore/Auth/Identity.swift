/// The kind of credential that authenticated a request.
public enum CredentialKind: String, Sendable, Equatable {
    case apiKey = "api_key"
    case jwt
    case mtls
}

/// Who made a request, as established by the gateway. Sent upstream in identity headers and
/// available to transformation templates.
public struct Identity: Sendable, Equatable {
    /// The consumer id (for JWTs: the configured identity claim, default `sub`).
    public var consumerId: String
    public var groups: [String]
    /// The id of the credential (API key id, certificate entry id, or the JWT key's `kid`);
    /// safe to log, unlike the credential itself.
    public var credentialId: String
    public var credentialKind: CredentialKind
    public var scopes: [String]
    /// The verified JWT claims (empty for API keys and certificates).
    public var claims: JSONObject

    /// The value of the `credential` rate-limit key part: one credential of one consumer.
    /// A key id is unique only within its consumer, and a JWT's `kid` names the issuer's
    /// signing key that every user's token shares, so the id alone would put different
    /// consumers on one counter. API keys and certificates: kind, consumer id, credential id;
    /// JWTs: kind, `iss`, the identity claim (default `sub`). Each part is length-prefixed, so
    /// no value can pose as another combination.
    public var rateLimitCredential: String {
        switch credentialKind {
        case .jwt: return Self.lengthPrefixed(["jwt", claims["iss"]?.stringValue ?? "", consumerId])
        case .apiKey, .mtls: return Self.lengthPrefixed([credentialKind.rawValue, consumerId, credentialId])
        }
    }

    static func lengthPrefixed(_ parts: [String]) -> String {
        var text = ""
        for part in parts {
            text += String(part.utf8.count)
            text += ":"
            text += part
        }
        return text
    }

    public init(consumerId: String, groups: [String] = [], credentialId: String, credentialKind: CredentialKind,
                scopes: [String] = [], claims: JSONObject = JSONObject()) {
        self.consumerId = consumerId
        self.groups = groups
        self.credentialId = credentialId
        self.credentialKind = credentialKind
        self.scopes = scopes
        self.claims = claims
    }
}

/// The result of authenticating one request against a route's policy.
public enum AuthOutcome: Sendable, Equatable {
    case authenticated(Identity)
    /// No credential was presented and the route allows anonymous access.
    case anonymous
    /// Answer with this problem (401 or 403, with `WWW-Authenticate` where RFC 6750 wants it).
    case rejected(ProblemDetails)

    public var identity: Identity? {
        if case .authenticated(let identity) = self { return identity }
        return nil
    }
}

extension ProblemDetails {
    static let realm = "portcullis"

    /// 401 when no credential was presented (RFC 6750 §3.1: no `error` parameter then).
    public static func authenticationRequired() -> ProblemDetails {
        var headers = HTTPHeaders()
        headers.add("WWW-Authenticate", "Bearer realm=\"\(realm)\"")
        return ProblemDetails(status: 401, type: "authentication-required", title: "Unauthorized",
                              detail: "this route requires authentication", headers: headers)
    }

    /// 401 for a presented credential that is not valid. `reason` must be a fixed, safe text
    /// (never the credential): it is placed in a quoted header parameter.
    public static func invalidCredential(_ reason: String) -> ProblemDetails {
        let safe = String(reason.unicodeScalars.filter { $0.value >= 0x20 && $0.value < 0x7F && $0 != "\"" && $0 != "\\" })
        var headers = HTTPHeaders()
        headers.add("WWW-Authenticate", "Bearer realm=\"\(realm)\", error=\"invalid_token\", error_description=\"\(safe)\"")
        return ProblemDetails(status: 401, type: "invalid-credential", title: "Unauthorized", detail: safe, headers: headers)
    }

    /// 403 when the credential is valid but lacks scopes the route requires.
    public static func insufficientScope(required: [String]) -> ProblemDetails {
        let list = required.joined(separator: " ")
        var headers = HTTPHeaders()
        headers.add("WWW-Authenticate",
                    "Bearer realm=\"\(realm)\", error=\"insufficient_scope\", error_description=\"the credential lacks a required scope\", scope=\"\(list)\"")
        return ProblemDetails(status: 403, type: "insufficient-scope", title: "Forbidden",
                              detail: "the credential lacks a required scope", headers: headers,
                              extensions: JSONObject([("required_scopes", .array(required.map { .string($0) }))]))
    }

    /// 403 when the consumer is in none of the groups the route allows.
    public static func forbiddenGroup() -> ProblemDetails {
        ProblemDetails(status: 403, type: "forbidden-group", title: "Forbidden",
                       detail: "the consumer is not in a group allowed on this route")
    }
}
