import Crypto

/// A credential kind a route can accept.
public enum AuthMethod: String, Sendable, CaseIterable {
    case apiKey = "api_key"
    case jwt
    case mtls
}

/// What a route requires. A route without a policy does no authentication at all.
public struct RouteAuthPolicy: Sendable, Equatable {
    /// Accepted credential kinds, in the order they are looked for.
    public var methods: [AuthMethod]
    /// When true, a request with no credential passes as anonymous (a presented but invalid
    /// credential is still refused).
    public var anonymous: Bool
    /// Every one of these scopes is required.
    public var scopes: [String]
    /// The consumer must belong to at least one of these groups (empty: no group check).
    public var groups: [String]

    public init(methods: [AuthMethod] = AuthMethod.allCases, anonymous: Bool = false, scopes: [String] = [], groups: [String] = []) {
        self.methods = methods
        self.anonymous = anonymous
        self.scopes = scopes
        self.groups = groups
    }
}

/// The SHA-256 digest of an API key, in a form that hashes cheaply as a dictionary key.
public struct KeyDigest: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    /// From 32 raw digest bytes.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }

    /// From 64 hex characters (either case).
    public init?(hex: String) {
        guard hex.utf8.count == 64, let b = Hex.decode(hex) else { return nil }
        self.bytes = b
    }

    public var description: String { Hex.encode(bytes) }
}

/// A SHA-256 digest as four words: a dictionary key that is hashed and compared without an
/// array (the API key index and the verified-token cache look one up per request).
struct SHA256Words: Hashable, Sendable {
    let a: UInt64, b: UInt64, c: UInt64, d: UInt64

    /// The digest of `bytes`.
    init(hashing bytes: UnsafeRawBufferPointer) {
        var hasher = SHA256()
        hasher.update(bufferPointer: bytes)
        self = hasher.finalize().withUnsafeBytes { SHA256Words(digest: $0) }
    }

    /// The words of a stored digest.
    init(_ digest: KeyDigest) {
        self = digest.bytes.withUnsafeBytes { SHA256Words(digest: $0) }
    }

    private init(digest raw: UnsafeRawBufferPointer) {
        a = raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
        b = raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        c = raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
        d = raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
    }
}

/// One API key of a consumer, stored only as its digest.
public struct APIKeyCredential: Sendable, Equatable {
    /// Names the key in logs and `X-Credential-ID` (never the key itself).
    public var id: String
    public var digest: KeyDigest
    /// Unix seconds after which the key is refused; nil: no expiry.
    public var expires: Int64?

    public init(id: String, digest: KeyDigest, expires: Int64? = nil) {
        self.id = id
        self.digest = digest
        self.expires = expires
    }
}

/// How a client certificate is matched to a consumer.
public enum CertificateMatch: Sendable, Equatable, Hashable {
    /// Lower-case hex SHA-256 of the DER certificate, no separators.
    case sha256Fingerprint(String)
    /// nginx's `$ssl_client_s_dn`, compared exactly.
    case subjectDN(String)
}

public struct CertificateCredential: Sendable, Equatable {
    public var id: String
    public var match: CertificateMatch
    public init(id: String, match: CertificateMatch) {
        self.id = id
        self.match = match
    }
}

/// A client of the gateway and its credentials.
public struct Consumer: Sendable, Equatable {
    public var id: String
    public var name: String
    public var groups: [String]
    /// Scopes granted to this consumer's API keys and certificates (JWTs carry their own).
    public var scopes: [String]
    public var apiKeys: [APIKeyCredential]
    public var certificates: [CertificateCredential]

    public init(id: String, name: String = "", groups: [String] = [], scopes: [String] = [],
                apiKeys: [APIKeyCredential] = [], certificates: [CertificateCredential] = []) {
        self.id = id
        self.name = name
        self.groups = groups
        self.scopes = scopes
        self.apiKeys = apiKeys
        self.certificates = certificates
    }
}

/// Where API keys are looked for.
public struct APIKeySettings: Sendable, Equatable {
    public var header: String = "X-API-Key"
    /// Query parameter carrying the key; nil (the default) disables it, since URLs end up in
    /// logs, browser history and Referer headers.
    public var queryParam: String?
    public init(header: String = "X-API-Key", queryParam: String? = nil) {
        self.header = header
        self.queryParam = queryParam
    }
}

/// One trusted token issuer and how its tokens are checked.
public struct JWTIssuerConfig: Sendable {
    /// Exact `iss` value.
    public var issuer: String
    /// Accepted `aud` values; the token must name at least one. Empty: `aud` is not checked.
    public var audiences: [String]
    /// Keys from `keys` and `jwks_file`, built once when the config is read.
    public var keys: [VerificationKey]
    public var jwksURL: String?
    public var jwksRefreshSeconds: Int
    public var identityClaim: String
    public var leewaySeconds: Int64
    public var requiredClaims: [String]
    public var maxTokenBytes: Int

    public init(issuer: String, audiences: [String] = [], keys: [VerificationKey] = [], jwksURL: String? = nil,
                jwksRefreshSeconds: Int = 300, identityClaim: String = "sub", leewaySeconds: Int64 = 30,
                requiredClaims: [String] = [], maxTokenBytes: Int = 8192) {
        self.issuer = issuer
        self.audiences = audiences
        self.keys = keys
        self.jwksURL = jwksURL
        self.jwksRefreshSeconds = jwksRefreshSeconds
        self.identityClaim = identityClaim
        self.leewaySeconds = leewaySeconds
        self.requiredClaims = requiredClaims
        self.maxTokenBytes = maxTokenBytes
    }
}

public struct JWTSettings: Sendable {
    public var issuers: [JWTIssuerConfig] = []
    /// Verified tokens kept (0 disables the cache).
    public var cacheEntries: Int = 10_000
    /// Longest time a verified token is trusted without re-verification.
    public var cacheTTLSeconds: Int64 = 300
    public init(issuers: [JWTIssuerConfig] = [], cacheEntries: Int = 10_000, cacheTTLSeconds: Int64 = 300) {
        self.issuers = issuers
        self.cacheEntries = cacheEntries
        self.cacheTTLSeconds = cacheTTLSeconds
    }
}

/// The top-level `auth` section.
public struct AuthSettings: Sendable {
    public var apiKey: APIKeySettings
    public var jwt: JWTSettings
    public init(apiKey: APIKeySettings = APIKeySettings(), jwt: JWTSettings = JWTSettings()) {
        self.apiKey = apiKey
        self.jwt = jwt
    }

    /// Every distinct `jwks_url`, for the runtime to start one fetcher each.
    public var jwksURLs: [String] {
        var seen = Set<String>()
        return jwt.issuers.compactMap(\.jwksURL).filter { seen.insert($0).inserted }
    }
}
