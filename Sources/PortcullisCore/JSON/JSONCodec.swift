import Foundation
import CJansson

/// Why a JSON text could not be parsed, with jansson's position.
public struct JSONParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public let line: Int
    public let column: Int
    public var description: String { "invalid JSON at line \(line), column \(column): \(message)" }
}

/// Parses and serialises JSON. jansson (the project's one JSON library) is the reference for
/// what parses and the source of every error position; `JSONFastParser` reads the documents it
/// is sure about straight into Swift values first, which is most of a body transform's cost
/// saved (docs/dependencies.md).
public enum JSONCodec {
    /// Parses `bytes`. `rejectDuplicateKeys` is used for security-sensitive documents (JWT
    /// headers and claims), where two values for one key must not be silently merged.
    /// `keepLargeNumbers`: an integer beyond `Int64` or a real beyond `Double` becomes
    /// `.number(text)` instead of an error (bodies a transform passes on must not lose digits).
    public static func parse(_ bytes: some Collection<UInt8>, rejectDuplicateKeys: Bool = true,
                             keepLargeNumbers: Bool = false) throws(JSONParseError) -> JSONValue {
        let fast: JSONValue?? = bytes.withContiguousStorageIfAvailable {
            JSONFastParser.parse($0, rejectDuplicateKeys: rejectDuplicateKeys, keepLargeNumbers: keepLargeNumbers)
        }
        if let value = fast ?? Array(bytes).withUnsafeBufferPointer({
            JSONFastParser.parse($0, rejectDuplicateKeys: rejectDuplicateKeys, keepLargeNumbers: keepLargeNumbers)
        }) {
            return value
        }
        return try parseWithJansson(bytes, rejectDuplicateKeys: rejectDuplicateKeys)
    }

    /// jansson's verdict: the value, or the error with its position.
    static func parseWithJansson(_ bytes: some Collection<UInt8>, rejectDuplicateKeys: Bool) throws(JSONParseError) -> JSONValue {
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
            object.reserveCapacity(json_object_size(node))
            var iter = json_object_iter(node)
            while let it = iter {
                // jansson's objects have unique keys (a later duplicate replaced the earlier one,
                // or the parse was refused), so no lookup is needed here.
                object.appendUnchecked(String(cString: json_object_iter_key(it)), convert(json_object_iter_value(it)!))
                iter = json_object_iter_next(node, it)
            }
            return .object(object)
        default:
            return .null
        }
    }

    /// Serialises `value` compactly (or, through jansson, indented for files people read),
    /// keys in document order.
    public static func serialize(_ value: JSONValue, pretty: Bool = false) -> String {
        guard pretty else { return String(decoding: serializeBytes(value), as: UTF8.self) }
        let node = build(value)
        defer { json_decref(node) }
        let flags = 2 | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER | (15 << 11)  // JSON_INDENT(2), JSON_REAL_PRECISION(15)
        guard let out = json_dumps(node, Int(flags)) else { return "null" }
        defer { free(out) }
        return String(cString: out)
    }

    /// Compact serialisation straight into bytes (no intermediate jansson tree): the path of
    /// transformed bodies and problem documents. `capacity` is a size hint (e.g. the size of the
    /// body the value was parsed from) so the output grows without copies.
    public static func serializeBytes(_ value: JSONValue, capacity: Int = 256) -> [UInt8] {
        var out = ByteBuffer(capacity: capacity)
        defer { out.deallocate() }
        write(value, into: &out)
        return out.array
    }

    static func write<Sink: ByteSink>(_ value: JSONValue, into out: inout Sink) {
        switch value {
        case .null: out.appendASCII("null")
        case .bool(let b): if b { out.appendASCII("true") } else { out.appendASCII("false") }
        case .int(let i): appendInteger(i, to: &out)
        case .double(let d): appendDouble(d, to: &out)
        case .number(var text): text.withUTF8 { out.append(bytes: $0) }
        case .string(let s): JSONLineWriter.appendQuoted(s, to: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            var first = true
            for item in items {
                if !first { out.append(UInt8(ascii: ",")) }
                first = false
                write(item, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let object):
            out.append(UInt8(ascii: "{"))
            var first = true
            object.forEachPair { key, value in
                if !first { out.append(UInt8(ascii: ",")) }
                first = false
                JSONLineWriter.appendQuoted(key, to: &out)
                out.append(UInt8(ascii: ":"))
                write(value, into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// Decimal digits without going through a String.
    static func appendInteger<Sink: ByteSink>(_ value: Int64, to out: inout Sink) {
        if value < 0 { out.append(UInt8(ascii: "-")) }
        // The magnitude as UInt64, so Int64.min has one too.
        var magnitude = value.magnitude
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var start = 20
            repeat {
                start -= 1
                digits[start] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            out.append(bytes: UnsafeBufferPointer(rebasing: digits[start..<20]))
        }
    }

    /// Like jansson (`%.15g`, always with a fraction or exponent); non-finite numbers, which
    /// JSON cannot carry, become null.
    static func appendDouble<Sink: ByteSink>(_ d: Double, to out: inout Sink) {
        guard d.isFinite else { out.appendASCII("null"); return }
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: 32) { buffer in
            let length = Int(vsnprintfDouble(buffer.baseAddress!, 32, d))
            var needsFraction = true
            for i in 0..<length {
                var c = UInt8(bitPattern: buffer[i])
                // A locale's decimal comma is still a point in JSON (what jansson does too).
                if c == UInt8(ascii: ",") { c = UInt8(ascii: ".") }
                if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") { needsFraction = false }
                out.append(c)
            }
            if needsFraction { out.appendASCII(".0") }
        }
    }

    /// `snprintf(buffer, size, "%.15g", d)`; Swift cannot call C's variadic functions directly.
    private static func vsnprintfDouble(_ buffer: UnsafeMutablePointer<CChar>, _ size: Int, _ d: Double) -> Int32 {
        withVaList([d]) { vsnprintf(buffer, size, "%.15g", $0) }
    }

    private static func build(_ value: JSONValue) -> UnsafeMutablePointer<json_t> {
        switch value {
        case .null: return json_null()
        case .bool(let b): return b ? json_true() : json_false()
        case .int(let i): return json_integer(json_int_t(i))
        case .double(let d): return d.isFinite ? json_real(d) : json_null()
        case .number(let text):
            // jansson holds no number text: the nearest double (pretty printing only).
            let d = Double(text) ?? .nan
            return d.isFinite ? json_real(d) : json_null()
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
