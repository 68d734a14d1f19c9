/// What one request charges a limit (Envoy's `hits_addend`): a constant, or a number the
/// request carries in a header or a verified JWT claim, within bounds.
public enum RateLimitCost: Sendable, Hashable {
    case constant(Int64)
    /// A request header (lower-case name) holding a decimal integer in `1...max`; `default` when absent.
    case header(String, default: Int64, max: Int64)
    /// A claim of the verified JWT holding an integer (number or decimal string) in `1...max`;
    /// `default` when absent (or when the request has no token).
    case claim(String, default: Int64, max: Int64)

    /// Largest cost a limit can take (the sliding window's packed count is the smallest).
    public static let maxCost: Int64 = 1_000_000

    /// The request's cost, or why it has none (the text of the 400 answer).
    public func resolve(_ subject: RateLimitSubject) -> Result<Int64, RateLimitCostError> {
        switch self {
        case .constant(let c):
            return .success(c)
        case .header(let name, let fallback, let max):
            return Self.parse(subject.headerValue(name), fallback: fallback, max: max, source: "header \"\(name)\"")
        case .claim(let name, let fallback, let max):
            return Self.parse(subject.claimValue(name), fallback: fallback, max: max, source: "claim \"\(name)\"")
        }
    }

    private static func parse(_ text: String?, fallback: Int64, max: Int64, source: @autoclosure () -> String)
        -> Result<Int64, RateLimitCostError>
    {
        guard let text else { return .success(fallback) }
        // Digits only (no sign, no spaces, at most 7 of them): anything else is the client's error.
        if !text.isEmpty, text.utf8.count <= 7, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
           let v = Int64(text), v >= 1, v <= max {
            return .success(v)
        }
        return .failure(RateLimitCostError(message: "\(source()) must be an integer between 1 and \(max)"))
    }
}

/// A request cost that could not be read (answered 400).
public struct RateLimitCostError: Error, Sendable, Equatable {
    public var message: String
}

/// Whether a limit's denials reject the request.
public enum RateLimitMode: String, Sendable, Hashable {
    /// Denials are answered (429 by default).
    case enforce
    /// Counted and logged, never rejected (dry run, for rolling out a new limit).
    case shadow
}

/// How a limit's denial is answered: the status and the problem's title and detail.
public struct RateLimitRejection: Sendable, Hashable {
    /// 429 (default) or 503.
    public var status: Int = 429
    /// The problem's `title`; nil: the status's reason phrase.
    public var title: String?
    /// The problem's `detail`; nil: `rate limit "<name>" exceeded; retry in <n> s`.
    public var detail: String?
    public init(status: Int = 429, title: String? = nil, detail: String? = nil) {
        self.status = status
        self.title = title
        self.detail = detail
    }
    public static let standard = RateLimitRejection()
}

/// Requests a limit does not apply to: consumers, consumer groups, client networks.
public struct RateLimitExemptions: Sendable, Hashable {
    public var consumers: [String] = []
    public var groups: [String] = []
    public var clients: [CIDR] = []
    public init(consumers: [String] = [], groups: [String] = [], clients: [CIDR] = []) {
        self.consumers = consumers
        self.groups = groups
        self.clients = clients
    }

    public var isEmpty: Bool { consumers.isEmpty && groups.isEmpty && clients.isEmpty }

    /// Whether `subject` is exempt.
    public func exempts(_ subject: RateLimitSubject) -> Bool {
        if let c = subject.consumerId, consumers.contains(c) { return true }
        if !groups.isEmpty, subject.consumerGroups.contains(where: { groups.contains($0) }) { return true }
        if !clients.isEmpty, CIDR.any(clients, contains: subject.clientIP) { return true }
        return false
    }
}

/// Reads a limit's `cost`, `mode`, `rejection`, `hide_client_headers` and `exempt`.
enum RateLimitOptionsReader {
    static func read(_ node: ConfigNode, into spec: inout RateLimitSpec) {
        if let cost = readCost(node["cost"], quota: spec.params.quota) { spec.cost = cost }
        if let m = node["mode"].string() {
            if let mode = RateLimitMode(rawValue: m) { spec.mode = mode } else {
                node["mode"].fail("unknown mode \"\(m)\" (enforce or shadow)")
            }
        }
        let r = node["rejection"]
        if r.isPresent, r.object() != nil {
            r.rejectUnknownKeys(["status", "title", "detail"])
            if let status = r["status"].int() {
                if status == 429 || status == 503 { spec.rejection.status = Int(status) } else {
                    r["status"].fail("must be 429 or 503, found \(status)")
                }
            }
            spec.rejection.title = r["title"].nonEmptyString()
            spec.rejection.detail = r["detail"].nonEmptyString()
        }
        if let hide = node["hide_client_headers"].bool() { spec.hideClientHeaders = hide }
        let e = node["exempt"]
        if e.isPresent, e.object() != nil {
            e.rejectUnknownKeys(["consumers", "groups", "clients"])
            var exempt = RateLimitExemptions()
            exempt.consumers = e["consumers"].array()?.compactMap { $0.nonEmptyString(required: true) } ?? []
            exempt.groups = e["groups"].array()?.compactMap { $0.nonEmptyString(required: true) } ?? []
            for c in e["clients"].array() ?? [] {
                guard let text = c.string(required: true) else { continue }
                if let network = CIDR(text) { exempt.clients.append(network) } else {
                    c.fail("not an IPv4 or IPv6 address or network (a.b.c.d/n, x:y::/n)")
                }
            }
            if !exempt.isEmpty { spec.exempt = exempt }
        }
    }

    static func readCost(_ node: ConfigNode, quota: Int64) -> RateLimitCost? {
        guard node.isPresent else { return nil }
        if node.value?.intValue != nil {
            guard let c = node.int(min: 1, max: RateLimitCost.maxCost) else { return nil }
            if c > quota { node.fail("a cost of \(c) is above the limit's quota \(quota): no request could pass") }
            return .constant(c)
        }
        guard node.object() != nil else {
            node.fail("expected an integer or {\"header\"|\"claim\": <name>, \"max\": <n>, \"default\": <n>}")
            return nil
        }
        node.rejectUnknownKeys(["header", "claim", "max", "default"])
        let max = node["max"].int(min: 1, max: RateLimitCost.maxCost, required: true)
        let fallback = node["default"].int(min: 1, max: max ?? RateLimitCost.maxCost) ?? 1
        let header = node["header"].nonEmptyString(), claim = node["claim"].nonEmptyString()
        guard let max else { return nil }
        switch (header, claim) {
        case (let h?, nil):
            guard h.utf8.allSatisfy({ HTTPToken.isTokenByte($0) }) else { node["header"].fail("not a header name"); return nil }
            return .header(h.asciiLowercased, default: fallback, max: max)
        case (nil, let c?):
            return .claim(c, default: fallback, max: max)
        default:
            node.fail("needs exactly one of \"header\" or \"claim\"")
            return nil
        }
    }
}
