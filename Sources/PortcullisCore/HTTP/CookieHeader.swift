/// Reads one cookie out of a `Cookie` request header (RFC 6265 §5.4: `name=value` pairs
/// separated by `;`, optional spaces). The value is returned as sent (quotes included).
public enum CookieHeader {
    /// The value of the first cookie called `name`, or nil.
    public static func value(of name: String, in header: String) -> String? {
        for pair in header.utf8.split(separator: UInt8(ascii: ";"), omittingEmptySubsequences: true) {
            var bytes = pair[...]
            while bytes.first == UInt8(ascii: " ") || bytes.first == UInt8(ascii: "\t") { bytes = bytes.dropFirst() }
            guard let eq = bytes.firstIndex(of: UInt8(ascii: "=")) else { continue }
            var key = bytes[..<eq]
            while key.last == UInt8(ascii: " ") || key.last == UInt8(ascii: "\t") { key = key.dropLast() }
            guard key.elementsEqual(name.utf8) else { continue }
            var value = bytes[bytes.index(after: eq)...]
            while value.last == UInt8(ascii: " ") || value.last == UInt8(ascii: "\t") { value = value.dropLast() }
            return String(decoding: value, as: UTF8.self)
        }
        return nil
    }
}
