/// Reads one cookie out of a `Cookie` request header (RFC 6265 §4.2: `name=value` pairs
/// separated by `;`, optional spaces). Used by rate-limit key parts, transform conditions and
/// templates.
public enum CookieHeader {
    /// The value of the first cookie called `name` (spaces around it trimmed, a value in double
    /// quotes unquoted), or nil when the header or the cookie is absent.
    public static func value(named name: String, in header: String?) -> String? {
        guard let header else { return nil }
        for pair in header.split(separator: ";") {
            let trimmed = pair.drop { $0 == " " || $0 == "\t" }
            guard let eq = trimmed.firstIndex(of: "=") else { continue }
            var key = trimmed[..<eq]
            while key.last == " " || key.last == "\t" { key = key.dropLast() }
            guard key == name else { continue }
            var value = trimmed[trimmed.index(after: eq)...]
            while value.last == " " || value.last == "\t" { value = value.dropLast() }
            if value.count >= 2, value.first == "\"", value.last == "\"" { value = value.dropFirst().dropLast() }
            return String(value)
        }
        return nil
    }
}
