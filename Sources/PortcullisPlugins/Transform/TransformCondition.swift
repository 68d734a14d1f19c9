import PortcullisCore

/// When a rule set applies. Every member given must hold (logical AND); an absent condition
/// always holds. `any` and `not` nest conditions, `ValueRule` is the one way every named value
/// (header, query parameter, cookie, path, consumer, claim) is tested.
public struct TransformCondition: Sendable {
    /// A status code set: one code, or an inclusive range (`"4xx"`, `"500-599"`).
    public struct StatusRange: Sendable, Equatable {
        public let range: ClosedRange<Int>
        public func contains(_ status: Int) -> Bool { range.contains(status) }
    }

    /// Upper-case methods; nil means any.
    public var methods: Set<String>?
    /// Lower-case header names of the phase's message (request headers in the request phase,
    /// upstream response headers in the response phase).
    public var headers: [(name: String, rule: ValueRule)] = []
    /// Query parameters (names case-sensitive, decoded values).
    public var query: [(name: String, rule: ValueRule)] = []
    /// Request cookies by name.
    public var cookies: [(name: String, rule: ValueRule)] = []
    /// The request path.
    public var path: ValueRule?
    /// The client's address must be in one of these networks (or, `clientIPNegated`, in none).
    public var clientIP: [CIDR]?
    public var clientIPNegated = false
    /// The authenticated consumer's id (absent for anonymous requests).
    public var consumer: ValueRule?
    /// Claim name → rule; scalars in the rule file are equality with the claim's JSON value, an
    /// array claim holds when one element does.
    public var claims: [(name: String, rule: ClaimRule)] = []
    /// The consumer must belong to at least one of these groups.
    public var consumerGroups: [String]?
    /// Response phase only.
    public var status: [StatusRange]?
    /// At least one of these must hold.
    public var any: [TransformCondition]?
    /// This must not hold.
    public var not: [TransformCondition] = []

    public init() {}

    /// Decides whether the rule set applies on `message` (`status` is nil in the request phase).
    ///
    /// Members that read something in `undecided` (changed by an earlier rule set that may
    /// apply) are taken to hold: the answer is then whether the rule set *could* apply, which is
    /// what deciding to buffer a body needs before the earlier rule sets have run.
    public func matches(_ message: ConditionMessage, context: TemplateContext, undecided: MessageChanges = .none) -> Bool {
        // HEAD is GET without the body: a rule for GET applies to HEAD too, so both answer the
        // same head (Content-Length included).
        if let methods, !undecided.method, !methods.contains(message.method),
           !(message.method == "HEAD" && methods.contains("GET")) { return false }
        for (name, rule) in headers where !undecided.changes(header: name) {
            if !rule.matches(message.headers[name]) { return false }
        }
        if !query.isEmpty {
            let items = message.queryItems()
            for (name, rule) in query where !undecided.changes(query: name) {
                if !rule.matches(items.first(where: { $0.name == name })?.value) { return false }
            }
        }
        if !cookies.isEmpty, !undecided.changes(header: "cookie") {
            for (name, rule) in cookies where !rule.matches(CookieHeader.value(named: name, in: message.cookieHeader)) { return false }
        }
        if let path, !undecided.path, !path.matches(message.path) { return false }
        if let clientIP {
            let inside = CIDR.any(clientIP, contains: context.clientIP)
            if inside == clientIPNegated { return false }
        }
        if let consumer, !consumer.matches(context.consumerId) { return false }
        for (name, rule) in claims where !rule.matches(context.claims?[name]) { return false }
        if let consumerGroups, !consumerGroups.contains(where: context.consumerGroups.contains) { return false }
        if let ranges = self.status, !undecided.status {
            guard let status = message.status, ranges.contains(where: { $0.contains(status) }) else { return false }
        }
        if let any, !any.contains(where: { $0.matches(message, context: context, undecided: undecided) }) { return false }
        for negated in not where !negated.reads(undecided) {
            if negated.matches(message, context: context) { return false }
        }
        return true
    }

    /// True when a member reads something in `changes` (a negation of it cannot be decided).
    func reads(_ changes: MessageChanges) -> Bool {
        (methods != nil && changes.method) || headers.contains { changes.changes(header: $0.name) }
            || query.contains { changes.changes(query: $0.name) } || (!cookies.isEmpty && changes.changes(header: "cookie"))
            || (path != nil && changes.path) || (status != nil && changes.status)
            || (any ?? []).contains { $0.reads(changes) } || not.contains { $0.reads(changes) }
    }

    /// Parses `"404"`-style codes given as numbers, and `"4xx"` / `"400-499"` strings.
    static func parseStatus(_ value: JSONValue) -> StatusRange? {
        if let code = value.intValue {
            guard (100...599).contains(code) else { return nil }
            return StatusRange(range: Int(code)...Int(code))
        }
        guard let text = value.stringValue?.lowercased() else { return nil }
        if text.count == 3, text.hasSuffix("xx"), let first = text.first?.wholeNumberValue, (1...5).contains(first) {
            return StatusRange(range: first * 100...first * 100 + 99)
        }
        let bounds = text.split(separator: "-", omittingEmptySubsequences: false)
        if bounds.count == 2, let low = Int(bounds[0]), let high = Int(bounds[1]), 100 <= low, low <= high, high <= 599 {
            return StatusRange(range: low...high)
        }
        if let code = Int(text), (100...599).contains(code) { return StatusRange(range: code...code) }
        return nil
    }
}

/// What a condition reads of the message its phase works on.
public struct ConditionMessage {
    /// The current request method (response phase: the client's).
    public var method: String
    /// The current request path (response phase: the client's).
    public var path: String
    /// The phase's headers: the request's, or the upstream response's.
    public var headers: HTTPHeaders
    /// The request's headers (the same as `headers` in the request phase), for cookies.
    public var requestHeaders: HTTPHeaders
    public var status: Int?
    /// The query parameters, parsed only when a condition reads them.
    private let rawQuery: String
    private let parsedQuery: [(name: String, value: String)]?

    public init(method: String, path: String, headers: HTTPHeaders, requestHeaders: HTTPHeaders, status: Int?,
                rawQuery: String = "", query: [(name: String, value: String)]? = nil) {
        self.method = method
        self.path = path
        self.headers = headers
        self.requestHeaders = requestHeaders
        self.status = status
        self.rawQuery = rawQuery
        self.parsedQuery = query
    }

    func queryItems() -> [(name: String, value: String)] { parsedQuery ?? QueryString.parse(rawQuery) }
    var cookieHeader: String? { requestHeaders["cookie"] }

    /// The request phase's view of `request` (`query`: parameters already edited by operations).
    static func request(_ request: TransformableRequest, query: [(name: String, value: String)]?) -> ConditionMessage {
        ConditionMessage(method: request.method, path: request.path, headers: request.headers, requestHeaders: request.headers,
                         status: nil, rawQuery: request.rawQuery, query: query)
    }

    /// The response phase's view: the upstream's status and headers, the client's request.
    static func response(status: Int, headers: HTTPHeaders, context: TemplateContext) -> ConditionMessage {
        ConditionMessage(method: context.method, path: context.path, headers: headers, requestHeaders: context.requestHeaders,
                         status: status, query: context.queryItems)
    }
}

/// How one named value is tested: `true` present, `false` absent, a string equal, an array
/// one of, `{"regex"}` a match (ICU, unanchored), `{"not": rule}` the opposite.
public indirect enum ValueRule: Sendable {
    case present
    case absent
    case equals(String)
    case anyOf([String])
    case regex(CompiledRegex)
    case not(ValueRule)

    public func matches(_ value: String?) -> Bool {
        switch self {
        case .present: return value != nil
        case .absent: return value == nil
        case .equals(let expected): return value == expected
        case .anyOf(let list): return value.map(list.contains) ?? false
        case .regex(let regex): return value.map(regex.matches) ?? false
        case .not(let rule): return !rule.matches(value)
        }
    }
}

/// A claim test: a JSON scalar (equality with the claim's value, as in the first round), or a
/// `ValueRule` on the claim's text (strings as they are, other values as compact JSON). An
/// array claim holds when one of its elements does.
public enum ClaimRule: Sendable {
    case equals(JSONValue)
    case rule(ValueRule)

    func matches(_ claim: JSONValue?) -> Bool {
        switch self {
        case .equals(let expected):
            guard let claim else { return false }
            if claim == expected { return true }
            guard case .array(let items) = claim else { return false }
            return items.contains(expected)
        case .rule(let rule):
            guard let claim else { return rule.matches(nil) }
            if case .array(let items) = claim, !items.isEmpty {
                if case .not = rule { return items.allSatisfy { rule.matches(Self.text($0)) } }
                return items.contains { rule.matches(Self.text($0)) }
            }
            return rule.matches(Self.text(claim))
        }
    }

    static func text(_ value: JSONValue) -> String {
        if case .string(let s) = value { return s }
        return JSONCodec.serialize(value)
    }
}

/// What rule sets may change in a message, as far as conditions can read it. A chain adds up
/// the changes of the rule sets that may run before a given one.
public struct MessageChanges: Sendable, Equatable {
    public var method = false
    public var path = false
    /// Names of the query parameters that may change.
    public var query: Set<String> = []
    public var status = false
    /// The body may be replaced by a `status.map` body.
    public var body = false
    /// Every header may change (a header name known only at run time).
    public var allHeaders = false
    /// Lower-case names of the headers that may change.
    public var headers: Set<String> = []

    public init() {}

    public static let none = MessageChanges()

    func changes(header name: String) -> Bool { allHeaders || headers.contains(name) }
    func changes(query name: String) -> Bool { query.contains(name) }

    mutating func formUnion(_ other: MessageChanges) {
        method = method || other.method
        path = path || other.path
        if !other.query.isEmpty { query.formUnion(other.query) }
        status = status || other.status
        body = body || other.body
        allHeaders = allHeaders || other.allHeaders
        if !other.headers.isEmpty { headers.formUnion(other.headers) }
    }

    /// What one operation may change.
    init(_ op: TransformOperation) {
        switch op {
        case .headerAdd(let name, _), .headerSet(let name, _), .headerAppend(let name, _), .headerRemove(let name),
             .headerReplace(let name, _):
            headers = [name.asciiLowercased]
        case .hostSet:
            headers = ["host"]
        case .headerRename(let from, let to):
            headers = [from.asciiLowercased, to.asciiLowercased]
        case .methodSet:
            method = true
        case .pathTemplate, .pathRegex:
            path = true
        case .query(let pairOp):
            query = Set(pairOp.names)
        case .form:
            headers = ["content-length"]
        case .statusMap(_, let to, let body, _):
            status = to != nil
            if body != nil {
                self.body = true
                headers = ["content-type", "content-encoding"]
            }
        case .body:
            headers = ["content-length"]
        case .bodyTemplate:
            body = true
            headers = ["content-type", "content-length", "content-encoding"]
        case .cookieSet, .cookieRemove:
            headers = ["cookie", "set-cookie"]
        default:
            break
        }
    }
}
