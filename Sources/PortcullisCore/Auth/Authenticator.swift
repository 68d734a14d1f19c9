import Crypto

/// Authenticates requests: built once per configuration (keys parsed, indexes made), then
/// shared by every request thread. Per request, an API key costs one SHA-256 and one
/// dictionary lookup; a cached JWT one SHA-256 and one lookup.
public struct Authenticator: Sendable {
    struct KeyEntry: Sendable {
        let credential: APIKeyCredential
        /// The identity a request with this key gets: fixed by the configuration, so built once.
        let identity: Identity
    }

    public let settings: AuthSettings
    let consumers: [Consumer]
    let consumerIndex: [String: Int]
    let apiKeys: [SHA256Words: KeyEntry]
    let certificates: [CertificateMatch: (consumer: Int, id: String)]
    let issuerIndex: [String: Int]
    let jwksSources: [(any JWKSSource)?]
    let maxTokenBytes: Int
    let cache: TokenCache

    /// Identity headers only the gateway may set; client-sent copies are removed.
    public static let identityHeaders = ["X-Consumer-ID", "X-Consumer-Groups", "X-Credential-ID", "X-Authenticated-Scopes"]

    /// One of `identityHeaders` (any case). Every forwarded field is asked, so the name is
    /// compared on its bytes with the one identity name of its length, if any.
    static func isIdentityHeader(_ name: String) -> Bool {
        var name = name
        return name.withUTF8 { bytes in
            switch bytes.count {
            case 13: return ASCIICase.equal(bytes, lower: "x-consumer-id")
            case 15: return ASCIICase.equal(bytes, lower: "x-credential-id")
            case 17: return ASCIICase.equal(bytes, lower: "x-consumer-groups")
            case 22: return ASCIICase.equal(bytes, lower: "x-authenticated-scopes")
            default: return false
            }
        }
    }

    /// - Parameter jwksSources: the key store of each issuer's `jwks_url`, keyed by URL (see
    ///   `AuthSettings.jwksURLs`); an issuer whose URL has no source uses only its static keys.
    public init(settings: AuthSettings, consumers: [Consumer], jwksSources: [String: any JWKSSource] = [:]) {
        self.settings = settings
        self.consumers = consumers
        var consumerIndex: [String: Int] = [:]
        var apiKeys: [SHA256Words: KeyEntry] = [:]
        var certificates: [CertificateMatch: (consumer: Int, id: String)] = [:]
        for (i, consumer) in consumers.enumerated() {
            consumerIndex[consumer.id] = consumerIndex[consumer.id] ?? i
            for key in consumer.apiKeys where apiKeys[SHA256Words(key.digest)] == nil {
                apiKeys[SHA256Words(key.digest)] = KeyEntry(
                    credential: key,
                    identity: Identity(consumerId: consumer.id, groups: consumer.groups, credentialId: key.id, credentialKind: .apiKey,
                                       scopes: consumer.scopes))
            }
            for cert in consumer.certificates where certificates[cert.match] == nil { certificates[cert.match] = (i, cert.id) }
        }
        self.consumerIndex = consumerIndex
        self.apiKeys = apiKeys
        self.certificates = certificates
        var issuerIndex: [String: Int] = [:]
        for (i, issuer) in settings.jwt.issuers.enumerated() where issuerIndex[issuer.issuer] == nil { issuerIndex[issuer.issuer] = i }
        self.issuerIndex = issuerIndex
        self.jwksSources = settings.jwt.issuers.map { issuer in issuer.jwksURL.flatMap { jwksSources[$0] } }
        self.maxTokenBytes = settings.jwt.issuers.map(\.maxTokenBytes).max() ?? 8192
        self.cache = TokenCache(capacity: settings.jwt.cacheEntries, ttlSeconds: settings.jwt.cacheTTLSeconds)
    }

    /// Builds the authenticator of a whole gateway configuration.
    public init(config: GatewayConfig, jwksSources: [String: any JWKSSource] = [:]) {
        self.init(settings: config.auth, consumers: config.consumers, jwksSources: jwksSources)
    }

    // MARK: - Per request

    /// Authenticates `request` for a route with `policy`. Credentials are looked for in the
    /// order of `policy.methods`; the first one presented decides (a presented but invalid
    /// credential is refused even when anonymous access is allowed, so a client never
    /// silently loses its identity). `now` is Unix seconds.
    public func authenticate(_ request: GatewayRequest, policy: RouteAuthPolicy, now: Int64) -> AuthOutcome {
        for method in policy.methods {
            let result: CredentialCheck
            switch method {
            case .apiKey: result = apiKeyIdentity(request, now: now)
            case .jwt: result = bearerIdentity(request, now: now)
            case .mtls: result = certificateIdentity(request.clientCertificate)
            }
            switch result {
            case .absent: continue
            case .rejected(let problem): return .rejected(problem)
            case .identified(let identity): return authorize(identity, policy: policy)
            }
        }
        return policy.anonymous ? .anonymous : .rejected(.authenticationRequired())
    }

    /// Applies the route's group and scope requirements to an authenticated identity.
    public func authorize(_ identity: Identity, policy: RouteAuthPolicy) -> AuthOutcome {
        if !policy.groups.isEmpty && !policy.groups.contains(where: identity.groups.contains) {
            return .rejected(.forbiddenGroup())
        }
        if !policy.scopes.allSatisfy(identity.scopes.contains) {
            return .rejected(.insufficientScope(required: policy.scopes))
        }
        return .authenticated(identity)
    }

    /// What one credential kind found in a request.
    enum CredentialCheck {
        case absent
        case rejected(ProblemDetails)
        case identified(Identity)
    }

    func apiKeyIdentity(_ request: GatewayRequest, now: Int64) -> CredentialCheck {
        let presented = request.headers[settings.apiKey.header] ?? settings.apiKey.queryParam.flatMap { request.queryValue($0) }
        guard let presented, !presented.isEmpty else { return .absent }
        switch lookupAPIKey(presented, now: now) {
        case .success(let identity): return .identified(identity)
        case .failure(let reason): return .rejected(.invalidCredential(reason.description))
        }
    }

    public enum APIKeyError: Error, Sendable, Equatable, CustomStringConvertible {
        case unknown, expired
        public var description: String {
            switch self {
            case .unknown: return "the API key is not valid"
            case .expired: return "the API key has expired"
            }
        }
    }

    /// Finds the consumer of a clear-text API key by its SHA-256 digest. The dictionary is
    /// keyed by digest, so the time a lookup takes depends on the digest of the guess, which
    /// tells an attacker nothing about stored keys.
    public func lookupAPIKey(_ key: String, now: Int64) -> Result<Identity, APIKeyError> {
        var key = key
        guard let entry = apiKeys[key.withUTF8 { SHA256Words(hashing: UnsafeRawBufferPointer($0)) }] else {
            return .failure(.unknown)
        }
        if let expires = entry.credential.expires, now >= expires { return .failure(.expired) }
        return .success(entry.identity)
    }

    func bearerIdentity(_ request: GatewayRequest, now: Int64) -> CredentialCheck {
        guard var value = request.headers["authorization"] else { return .absent }
        // The token is verified (or found in the cache) on the header's own bytes.
        let checked: Result<Identity, TokenError>?? = value.withUTF8 { bytes in
            guard let found = Self.bearerTokenRange(bytes) else { return nil }
            return found.map { verifyToken(UnsafeBufferPointer(rebasing: bytes[$0]), now: now) }
        }
        let result: Result<Identity, TokenError>
        switch checked {
        case .some(.some(let r)): result = r
        case .some(.none): return .absent
        case .none:
            guard let token = Self.bearerToken(value) else { return .absent }
            result = verifyToken(Array(token.utf8), now: now)
        }
        switch result {
        case .success(let identity): return .identified(identity)
        case .failure(let error): return .rejected(.invalidCredential(error.description))
        }
    }

    /// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
    public static func bearerToken(_ headers: HTTPHeaders) -> String? {
        headers["authorization"].flatMap(bearerToken)
    }

    /// The token of an `Authorization` value `Bearer <token>`: the first seven characters are
    /// `bearer ` in any case, the rest trimmed of spaces and tabs must not be empty.
    static func bearerToken(_ value: String) -> String? {
        guard value.utf8.count > 7, String(value.prefix(7)).caseInsensitiveEquals("bearer ") else { return nil }
        let token = value.dropFirst(7).trimmingSpaces()
        return token.isEmpty ? nil : String(token)
    }

    /// `bearerToken` on the bytes of an `Authorization` value: the token's byte range, or
    /// `.some(nil)` when the value carries none. nil when a non-ASCII byte follows the scheme or
    /// the spaces after it: it may join them in one Character, which `bearerToken` then decides
    /// on (elsewhere bytes and Characters trim and compare alike).
    static func bearerTokenRange(_ value: UnsafeBufferPointer<UInt8>) -> Range<Int>?? {
        guard value.count > 7, ASCIICase.equal(UnsafeBufferPointer(rebasing: value[0..<7]), lower: "bearer ") else { return .some(nil) }
        var start = 7, end = value.count
        while start < end, value[start] == UInt8(ascii: " ") || value[start] == UInt8(ascii: "\t") { start += 1 }
        if start < end, value[start] >= 0x80 { return nil }
        while end > start, value[end - 1] == UInt8(ascii: " ") || value[end - 1] == UInt8(ascii: "\t") { end -= 1 }
        return .some(start < end ? start..<end : nil)
    }

    /// Whether an `Authorization` value names the Bearer scheme (`bearer` in any case at its
    /// start): such a credential is never forwarded. Decided on the bytes unless a non-ASCII byte
    /// follows `bearer`, which may join its last letter in one Character.
    static func namesBearerScheme(_ value: String) -> Bool {
        var value = value
        let onBytes: Bool? = value.withUTF8 { bytes in
            guard bytes.count >= 6, ASCIICase.equal(UnsafeBufferPointer(rebasing: bytes[0..<6]), lower: "bearer") else { return false }
            return bytes.count > 6 && bytes[6] >= 0x80 ? nil : true
        }
        return onBytes ?? value.asciiLowercased.hasPrefix("bearer")
    }

    func certificateIdentity(_ facts: ClientCertificateFacts?) -> CredentialCheck {
        guard let facts, facts.isPresented else { return .absent }
        guard facts.isVerified else { return .rejected(.invalidCredential("the client certificate was not verified")) }
        var found: (consumer: Int, id: String)?
        if let fp = facts.fingerprint, !fp.isEmpty { found = certificates[.sha256Fingerprint(CertificateFingerprint.normalize(fp))] }
        if found == nil, let dn = facts.subjectDN, !dn.isEmpty { found = certificates[.subjectDN(dn)] }
        guard let found else { return .rejected(.invalidCredential("the client certificate is not assigned to a consumer")) }
        let consumer = consumers[found.consumer]
        return .identified(Identity(consumerId: consumer.id, groups: consumer.groups, credentialId: found.id,
                                 credentialKind: .mtls, scopes: consumer.scopes))
    }

    // MARK: - JWT

    /// Verifies a compact JWT: size, structure, issuer, signature with the issuer's keys
    /// (algorithm bound to the key), then the claims. Results are cached by token digest.
    public func verifyToken(_ token: [UInt8], now: Int64) -> Result<Identity, TokenError> {
        token.withUnsafeBufferPointer { verifyToken($0, now: now) }
    }

    /// `verifyToken` on borrowed bytes: a cached token is found without a copy of them.
    func verifyToken(_ token: UnsafeBufferPointer<UInt8>, now: Int64) -> Result<Identity, TokenError> {
        guard token.count <= maxTokenBytes else { return .failure(.tooLarge) }
        if let hit = cache.lookup(token, now: now) { return .success(hit.identity) }
        return verifyUncached(Array(token), now: now)
    }

    private func verifyUncached(_ token: [UInt8], now: Int64) -> Result<Identity, TokenError> {
        do throws(TokenError) {
            let parsed = try ParsedJWS.parse(token, maxBytes: maxTokenBytes)
            guard let claimsValue = try? JSONCodec.parse(parsed.payload, rejectDuplicateKeys: true),
                  let claims = claimsValue.objectValue
            else { throw .malformed("the claims are not a JSON object") }
            guard let iss = claims["iss"]?.stringValue else { throw .missingClaim("iss") }
            guard let index = issuerIndex[iss] else { throw .untrustedIssuer }
            let issuer = settings.jwt.issuers[index]
            guard token.count <= issuer.maxTokenBytes else { throw .tooLarge }
            let source = jwksSources[index]
            let keys = source.map { issuer.keys + $0.currentKeys() } ?? issuer.keys
            let key: VerificationKey
            do throws(TokenError) {
                key = try parsed.verify(with: keys)
            } catch .unknownKey {
                source?.noteUnknownKid(now: now)
                throw .unknownKey
            }
            let expiry = try Self.validateClaims(claims, issuer: issuer, now: now)
            let result = identity(claims: claims, issuer: issuer, kid: key.kid)
            if case .success(let identity) = result {
                cache.store(token, expiry: expiry.map { $0 &+ issuer.leewaySeconds }, now: now, identity: identity)
            }
            return result
        } catch {
            return .failure(error)
        }
    }

    /// Checks `exp`, `nbf`, `aud` and the required claims; returns `exp`.
    static func validateClaims(_ claims: JSONObject, issuer: JWTIssuerConfig, now: Int64) throws(TokenError) -> Int64? {
        for name in issuer.requiredClaims where claims[name] == nil || claims[name] == .null { throw .missingClaim(name) }
        var exp: Int64?
        if let value = claims["exp"] {
            guard let e = numericDate(value) else { throw .invalidClaim("exp") }
            // RFC 7519 §4.1.4: the current time must be before exp (leeway allowed).
            if now >= e &+ issuer.leewaySeconds { throw .expired }
            exp = e
        }
        if let value = claims["nbf"] {
            guard let n = numericDate(value) else { throw .invalidClaim("nbf") }
            if now &+ issuer.leewaySeconds < n { throw .notYetValid }
        }
        if !issuer.audiences.isEmpty {
            switch claims["aud"] {
            case nil: throw .missingClaim("aud")
            case .string(let a)?:
                if !issuer.audiences.contains(a) { throw .wrongAudience }
            case .array(let list)?:
                guard list.allSatisfy({ $0.stringValue != nil }) else { throw .invalidClaim("aud") }
                if !list.contains(where: { issuer.audiences.contains($0.stringValue!) }) { throw .wrongAudience }
            default: throw .invalidClaim("aud")
            }
        }
        return exp
    }

    /// NumericDate (RFC 7519 §2): a JSON number of seconds; fractions are truncated.
    static func numericDate(_ value: JSONValue) -> Int64? {
        switch value {
        case .int(let i): return i
        case .double(let d) where d.isFinite && abs(d) < 1e15: return Int64(d.rounded(.down))
        default: return nil
        }
    }

    /// Builds the identity of verified claims.
    func identity(claims: JSONObject, issuer: JWTIssuerConfig, kid: String?) -> Result<Identity, TokenError> {
        let subject: String
        switch claims[issuer.identityClaim] {
        case .string(let s)?: subject = s
        case .int(let i)?: subject = String(i)
        case nil, .null?: return .failure(.missingClaim(issuer.identityClaim))
        default: return .failure(.invalidClaim(issuer.identityClaim))
        }
        // The id travels in X-Consumer-ID: refuse what could split or forge a header.
        guard !subject.isEmpty, HeaderHygiene.isSafeHeaderValue(subject), !subject.contains(",") else {
            return .failure(.invalidClaim(issuer.identityClaim))
        }
        var scopes: [String] = []
        switch claims["scope"] {
        case .string(let s)?: scopes = s.split(separator: " ").map(String.init)
        case nil, .null?: break
        default: return .failure(.invalidClaim("scope"))
        }
        switch claims["scp"] {
        case .array(let list)?:
            for item in list {
                guard let s = item.stringValue else { return .failure(.invalidClaim("scp")) }
                scopes.append(s)
            }
        case .string(let s)?: scopes += s.split(separator: " ").map(String.init)
        case nil, .null?: break
        default: return .failure(.invalidClaim("scp"))
        }
        guard scopes.allSatisfy(HeaderHygiene.isSafeHeaderValue) else { return .failure(.invalidClaim("scope")) }
        let groups = consumerIndex[subject].map { consumers[$0].groups } ?? []
        return .success(Identity(consumerId: subject, groups: groups, credentialId: kid ?? "jwt", credentialKind: .jwt,
                                 scopes: scopes, claims: claims))
    }

    // MARK: - Upstream hygiene

    /// Query parameters that carry credentials and must be removed before forwarding.
    public static func credentialQueryParameters(_ settings: AuthSettings) -> [String] {
        settings.apiKey.queryParam.map { [$0] } ?? []
    }

    /// Prepares request headers for the upstream: client-sent identity headers are always
    /// removed; on routes with an auth `policy` the credentials (a Bearer `Authorization`, the
    /// API key header) are removed too; then the identity headers are set from `identity`.
    public static func upstreamHeaders(_ headers: inout HTTPHeaders, identity: Identity?, settings: AuthSettings, policy: RouteAuthPolicy?) {
        if policy != nil {
            // A value with a Bearer token names the scheme too: one test covers both. The
            // fields are then filtered in one pass.
            let dropAuthorization = headers["authorization"].map(namesBearerScheme) == true
            let apiKeyHeader = settings.apiKey.header
            headers.removeAll { name in
                isIdentityHeader(name) || (dropAuthorization && name.caseInsensitiveEquals("authorization"))
                    || name.caseInsensitiveEquals(apiKeyHeader)
            }
        } else {
            headers.removeAll(where: isIdentityHeader)
        }
        guard let identity else { return }
        headers.reserveCapacity(headers.count + 4)
        headers.add("X-Consumer-ID", identity.consumerId)
        if !identity.groups.isEmpty { headers.add("X-Consumer-Groups", identity.groups.joined(separator: ",")) }
        headers.add("X-Credential-ID", identity.credentialId)
        if !identity.scopes.isEmpty { headers.add("X-Authenticated-Scopes", identity.scopes.joined(separator: " ")) }
    }
}
