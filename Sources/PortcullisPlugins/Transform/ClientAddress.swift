import Foundation

// Client networks (`CIDR`) and reading a cookie (`CookieHeader`) live in PortcullisCore,
// shared with rate limiting.

/// RFC 6265 cookie-octets: what a rendered cookie value may hold.
enum CookieValue {
    static func isValid(_ text: String) -> Bool {
        text.utf8.allSatisfy { c in
            c == 0x21 || (c >= 0x23 && c <= 0x2B) || (c >= 0x2D && c <= 0x3A) || (c >= 0x3C && c <= 0x5B) || (c >= 0x5D && c <= 0x7E)
        }
    }

    /// The `Cookie` header with `name` set to `value` (first pair replaced, later ones of the
    /// name dropped, appended when absent) or, `value` nil, removed; nil when no pair is left.
    static func editing(_ header: String?, name: String, value: String?) -> String? {
        var pairs: [String] = []
        var placed = false
        for raw in (header ?? "").split(separator: ";") {
            let pair = raw.trimmingCharacters(in: .whitespaces)
            if pair.isEmpty { continue }
            let pairName = pair.split(separator: "=", maxSplits: 1).first.map(String.init) ?? pair
            if pairName == name {
                if let value, !placed { pairs.append(name + "=" + value); placed = true }
                continue
            }
            pairs.append(pair)
        }
        if let value, !placed { pairs.append(name + "=" + value) }
        return pairs.isEmpty ? nil : pairs.joined(separator: "; ")
    }

    /// The name a `Set-Cookie` line sets.
    static func setCookieName(_ line: String) -> Substring {
        let pair = line.split(separator: ";", maxSplits: 1).first ?? ""
        return (pair.split(separator: "=", maxSplits: 1).first ?? "").trimmingCharacters(in: .whitespaces)[...]
    }
}
