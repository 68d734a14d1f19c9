/// An immutable JSON document as Swift values. Objects keep their keys in document order so
/// that transformed bodies and error messages are deterministic.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    /// A number beyond `Int64` / `Double`, kept as the text it was written with (only from
    /// `JSONCodec.parse(_:rejectDuplicateKeys:keepLargeNumbers:)` with `keepLargeNumbers`).
    case number(String)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    /// The JSON type name used in error messages ("string", "object", ...).
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .int, .double, .number: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }

    public var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    public var objectValue: JSONObject? { if case .object(let o) = self { return o }; return nil }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    public var boolValue: Bool? { if case .bool(let b) = self { return b }; return nil }
    /// Integers, and doubles with no fractional part.
    public var intValue: Int64? {
        switch self {
        case .int(let i): return i
        case .double(let d) where d.rounded() == d && abs(d) < 9.0e15: return Int64(d)
        default: return nil
        }
    }
    public var doubleValue: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        case .number(let text): return Double(text)
        default: return nil
        }
    }

    public subscript(key: String) -> JSONValue? { objectValue?[key] }
}

/// A JSON object with insertion-ordered keys. Stored as one array of pairs: request and
/// response bodies hold many small objects, and one allocation per object (instead of a
/// dictionary plus a key list) is what keeps body transforms cheap; lookups are linear, which
/// for the few keys of a JSON object beats hashing.
public struct JSONObject: Sendable, Equatable {
    private var pairs: [(key: String, value: JSONValue)] = []

    public init() {}
    public init(_ pairs: [(String, JSONValue)]) {
        self.pairs.reserveCapacity(pairs.count)
        for (k, v) in pairs { self[k] = v }
    }

    /// Takes pairs without checking for duplicate keys: for decoders that already rejected or
    /// resolved them.
    init(uncheckedPairs pairs: [(key: String, value: JSONValue)]) { self.pairs = pairs }

    /// Appends without checking for an existing key: for decoders that already rejected or
    /// resolved duplicates.
    mutating func appendUnchecked(_ key: String, _ value: JSONValue) { pairs.append((key, value)) }

    mutating func reserveCapacity(_ n: Int) { pairs.reserveCapacity(n) }

    public var count: Int { pairs.count }
    public var isEmpty: Bool { pairs.isEmpty }
    public var keys: [String] { pairs.map(\.key) }

    public subscript(key: String) -> JSONValue? {
        get { pairs.first { $0.key == key }?.value }
        set {
            if let i = pairs.firstIndex(where: { $0.key == key }) {
                if let newValue { pairs[i].value = newValue } else { pairs.remove(at: i) }
            } else if let newValue {
                pairs.append((key, newValue))
            }
        }
    }

    /// Removes the member `key`; its value, or nil when there was none.
    @discardableResult
    public mutating func removeValue(forKey key: String) -> JSONValue? {
        guard let i = pairs.firstIndex(where: { $0.key == key }) else { return nil }
        return pairs.remove(at: i).value
    }

    /// Lets `body` edit the value of member `key` where it is stored, so a nested value is
    /// not copied to be changed; false when there is no such member.
    @discardableResult
    public mutating func modifyValue(forKey key: String, _ body: (inout JSONValue) throws -> Void) rethrows -> Bool {
        guard let i = pairs.firstIndex(where: { $0.key == key }) else { return false }
        try body(&pairs[i].value)
        return true
    }

    /// Key/value pairs in document order.
    public var entries: [(key: String, value: JSONValue)] { pairs }

    /// Calls `body` with each pair in document order, without handing out the pair array.
    func forEachPair(_ body: (String, JSONValue) throws -> Void) rethrows {
        for i in pairs.indices { try body(pairs[i].key, pairs[i].value) }
    }

    /// Equal when both hold the same keys with equal values, whatever their order.
    public static func == (a: JSONObject, b: JSONObject) -> Bool {
        guard a.pairs.count == b.pairs.count else { return false }
        return a.pairs.allSatisfy { pair in b[pair.key] == pair.value }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral, ExpressibleByFloatLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(JSONObject(elements)) }
    public init(nilLiteral: ()) { self = .null }
    public init(floatLiteral value: Double) { self = .double(value) }
}
