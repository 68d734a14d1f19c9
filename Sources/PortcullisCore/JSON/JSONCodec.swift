import CJansson

/// Why a JSON text could not be parsed, with jansson's position.
public struct JSONParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public let line: Int
    public let column: Int
    public var description: String { "invalid JSON at line \(line), column \(column): \(message)" }
}

/// Parses and serialises JSON through jansson (the project's one JSON library).
public enum JSONCodec {
    /// Parses `bytes`. `rejectDuplicateKeys` is used for security-sensitive documents (JWT
    /// headers and claims), where two values for one key must not be silently merged.
    public static func parse(_ bytes: some Collection<UInt8>, rejectDuplicateKeys: Bool = true) throws(JSONParseError) -> JSONValue {
        var error = json_error_t()
        let flags = (rejectDuplicateKeys ? JSON_REJECT_DUPLICATES : 0) | JSON_DECODE_ANY | JSON_ALLOW_NUL
        let root: UnsafeMutablePointer<json_t>? = bytes.withContiguousStorageIfAvailable { buf in
            buf.withMemoryRebound(to: CChar.self) { json_loadb($0.baseAddress, $0.count, Int(flags), &error) }
        } ?? Array(bytes).withUnsafeBufferPointer { buf in
            buf.withMemoryRebound(to: CChar.self) { json_loadb($0.baseAddress, $0.count, Int(flags), &error) }
        }
        guard let root else {
            let text = withUnsafeBytes(of: error.text) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            throw JSONParseError(message: text, line: Int(error.line), column: Int(error.column))
        }
        defer { json_decref(root) }
        return convert(root)
    }

    public static func parse(_ text: String, rejectDuplicateKeys: Bool = true) throws(JSONParseError) -> JSONValue {
        try parse(Array(text.utf8), rejectDuplicateKeys: rejectDuplicateKeys)
    }

    private static func convert(_ node: UnsafeMutablePointer<json_t>) -> JSONValue {
        switch node.pointee.type {
        case JSON_NULL: return .null
        case JSON_TRUE: return .bool(true)
        case JSON_FALSE: return .bool(false)
        case JSON_INTEGER: return .int(Int64(json_integer_value(node)))
        case JSON_REAL: return .double(json_real_value(node))
        case JSON_STRING:
            let length = json_string_length(node)
            let ptr = json_string_value(node)!
            return .string(ptr.withMemoryRebound(to: UInt8.self, capacity: length) {
                String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self)
            })
        case JSON_ARRAY:
            let n = json_array_size(node)
            var items: [JSONValue] = []
            items.reserveCapacity(n)
            for i in 0..<n { items.append(convert(json_array_get(node, i)!)) }
            return .array(items)
        case JSON_OBJECT:
            var object = JSONObject()
            var iter = json_object_iter(node)
            while let it = iter {
                let key = String(cString: json_object_iter_key(it))
                object[key] = convert(json_object_iter_value(it)!)
                iter = json_object_iter_next(node, it)
            }
            return .object(object)
        default:
            return .null
        }
    }

    /// Serialises `value` compactly (or indented), keys in document order.
    public static func serialize(_ value: JSONValue, pretty: Bool = false) -> String {
        let node = build(value)
        defer { json_decref(node) }
        let flags = (pretty ? 2 : JSON_COMPACT) | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER | (15 << 11)  // JSON_REAL_PRECISION(15)
        guard let out = json_dumps(node, Int(flags)) else { return "null" }
        defer { free(out) }
        return String(cString: out)
    }

    public static func serializeBytes(_ value: JSONValue) -> [UInt8] { Array(serialize(value).utf8) }

    private static func build(_ value: JSONValue) -> UnsafeMutablePointer<json_t> {
        switch value {
        case .null: return json_null()
        case .bool(let b): return b ? json_true() : json_false()
        case .int(let i): return json_integer(json_int_t(i))
        case .double(let d): return d.isFinite ? json_real(d) : json_null()
        case .string(let s):
            var s = s
            return s.withUTF8 { buf in
                buf.withMemoryRebound(to: CChar.self) { json_stringn_nocheck($0.baseAddress, $0.count) }
            }
        case .array(let items):
            let arr = json_array()!
            for item in items { json_array_append_new(arr, build(item)) }
            return arr
        case .object(let object):
            let obj = json_object()!
            for (k, v) in object.entries { json_object_set_new_nocheck(obj, k, build(v)) }
            return obj
        }
    }
}
