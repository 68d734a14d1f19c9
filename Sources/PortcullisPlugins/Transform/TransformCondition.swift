import PortcullisCore

/// When a rule set applies. Every member given must hold (logical AND); an absent condition
/// always holds.
public struct TransformCondition: Sendable, Equatable {
    public enum HeaderRule: Sendable, Equatable {
        case present
        case absent
        case equals(String)
    }

    /// A status code set: one code, or an inclusive range (`"4xx"`, `"500-599"`).
    public struct StatusRange: Sendable, Equatable {
        public let range: ClosedRange<Int>
        public func contains(_ status: Int) -> Bool { range.contains(status) }
    }

    /// Upper-case methods; nil means any.
    public var methods: Set<String>?
    /// Lower-case header names of the phase's message (request headers in the request phase,
    /// upstream response headers in the response phase).
    public var headers: [(name: String, rule: HeaderRule)] = []
    /// Claim name → required value; an array claim holds when it contains the value.
    public var claims: [(name: String, value: JSONValue)] = []
    /// The consumer must belong to at least one of these groups.
    public var consumerGroups: [String]?
    /// Response phase only.
    public var status: [StatusRange]?

    public init() {}

    public static func == (a: TransformCondition, b: TransformCondition) -> Bool {
        a.methods == b.methods && a.headers.map(\.name) == b.headers.map(\.name) && a.headers.map(\.rule) == b.headers.map(\.rule)
            && a.claims.map(\.name) == b.claims.map(\.name) && a.claims.map(\.value) == b.claims.map(\.value)
            && a.consumerGroups == b.consumerGroups && a.status == b.status
    }

    /// Decides whether the rule set applies. `status` is nil in the request phase.
    public func matches(method: String, headers messageHeaders: HTTPHeaders, status: Int?, context: TemplateContext) -> Bool {
        // HEAD is GET without the body: a rule for GET applies to HEAD too, so both answer the
        // same head (Content-Length included).
        if let methods, !methods.contains(method), !(method == "HEAD" && methods.contains("GET")) { return false }
        for (name, rule) in headers {
            let value = messageHeaders[name]
            switch rule {
            case .present: if value == nil { return false }
            case .absent: if value != nil { return false }
            case .equals(let expected): if value != expected { return false }
            }
        }
        for (name, expected) in claims {
            guard let claim = context.claims?[name] else { return false }
            if claim != expected {
                guard case .array(let items) = claim, items.contains(expected) else { return false }
            }
        }
        if let consumerGroups, !consumerGroups.contains(where: context.consumerGroups.contains) { return false }
        if let ranges = self.status {
            guard let status, ranges.contains(where: { $0.contains(status) }) else { return false }
        }
        return true
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
