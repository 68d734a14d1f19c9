import Foundation

/// Where a limit's counters live.
public enum RateLimitStoreKind: String, Sendable, Hashable {
    /// The instance's shared-memory table (exact across the workers of one gateway).
    case local
    /// Redis, shared by every gateway instance.
    case redis
}

/// What a Redis-backed limit does while Redis is down or slow.
public enum RateLimitFailurePolicy: String, Sendable, Hashable {
    /// Admit the request (availability over enforcement).
    case open
    /// Refuse the request with 503 (enforcement over availability).
    case closed
    /// Count in the local table with the limit divided by the number of instances.
    case local
}

/// One limit of a route, as configured.
public struct RateLimitSpec: Sendable, Hashable {
    public var name: String { didSet { refreshTexts() } }
    public var params: RateLimitParams { didSet { refreshTexts() } }
    public var key: [RateLimitKeyPart]
    public var store: RateLimitStoreKind
    public var onStoreFailure: RateLimitFailurePolicy
    /// Per consumer-group overrides (plans), in declaration order: the first group of the
    /// list that the consumer belongs to wins.
    public var groups: [(group: String, params: RateLimitParams)] { didSet { refreshTexts() } }
    /// The texts of `name` with `params`, made when either is set (a request formats none of them).
    public private(set) var texts: RateLimitTexts
    /// The texts of each plan of `groups`, in its order.
    private var groupTexts: [RateLimitTexts]
    /// What one request charges (default 1).
    public var cost: RateLimitCost = .constant(1)
    /// `shadow`: counted and logged, never rejects.
    public var mode: RateLimitMode = .enforce
    /// How a denial is answered.
    public var rejection: RateLimitRejection = .standard
    /// Leave this limit out of the RateLimit response fields.
    public var hideClientHeaders = false
    /// Requests this limit does not apply to (nil: none).
    public var exempt: RateLimitExemptions?

    public init(name: String, params: RateLimitParams, key: [RateLimitKeyPart], store: RateLimitStoreKind = .local,
                onStoreFailure: RateLimitFailurePolicy = .local, groups: [(group: String, params: RateLimitParams)] = []) {
        self.name = name
        self.params = params
        self.key = key
        self.store = store
        self.onStoreFailure = onStoreFailure
        self.groups = groups
        texts = RateLimitTexts(name: name, params: params)
        groupTexts = groups.map { RateLimitTexts(name: name, params: $0.params) }
    }

    private mutating func refreshTexts() {
        texts = RateLimitTexts(name: name, params: params)
        groupTexts = groups.map { RateLimitTexts(name: name, params: $0.params) }
    }

    /// Whether the limit's results show in the RateLimit response fields.
    var advertised: Bool { mode == .enforce && !hideClientHeaders && params.algorithm != .concurrency }

    /// Whether a key part or the cost reads the request itself: only then does the gateway put
    /// the request into the ``RateLimitSubject`` (copying it there costs more than the rest of
    /// the subject).
    public var readsRequest: Bool {
        if case .header = cost { return true }
        return key.contains { $0.readsRequest }
    }

    /// Whether a key part is `credential`: only then does the gateway make the identity's
    /// ``Identity/rateLimitCredential`` text for the ``RateLimitSubject``.
    public var readsCredential: Bool { key.contains(.credential) }

    /// The parameters that apply to a consumer in `consumerGroups`.
    public func params(forGroups consumerGroups: [String]) -> RateLimitParams { variant(forGroups: consumerGroups).params }

    /// The parameters that apply to a consumer in `consumerGroups`, with their texts.
    func variant(forGroups consumerGroups: [String]) -> (params: RateLimitParams, texts: RateLimitTexts) {
        if !groups.isEmpty, !consumerGroups.isEmpty {
            for (i, plan) in groups.enumerated() where consumerGroups.contains(plan.group) { return (plan.params, groupTexts[i]) }
        }
        return (params, texts)
    }

    public static func == (a: RateLimitSpec, b: RateLimitSpec) -> Bool {
        a.name == b.name && a.params == b.params && a.key == b.key && a.store == b.store
            && a.onStoreFailure == b.onStoreFailure && a.groups.map(\.group) == b.groups.map(\.group)
            && a.groups.map(\.params) == b.groups.map(\.params) && a.cost == b.cost && a.mode == b.mode
            && a.rejection == b.rejection && a.hideClientHeaders == b.hideClientHeaders && a.exempt == b.exempt
    }

    public func hash(into h: inout Hasher) {
        h.combine(name)
        h.combine(params)
    }
}

/// The top-level `rate_limit` section.
public struct RateLimitSettings: Sendable, Equatable {
    /// Slots of the shared-memory table (fixed at start; a reload does not resize it).
    public var tableSlots = 65_536
    public var redis: RedisSettings?
    public init() {}
}

/// Reads the `limits` of a route and the top-level `rate_limit` section.
public enum RateLimitConfigReader {
    static let limitKeys: Set<String> = ["name", "algorithm", "limit", "window_seconds", "burst", "key", "store",
                                         "on_store_failure", "groups", "comment", "cost", "mode", "rejection",
                                         "hide_client_headers", "exempt", "lease_seconds"]

    /// Reads `rate_limit`; `baseDirectory` (the config file's) resolves a relative Redis
    /// `password_file`, whose bytes come from `files`; `environment` looks up `password_env`.
    public static func readSettings(_ node: ConfigNode, baseDirectory: String = ".", files: any ConfigFiles = NoConfigFiles(),
                                    environment: (String) -> String? = { ProcessInfo.processInfo.environment[$0] }) -> RateLimitSettings {
        var s = RateLimitSettings()
        guard node.isPresent, node.object() != nil else { return s }
        node.rejectUnknownKeys(["table_slots", "redis", "comment"])
        if let v = node["table_slots"].int(min: 64, max: 1 << 26) { s.tableSlots = Int(v) }
        let r = node["redis"]
        guard r.isPresent, r.object() != nil else { return s }
        s.redis = RedisSettingsReader.read(r, baseDirectory: baseDirectory, files: files, environment: environment)
        return s
    }

    /// Reads a route's `limits` array; `settings` tells whether a Redis is configured.
    public static func readLimits(_ node: ConfigNode, settings: RateLimitSettings) -> [RateLimitSpec] {
        var specs: [RateLimitSpec] = []
        var seen: [String: String] = [:]
        for (index, item) in (node.array() ?? []).enumerated() {
            guard let spec = readLimit(item, index: index, settings: settings) else { continue }
            if let first = seen[spec.name] {
                item["name"].fail("duplicate limit name \"\(spec.name)\" (first at \(first))")
                continue
            }
            seen[spec.name] = item.pointer
            specs.append(spec)
        }
        return specs
    }

    static func readLimit(_ node: ConfigNode, index: Int, settings: RateLimitSettings) -> RateLimitSpec? {
        guard node.object(required: true) != nil else { return nil }
        node.rejectUnknownKeys(limitKeys)
        let name = node["name"].nonEmptyString() ?? "limit-\(index)"
        if name.contains("|") { node["name"].fail("must not contain \"|\"") }
        var algorithm: RateLimitAlgorithm?
        if let a = node["algorithm"].string(required: true) {
            algorithm = RateLimitAlgorithm(rawValue: a)
            if algorithm == nil {
                node["algorithm"].fail("unknown algorithm \"\(a)\" (token_bucket, sliding_window, fixed_window or concurrency)")
            }
        }
        var parts: [RateLimitKeyPart] = []
        if let keyNodes = node["key"].array(required: true) {
            if keyNodes.isEmpty { node["key"].fail("at least one key part is required") }
            for k in keyNodes {
                guard let s = k.string(required: true) else { continue }
                if let part = RateLimitKeyPart(configValue: s) {
                    if parts.contains(part) { k.fail("duplicate key part \"\(s)\"") } else { parts.append(part) }
                } else {
                    k.fail("unknown key part \"\(s)\" (\(RateLimitKeyPart.syntax))")
                }
            }
        }
        var store = RateLimitStoreKind.local
        if let s = node["store"].string() {
            if let kind = RateLimitStoreKind(rawValue: s) { store = kind } else {
                node["store"].fail("unknown store \"\(s)\" (local or redis)")
            }
        }
        if store == .redis && settings.redis == nil {
            node["store"].fail("store \"redis\" needs a top-level \"rate_limit\": {\"redis\": {…}} section")
        }
        var policy = RateLimitFailurePolicy.local
        if let s = node["on_store_failure"].string() {
            if let p = RateLimitFailurePolicy(rawValue: s) { policy = p } else {
                node["on_store_failure"].fail("unknown policy \"\(s)\" (open, closed or local)")
            }
            if store != .redis { node["on_store_failure"].fail("only applies to limits with \"store\": \"redis\"") }
        }
        guard let algorithm else { return nil }
        guard let params = readParams(node, algorithm: algorithm, defaults: nil) else { return nil }
        var groups: [(group: String, params: RateLimitParams)] = []
        for (group, g) in node["groups"].object() ?? [] {
            guard g.object(required: true) != nil else { continue }
            g.rejectUnknownKeys(["limit", "window_seconds", "burst", "lease_seconds"])
            if let p = readParams(g, algorithm: algorithm, defaults: params) { groups.append((group, p)) }
        }
        if algorithm == .concurrency, store == .redis {
            node["store"].fail("a concurrency limit is held in the shared-memory table only (store \"local\")")
        }
        guard !parts.isEmpty else { return nil }
        var spec = RateLimitSpec(name: name, params: params, key: parts, store: store, onStoreFailure: policy, groups: groups)
        RateLimitOptionsReader.read(node, into: &spec)
        return spec
    }

    /// `limit`, `window_seconds` and `burst`, each falling back to `defaults` (group overrides).
    static func readParams(_ node: ConfigNode, algorithm: RateLimitAlgorithm, defaults: RateLimitParams?) -> RateLimitParams? {
        let maxLimit = RateLimitParams.maxLimit(algorithm)
        let limit = node["limit"].int(min: 1, max: maxLimit, required: defaults == nil) ?? defaults?.limit
        let maxSeconds = RateLimitParams.maxWindowMicros / 1_000_000
        // A concurrency limit has no window: its leases last `lease_seconds` (default 60).
        let windowField = algorithm == .concurrency ? "lease_seconds" : "window_seconds"
        if algorithm == .concurrency, node["window_seconds"].isPresent {
            node["window_seconds"].fail("a concurrency limit has no window (its leases last \"lease_seconds\")")
        } else if algorithm != .concurrency, node["lease_seconds"].isPresent {
            node["lease_seconds"].fail("only applies to the concurrency algorithm")
        }
        let window = node[windowField].int(min: 1, max: maxSeconds, required: defaults == nil && algorithm != .concurrency)
            .map { $0 * 1_000_000 } ?? defaults?.windowMicros ?? (algorithm == .concurrency ? 60_000_000 : nil)
        var burst: Int64?
        if node["burst"].isPresent {
            if algorithm != .tokenBucket {
                node["burst"].fail("only applies to the token_bucket algorithm")
            } else {
                burst = node["burst"].int(min: 1, max: maxLimit)
            }
        } else if let defaults, let limit, defaults.burst != defaults.limit {
            // A plan that raises the limit keeps the base burst-to-limit ratio.
            burst = max(1, defaults.burst * limit / defaults.limit)
        }
        guard let limit, let window else { return nil }
        if algorithm == .tokenBucket, window / limit < 1 {
            node["limit"].fail("a token bucket refills at most one request per microsecond")
            return nil
        }
        return RateLimitParams(algorithm: algorithm, limit: limit, windowMicros: window, burst: burst)
    }
}
