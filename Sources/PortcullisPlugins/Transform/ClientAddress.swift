import Foundation

/// An IPv4 or IPv6 address as 16 bytes (IPv4 mapped into `::ffff:0:0/96`, so an IPv4 network
/// also matches a client nginx reports as `::ffff:a.b.c.d`).
struct IPAddress: Equatable {
    let bytes: [UInt8]

    init?(_ text: String?) {
        guard let text, !text.isEmpty else { return nil }
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            bytes = Array(repeating: 0, count: 10) + [0xFF, 0xFF] + withUnsafeBytes(of: v4) { Array($0) }
            return
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        bytes = withUnsafeBytes(of: v6) { Array($0) }
    }
}

/// A network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`); a bare address is a network of
/// one. Parsed at load time.
public struct CIDR: Sendable, Equatable {
    let network: [UInt8]
    let prefixBits: Int

    /// Parses `text`, nil when it is not an address or CIDR network.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(String(parts[0])) else { return nil }
        let isV4 = !parts[0].contains(":")
        let maxBits = isV4 ? 32 : 128
        var bits = maxBits
        if parts.count == 2 {
            guard let n = Int(parts[1]), (0...maxBits).contains(n), parts[1].allSatisfy(\.isASCII) else { return nil }
            bits = n
        }
        prefixBits = isV4 ? bits + 96 : bits
        network = address.bytes
    }

    func contains(_ address: IPAddress) -> Bool {
        var remaining = prefixBits
        for i in 0..<16 where remaining > 0 {
            let mask: UInt8 = remaining >= 8 ? 0xFF : UInt8(truncatingIfNeeded: 0xFF << (8 - remaining))
            if address.bytes[i] & mask != network[i] & mask { return false }
            remaining -= 8
        }
        return true
    }
}

/// The `Cookie` request header (RFC 6265 §4.2: `name=value` pairs separated by `; `).
enum Cookies {
    /// The first value of cookie `name`, nil when absent.
    static func value(named name: String, in header: String?) -> String? {
        guard let header else { return nil }
        for pair in header.split(separator: ";") {
            let trimmed = pair.drop { $0 == " " || $0 == "\t" }
            guard let eq = trimmed.firstIndex(of: "=") else { continue }
            if trimmed[..<eq] == name {
                var value = trimmed[trimmed.index(after: eq)...]
                while value.last == " " || value.last == "\t" { value = value.dropLast() }
                if value.count >= 2, value.first == "\"", value.last == "\"" { value = value.dropFirst().dropLast() }
                return String(value)
            }
        }
        return nil
    }
}

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
