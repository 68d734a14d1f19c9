import Foundation
import PortcullisCore

/// Per-request values that templates and conditions read. The pipeline fills one per request
/// (after authentication and routing) and passes it to both phases.
public struct TemplateContext: Sendable {
    /// The authenticated consumer's id, nil for anonymous requests.
    public var consumerId: String?
    public var consumerGroups: [String]
    /// Verified JWT claims, when the request carried a token.
    public var claims: JSONObject?
    /// Parameters captured by the route's path pattern.
    public var pathParams: [String: String]
    /// The client's request headers as received (templates never see transformed values).
    public var requestHeaders: HTTPHeaders
    /// The client's decoded query items as received.
    public var queryItems: [(name: String, value: String)]
    /// The client's method and path as received.
    public var method: String
    public var path: String
    public var requestId: String
    /// Name of the matched route.
    public var route: String
    /// Injected clock reading, rendered by `{{timestamp}}` as RFC 3339 UTC.
    public var now: Date
    /// The client's address as nginx reports it.
    public var clientIP: String?
    /// The host the client asked for (nginx's `$host`) and the scheme it used.
    public var host: String?
    public var scheme: String?

    public init(consumerId: String? = nil, consumerGroups: [String] = [], claims: JSONObject? = nil,
                pathParams: [String: String] = [:], requestHeaders: HTTPHeaders = HTTPHeaders(),
                queryItems: [(name: String, value: String)] = [], method: String = "GET", path: String = "/",
                requestId: String = "", route: String = "", now: Date = Date(timeIntervalSince1970: 0),
                clientIP: String? = nil, host: String? = nil, scheme: String? = nil) {
        self.consumerId = consumerId
        self.consumerGroups = consumerGroups
        self.claims = claims
        self.pathParams = pathParams
        self.requestHeaders = requestHeaders
        self.queryItems = queryItems
        self.method = method
        self.path = path
        self.requestId = requestId
        self.route = route
        self.now = now
        self.clientIP = clientIP
        self.host = host
        self.scheme = scheme
    }
}

/// A `{{...}}` placeholder, resolved at load time to one of these.
public enum TemplateVariable: Sendable, Equatable {
    case consumerId
    case consumerGroups
    case claim(String)
    case pathParam(String)
    /// Lower-case request header name.
    case header(String)
    case query(String)
    case requestId
    case route
    case method
    case path
    case timestamp
    /// Seconds / milliseconds since the Unix epoch.
    case unixTime
    case unixTimeMillis
    /// The response status (response phase only).
    case status
    case clientIP
    case host
    case scheme
    /// A request cookie by name.
    case cookie(String)
    /// `{{variable | number}}` and friends: the value converted for a typed JSON value.
    indirect case cast(TemplateVariable, TemplateCast)

    /// Parses the text between the braces, or explains why it is not a known variable.
    static func parse(_ text: String) -> Result<TemplateVariable, TemplateSyntaxError> {
        if let bar = text.firstIndex(of: "|") {
            let castName = text[text.index(after: bar)...].trimmingCharacters(in: .whitespaces)
            guard let cast = TemplateCast(rawValue: castName) else {
                return .failure(TemplateSyntaxError(message: "unknown conversion \"\(castName)\" (known: number, boolean, string)"))
            }
            let inner = text[..<bar].trimmingCharacters(in: .whitespaces)
            return parse(inner).map { .cast($0, cast) }
        }
        let name = text
        switch name {
        case "consumer.id": return .success(.consumerId)
        case "consumer.groups": return .success(.consumerGroups)
        case "request_id": return .success(.requestId)
        case "route": return .success(.route)
        case "method": return .success(.method)
        case "path": return .success(.path)
        case "timestamp": return .success(.timestamp)
        case "time.unix": return .success(.unixTime)
        case "time.unix_ms": return .success(.unixTimeMillis)
        case "status": return .success(.status)
        case "client_ip": return .success(.clientIP)
        case "host": return .success(.host)
        case "scheme": return .success(.scheme)
        default: break
        }
        let prefixes: [(String, (String) -> TemplateVariable)] = [
            ("claims.", { .claim($0) }), ("path.", { .pathParam($0) }),
            ("header.", { .header($0.asciiLowercased) }), ("query.", { .query($0) }), ("cookie.", { .cookie($0) }),
        ]
        for (prefix, make) in prefixes where name.hasPrefix(prefix) {
            let rest = String(name.dropFirst(prefix.count))
            if rest.isEmpty { return .failure(TemplateSyntaxError(message: "template variable \"\(name)\" needs a name after \"\(prefix)\"")) }
            return .success(make(rest))
        }
        return .failure(TemplateSyntaxError(message: "unknown template variable \"\(name)\""))
    }

    /// The value as JSON (typed: groups are an array, claims keep their JSON type, status is a
    /// number); nil when the request has no such value.
    func jsonValue(_ context: TemplateContext, status: Int?) -> JSONValue? {
        switch self {
        case .consumerGroups: return .array(context.consumerGroups.map { .string($0) })
        case .claim(let name): return context.claims?[name]
        case .status: return status.map { .int(Int64($0)) }
        case .unixTime: return .int(Int64(context.now.timeIntervalSince1970.rounded(.down)))
        case .unixTimeMillis: return .int(Int64((context.now.timeIntervalSince1970 * 1000).rounded(.down)))
        case .cast(let inner, let cast): return inner.stringValue(context, status: status).flatMap(cast.convert)
        default: return stringValue(context, status: status).map { .string($0) }
        }
    }

    /// The variable a placeholder reads (its conversion set aside).
    var base: TemplateVariable { if case .cast(let inner, _) = self { return inner }; return self }

    /// The value as text: groups comma-joined, non-string claims as compact JSON.
    func stringValue(_ context: TemplateContext, status: Int?) -> String? {
        switch self {
        case .consumerId: return context.consumerId
        case .consumerGroups: return context.consumerGroups.joined(separator: ",")
        case .claim(let name):
            guard let claim = context.claims?[name] else { return nil }
            if case .string(let s) = claim { return s }
            return JSONCodec.serialize(claim)
        case .pathParam(let name): return context.pathParams[name]
        case .header(let name): return context.requestHeaders[name]
        case .query(let name): return context.queryItems.first { $0.name == name }?.value
        case .requestId: return context.requestId
        case .route: return context.route
        case .method: return context.method
        case .path: return context.path
        case .timestamp: return RFC3339.format(context.now)
        case .unixTime: return String(Int64(context.now.timeIntervalSince1970.rounded(.down)))
        case .unixTimeMillis: return String(Int64((context.now.timeIntervalSince1970 * 1000).rounded(.down)))
        case .status: return status.map { String($0) }
        case .clientIP: return context.clientIP
        case .host: return context.host
        case .scheme: return context.scheme
        case .cookie(let name): return CookieHeader.value(named: name, in: context.requestHeaders["cookie"])
        case .cast(let inner, _): return inner.stringValue(context, status: status)
        }
    }
}

/// A conversion for typed JSON values: `{{query.n | number}}` is a JSON number when the text
/// is one, `| boolean` is `true` / `false` for the texts `true`/`1` and `false`/`0`, `| string`
/// keeps a claim or the groups as text. A text that does not convert is `null`. In a string
/// template (a header, or text around a placeholder) the value renders as its text.
public enum TemplateCast: String, Sendable, Equatable {
    case number
    case boolean
    case string

    func convert(_ text: String) -> JSONValue? {
        switch self {
        case .string: return .string(text)
        case .boolean:
            switch text.lowercased() {
            case "true", "1": return .bool(true)
            case "false", "0": return .bool(false)
            default: return nil
            }
        case .number:
            let trimmed = text.trimmingCharacters(in: .whitespaces)
            // The JSON number grammar, so the value serialises as the client wrote it.
            guard let parsed = try? JSONCodec.parse(Array(trimmed.utf8), rejectDuplicateKeys: false, keepLargeNumbers: true) else { return nil }
            switch parsed {
            case .int, .double, .number: return parsed
            default: return nil
            }
        }
    }
}

/// Why a template could not be compiled.
public struct TemplateSyntaxError: Error, Sendable, Equatable {
    public let message: String
}

/// A string with `{{variable}}` placeholders, split into parts once at load time.
public struct Template: Sendable, Equatable {
    public enum Part: Sendable, Equatable {
        case literal(String)
        case variable(TemplateVariable)
    }

    public let parts: [Part]

    /// Compiles `text`. Whitespace inside the braces is ignored (`{{ consumer.id }}`); `\\{{` is
    /// a literal `{{`.
    public static func compile(_ text: String) -> Result<Template, TemplateSyntaxError> {
        var parts: [Part] = []
        var rest = Substring(text)
        var literal = ""
        while let open = rest.range(of: "{{") {
            if open.lowerBound > rest.startIndex, rest[rest.index(before: open.lowerBound)] == "\\" {
                literal += rest[..<rest.index(before: open.lowerBound)] + "{{"
                rest = rest[open.upperBound...]
                continue
            }
            literal += rest[..<open.lowerBound]
            if !literal.isEmpty { parts.append(.literal(literal)); literal = "" }
            guard let close = rest[open.upperBound...].range(of: "}}") else {
                return .failure(TemplateSyntaxError(message: "unclosed \"{{\" in template \"\(text)\""))
            }
            let name = rest[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            switch TemplateVariable.parse(name) {
            case .success(let variable): parts.append(.variable(variable))
            case .failure(let error): return .failure(error)
            }
            rest = rest[close.upperBound...]
        }
        literal += rest
        if !literal.isEmpty { parts.append(.literal(literal)) }
        return .success(Template(parts: parts))
    }

    init(parts: [Part]) { self.parts = parts }

    /// True when the template has no placeholder: its value is known at load time.
    public var isStatic: Bool { !parts.contains { if case .variable = $0 { return true }; return false } }

    /// The placeholders used, for phase checks at load time.
    var variables: [TemplateVariable] {
        parts.compactMap { if case .variable(let v) = $0 { return v }; return nil }
    }

    /// The literal text of the template (parts joined; placeholders omitted).
    var literalText: String {
        parts.map { if case .literal(let s) = $0 { return s }; return "" }.joined()
    }

    /// Renders the template; a missing value renders as the empty string.
    public func render(_ context: TemplateContext, status: Int? = nil) -> String {
        if parts.count == 1, case .literal(let s) = parts[0] { return s }
        var out = ""
        for part in parts {
            switch part {
            case .literal(let s): out += s
            case .variable(let v): out += v.stringValue(context, status: status) ?? ""
            }
        }
        return out
    }

    /// Renders as JSON: a template that is exactly one placeholder keeps the value's JSON type
    /// (a missing value is null); anything else is a string.
    public func renderJSON(_ context: TemplateContext, status: Int? = nil) -> JSONValue {
        if parts.count == 1, case .variable(let v) = parts[0] { return v.jsonValue(context, status: status) ?? .null }
        return .string(render(context, status: status))
    }
}

/// A JSON value whose strings may hold templates, compiled at load time. Values without any
/// placeholder are kept as a plain literal so rendering them is a copy.
public indirect enum JSONTemplate: Sendable, Equatable {
    case literal(JSONValue)
    case string(Template)
    case array([JSONTemplate])
    case object([(key: String, value: JSONTemplate)])

    public static func == (a: JSONTemplate, b: JSONTemplate) -> Bool {
        switch (a, b) {
        case (.literal(let x), .literal(let y)): return x == y
        case (.string(let x), .string(let y)): return x == y
        case (.array(let x), .array(let y)): return x == y
        case (.object(let x), .object(let y)): return x.map(\.key) == y.map(\.key) && x.map(\.value) == y.map(\.value)
        default: return false
        }
    }

    /// Compiles every string of `value`; reports the pointer (relative to `value`) of a bad one.
    static func compile(_ value: JSONValue, pointer: String = "") -> Result<JSONTemplate, JSONTemplateError> {
        switch value {
        case .string(let s):
            switch Template.compile(s) {
            case .success(let t): return .success(t.isStatic ? .literal(value) : .string(t))
            case .failure(let e): return .failure(JSONTemplateError(pointer: pointer, error: e))
            }
        case .array(let items):
            var compiled: [JSONTemplate] = []
            for (i, item) in items.enumerated() {
                switch compile(item, pointer: pointer + "/\(i)") {
                case .success(let t): compiled.append(t)
                case .failure(let f): return .failure(f)
                }
            }
            return .success(compiled.allSatisfy(\.isLiteral) ? .literal(value) : .array(compiled))
        case .object(let object):
            var compiled: [(key: String, value: JSONTemplate)] = []
            for (key, item) in object.entries {
                switch compile(item, pointer: pointer + "/" + jsonPointerEscape(key)) {
                case .success(let t): compiled.append((key, t))
                case .failure(let f): return .failure(f)
                }
            }
            return .success(compiled.allSatisfy(\.value.isLiteral) ? .literal(value) : .object(compiled))
        default:
            return .success(.literal(value))
        }
    }

    var isLiteral: Bool { if case .literal = self { return true }; return false }

    var variables: [TemplateVariable] {
        switch self {
        case .literal: return []
        case .string(let t): return t.variables
        case .array(let items): return items.flatMap(\.variables)
        case .object(let members): return members.flatMap(\.value.variables)
        }
    }

    public func render(_ context: TemplateContext, status: Int? = nil) -> JSONValue {
        switch self {
        case .literal(let v): return v
        case .string(let t): return t.renderJSON(context, status: status)
        case .array(let items): return .array(items.map { $0.render(context, status: status) })
        case .object(let members):
            var object = JSONObject()
            for (key, value) in members { object[key] = value.render(context, status: status) }
            return .object(object)
        }
    }
}

/// A template error inside a JSON value, with the pointer (relative to that value) of the string.
public struct JSONTemplateError: Error, Sendable, Equatable {
    public let pointer: String
    public let error: TemplateSyntaxError
}
