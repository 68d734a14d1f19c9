import Foundation

/// Reads the `consumers` and `auth` sections and per-route `auth` policies, recording every
/// problem with its JSON pointer. Keys are parsed here, once per config, never per request.
public enum AuthConfigReader {
    /// Reads top-level `consumers`.
    public static func readConsumers(_ node: ConfigNode) -> [Consumer] {
        var consumers: [Consumer] = []
        var ids: [String: String] = [:]
        var digests: [KeyDigest: String] = [:]
        var certificates: [CertificateMatch: String] = [:]
        for item in node.array() ?? [] {
            guard item.object(required: true) != nil else { continue }
            item.rejectUnknownKeys(["id", "name", "groups", "scopes", "api_keys", "certificates", "comment"])
            guard let id = item["id"].nonEmptyString(required: true) else { continue }
            if let first = ids[id] { item["id"].fail("duplicate consumer id \"\(id)\" (first at \(first))") } else { ids[id] = item.pointer }
            if !HeaderHygiene.isSafeHeaderValue(id) || id.contains(",") {
                item["id"].fail("consumer id must not contain control characters or commas (it is sent in X-Consumer-ID)")
            }
            var consumer = Consumer(id: id, name: item["name"].string() ?? id)
            consumer.groups = tokenList(item["groups"], what: "group")
            consumer.scopes = tokenList(item["scopes"], what: "scope")
            for keyNode in item["api_keys"].array() ?? [] {
                guard keyNode.object(required: true) != nil else { continue }
                keyNode.rejectUnknownKeys(["id", "sha256", "expires", "comment"])
                let keyId = credentialId(keyNode["id"])
                guard let hex = keyNode["sha256"].string(required: true) else { continue }
                guard let digest = KeyDigest(hex: hex) else {
                    keyNode["sha256"].fail("expected 64 hexadecimal characters (the SHA-256 of the key; see `portcullis keys hash`)")
                    continue
                }
                if let first = digests[digest] {
                    keyNode["sha256"].fail("duplicate API key digest (first at \(first)); a key must belong to one consumer")
                } else {
                    digests[digest] = keyNode.pointer
                }
                if let dupe = consumer.apiKeys.first(where: { $0.id == keyId }) {
                    keyNode["id"].fail("duplicate key id \"\(dupe.id)\" in this consumer")
                }
                consumer.apiKeys.append(APIKeyCredential(id: keyId ?? "", digest: digest, expires: timestamp(keyNode["expires"])))
            }
            for certNode in item["certificates"].array() ?? [] {
                guard certNode.object(required: true) != nil else { continue }
                certNode.rejectUnknownKeys(["id", "sha256_fingerprint", "subject_dn", "comment"])
                let fingerprint = certNode["sha256_fingerprint"].nonEmptyString()
                let dn = certNode["subject_dn"].nonEmptyString()
                let match: CertificateMatch
                switch (fingerprint, dn) {
                case (let f?, nil):
                    let normalized = f.replacingOccurrences(of: ":", with: "").lowercased()
                    guard normalized.utf8.count == 64, Hex.decode(normalized) != nil else {
                        certNode["sha256_fingerprint"].fail("expected a SHA-256 fingerprint: 64 hexadecimal characters, colons allowed")
                        continue
                    }
                    match = .sha256Fingerprint(normalized)
                case (nil, let d?):
                    match = .subjectDN(d)
                case (_?, _?):
                    certNode.fail("give either \"sha256_fingerprint\" or \"subject_dn\", not both"); continue
                case (nil, nil):
                    certNode.fail("a \"sha256_fingerprint\" or a \"subject_dn\" is required"); continue
                }
                if let first = certificates[match] {
                    certNode.fail("this certificate is already assigned (first at \(first))")
                } else {
                    certificates[match] = certNode.pointer
                }
                let certId = credentialId(certNode["id"]) ?? "cert-\(consumer.certificates.count)"
                consumer.certificates.append(CertificateCredential(id: certId, match: match))
            }
            consumers.append(consumer)
        }
        return consumers
    }

    /// Reads the top-level `auth` section; relative file paths resolve against `baseDirectory`
    /// and key files are taken from `files`.
    public static func readAuth(_ node: ConfigNode, baseDirectory: String, files: any ConfigFiles) -> AuthSettings {
        var settings = AuthSettings()
        guard node.isPresent, node.object() != nil else { return settings }
        node.rejectUnknownKeys(["api_key", "jwt", "comment"])
        let keyNode = node["api_key"]
        if keyNode.isPresent, keyNode.object() != nil {
            keyNode.rejectUnknownKeys(["header", "query_param"])
            if let h = keyNode["header"].nonEmptyString() {
                if HeaderHygiene.isToken(h) { settings.apiKey.header = h } else { keyNode["header"].fail("\"\(h)\" is not a valid header name") }
            }
            settings.apiKey.queryParam = keyNode["query_param"].nonEmptyString()
        }
        let jwtNode = node["jwt"]
        if jwtNode.isPresent, jwtNode.object() != nil {
            jwtNode.rejectUnknownKeys(["issuers", "cache_entries", "cache_ttl_seconds"])
            if let v = jwtNode["cache_entries"].int(min: 0, max: 10_000_000) { settings.jwt.cacheEntries = Int(v) }
            if let v = jwtNode["cache_ttl_seconds"].int(min: 0, max: 86_400) { settings.jwt.cacheTTLSeconds = v }
            var seen: [String: String] = [:]
            for issuerNode in jwtNode["issuers"].array() ?? [] {
                guard let issuer = readIssuer(issuerNode, baseDirectory: baseDirectory, files: files) else { continue }
                if let first = seen[issuer.issuer] {
                    issuerNode["issuer"].fail("duplicate issuer \"\(issuer.issuer)\" (first at \(first))")
                } else {
                    seen[issuer.issuer] = issuerNode.pointer
                }
                settings.jwt.issuers.append(issuer)
            }
        }
        return settings
    }

    static func readIssuer(_ node: ConfigNode, baseDirectory: String, files: any ConfigFiles) -> JWTIssuerConfig? {
        guard node.object(required: true) != nil else { return nil }
        node.rejectUnknownKeys(["issuer", "audiences", "keys", "jwks_file", "jwks_url", "jwks_refresh_seconds", "identity_claim",
                                "leeway_seconds", "required_claims", "max_token_bytes", "comment"])
        guard let name = node["issuer"].nonEmptyString(required: true) else { return nil }
        var issuer = JWTIssuerConfig(issuer: name)
        issuer.audiences = node["audiences"].stringList() ?? []
        if let v = node["identity_claim"].nonEmptyString() { issuer.identityClaim = v }
        if let v = node["leeway_seconds"].int(min: 0, max: 3600) { issuer.leewaySeconds = v }
        if let v = node["max_token_bytes"].int(min: 256, max: 65_536) { issuer.maxTokenBytes = Int(v) }
        if let v = node["jwks_refresh_seconds"].int(min: 10, max: 86_400) { issuer.jwksRefreshSeconds = Int(v) }
        // Tokens without `exp` never expire; refuse them unless the operator opts out with [].
        issuer.requiredClaims = node["required_claims"].stringList() ?? ["exp"]
        for (i, keyNode) in (node["keys"].array() ?? []).enumerated() {
            if let key = readKey(keyNode, baseDirectory: baseDirectory, files: files) {
                if let kid = key.kid, issuer.keys.contains(where: { $0.kid == kid && $0.algorithm == key.algorithm }) {
                    keyNode.fail("duplicate kid \"\(kid)\" for \(key.algorithm.rawValue) in keys/\(i)")
                }
                issuer.keys.append(key)
            }
        }
        if let file = node["jwks_file"].nonEmptyString() {
            let path = file.hasPrefix("/") ? file : baseDirectory + "/" + file
            if let data = files.contents(path) {
                do {
                    let document = try JSONCodec.parse(data, rejectDuplicateKeys: true)
                    let (keys, problems) = VerificationKey.jwkSet(document)
                    for p in problems { node["jwks_file"].fail("\(path): \(p)") }
                    if keys.isEmpty && problems.isEmpty { node["jwks_file"].fail("\(path): the JWK Set has no keys") }
                    issuer.keys += keys
                } catch {
                    node["jwks_file"].fail("\(path): \(error.description)")
                }
            } else {
                node["jwks_file"].fail("cannot read \(path)")
            }
        }
        if let url = node["jwks_url"].nonEmptyString() {
            let lower = url.lowercased()
            if (lower.hasPrefix("https://") || lower.hasPrefix("http://")) && !url.contains(" ") && url.utf8.count > 8 {
                issuer.jwksURL = url
            } else {
                node["jwks_url"].fail("expected an http:// or https:// URL")
            }
        }
        if issuer.keys.isEmpty && issuer.jwksURL == nil && node["keys"].isPresent == false && !node["jwks_file"].isPresent {
            node.fail("an issuer needs \"keys\", \"jwks_file\" or \"jwks_url\"")
        }
        return issuer
    }

    /// One entry of an issuer's `keys`: a JWK object, `{"pem" | "pem_file", "alg", "kid"}` or
    /// `{"secret", "alg", "kid"}`.
    static func readKey(_ node: ConfigNode, baseDirectory: String, files: any ConfigFiles) -> VerificationKey? {
        guard let object = node.value?.objectValue else { node.fail("expected an object (a JWK, a PEM key or a secret)"); return nil }
        if object["kty"] != nil {
            do { return try VerificationKey.jwk(object) } catch { node.fail(error.description); return nil }
        }
        node.rejectUnknownKeys(["pem", "pem_file", "secret", "alg", "kid", "comment"])
        guard let algName = node["alg"].nonEmptyString(required: true) else { return nil }
        guard let alg = JWSAlgorithm(rawValue: algName) else {
            node["alg"].fail("unsupported algorithm \"\(algName)\" (supported: \(JWSAlgorithm.names))"); return nil
        }
        let kid = node["kid"].nonEmptyString()
        let sources = ["pem", "pem_file", "secret"].filter { node[$0].isPresent }
        guard sources.count == 1 else { node.fail("give exactly one of \"pem\", \"pem_file\", \"secret\" (or a JWK with \"kty\")"); return nil }
        do {
            switch sources[0] {
            case "secret":
                guard let s = node["secret"].nonEmptyString() else { return nil }
                return try VerificationKey.secret(Array(s.utf8), algorithm: alg, kid: kid)
            case "pem":
                guard let pem = node["pem"].nonEmptyString() else { return nil }
                return try VerificationKey.pem(pem, algorithm: alg, kid: kid)
            default:
                guard let file = node["pem_file"].nonEmptyString() else { return nil }
                let path = file.hasPrefix("/") ? file : baseDirectory + "/" + file
                guard let data = files.contents(path) else { node["pem_file"].fail("cannot read \(path)"); return nil }
                do {
                    return try VerificationKey.pem(String(decoding: data, as: UTF8.self), algorithm: alg, kid: kid)
                } catch {
                    node["pem_file"].fail("\(path): \(error.description)")
                    return nil
                }
            }
        } catch {
            node["alg"].fail(error.description)
            return nil
        }
    }

    /// Reads a route's `auth` object.
    public static func readRoutePolicy(_ node: ConfigNode) -> RouteAuthPolicy? {
        guard node.isPresent, node.object() != nil else { return nil }
        node.rejectUnknownKeys(["methods", "anonymous", "scopes", "groups"])
        var policy = RouteAuthPolicy()
        if let names = node["methods"].stringList() {
            var methods: [AuthMethod] = []
            for (i, name) in names.enumerated() {
                guard let m = AuthMethod(rawValue: name) else {
                    node["methods"]["\(i)"].fail("unknown method \"\(name)\" (expected api_key, jwt or mtls)"); continue
                }
                if methods.contains(m) { node["methods"]["\(i)"].fail("\"\(name)\" is listed twice") } else { methods.append(m) }
            }
            if names.isEmpty { node["methods"].fail("list at least one method") }
            policy.methods = methods
        }
        policy.anonymous = node["anonymous"].bool() ?? false
        policy.scopes = tokenList(node["scopes"], what: "scope")
        policy.groups = tokenList(node["groups"], what: "group")
        return policy
    }

    /// Checks route policies against what is configured, e.g. a route that accepts only JWTs
    /// while no issuer exists would refuse every request.
    public static func validateRoutePolicy(_ policy: RouteAuthPolicy, node: ConfigNode, settings: AuthSettings, consumers: [Consumer]) {
        if policy.methods == [.jwt] && settings.jwt.issuers.isEmpty {
            node["methods"].fail("the route accepts only \"jwt\" but no issuer is configured under /auth/jwt/issuers")
        }
        if policy.methods == [.apiKey] && !consumers.contains(where: { !$0.apiKeys.isEmpty }) {
            node["methods"].fail("the route accepts only \"api_key\" but no consumer has an API key")
        }
        if policy.methods == [.mtls] && !consumers.contains(where: { !$0.certificates.isEmpty }) {
            node["methods"].fail("the route accepts only \"mtls\" but no consumer has a certificate")
        }
        let known = Set(consumers.flatMap(\.groups))
        for (i, group) in policy.groups.enumerated() where !known.contains(group) && !policy.methods.contains(.jwt) {
            node["groups"]["\(i)"].fail("no consumer is in group \"\(group)\"")
        }
    }

    static func credentialId(_ node: ConfigNode) -> String? {
        guard let id = node.nonEmptyString(required: true) else { return nil }
        if !HeaderHygiene.isSafeHeaderValue(id) { node.fail("must not contain control characters (it is sent in X-Credential-ID)") }
        return id
    }

    /// A list of scope or group names: non-empty, no spaces, commas or control characters
    /// (they are joined into one header value).
    static func tokenList(_ node: ConfigNode, what: String) -> [String] {
        var out: [String] = []
        for (i, name) in (node.stringList() ?? []).enumerated() {
            if name.isEmpty || name.utf8.contains(where: { $0 <= 0x20 || $0 == 0x2C || $0 == 0x7F || $0 == 0x22 }) {
                (node.value?.arrayValue != nil ? node["\(i)"] : node).fail("invalid \(what) name \"\(name)\" (no spaces, commas, quotes or control characters)")
            } else {
                out.append(name)
            }
        }
        return out
    }

    static func timestamp(_ node: ConfigNode) -> Int64? {
        guard node.isPresent else { return nil }
        if let i = node.value?.intValue { return i }
        if let s = node.value?.stringValue {
            if let t = RFC3339.parse(s) { return t }
            node.fail("expected an RFC 3339 time such as \"2026-12-31T23:59:59Z\" or Unix seconds, found \"\(s)\"")
            return nil
        }
        node.fail("expected an RFC 3339 string or Unix seconds, found \(node.value?.typeName ?? "nothing")")
        return nil
    }
}
