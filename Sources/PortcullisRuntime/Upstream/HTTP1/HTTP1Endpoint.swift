import Glibc

/// A plain-HTTP upstream URL split into what the lean client needs; nil for anything that
/// must go through curl (another scheme, userinfo).
struct HTTP1URL {
    /// `host[:port]` as written in the URL.
    let authority: Substring
    /// Path and query as written ("/" added when the URL has none); the fragment dropped.
    let target: Substring

    init?(_ url: String) {
        // On the contiguous UTF-8 bytes, by offset: this runs once per request, and walking
        // `String.UTF8View` indices (or Characters) cost more than the rest of the exchange.
        var copy = url
        guard let (authorityEnd, targetEnd) = copy.withUTF8({ Self.split($0) }) else { return nil }
        let u = url.utf8
        let start = u.index(u.startIndex, offsetBy: 7), end = u.index(u.startIndex, offsetBy: authorityEnd)
        authority = url[start..<end]
        target = url[end..<u.index(u.startIndex, offsetBy: targetEnd)]
    }

    /// Offsets of the authority's end and the target's end (before a fragment) in an
    /// `http://` URL; nil when it is not one, has no authority, or has user info.
    static func split(_ b: UnsafeBufferPointer<UInt8>) -> (authorityEnd: Int, targetEnd: Int)? {
        guard b.count > 7, b[0] == 0x68, b[1] == 0x74, b[2] == 0x74, b[3] == 0x70, b[4] == 0x3A, b[5] == 0x2F, b[6] == 0x2F else {
            return nil
        }
        var end = 7
        while end < b.count, b[end] != UInt8(ascii: "/"), b[end] != UInt8(ascii: "?"), b[end] != UInt8(ascii: "#") {
            if b[end] == UInt8(ascii: "@") { return nil }
            end += 1
        }
        guard end > 7 else { return nil }
        var targetEnd = end
        while targetEnd < b.count, b[targetEnd] != UInt8(ascii: "#") { targetEnd += 1 }
        return (end, targetEnd)
    }
}

/// A plain-HTTP upstream reachable without DNS (an IP literal or `localhost`, which is
/// 127.0.0.1 as curl resolves it first), with its idle kept connections.
final class HTTP1Endpoint {
    /// `host:port` for messages ("connect to 127.0.0.1:9: Connection refused").
    let label: String
    /// The Host header exactly as curl sends it: the URL's host, with its port unless 80.
    let hostHeader: String
    let address: sockaddr_storage
    let addressLength: socklen_t
    /// Idle kept connections; the most recently used last (reused first, LIFO).
    var idle: [HTTP1Connection] = []

    /// Nil when the host needs a resolver (a name other than localhost) or the port is invalid.
    init?(authority: Substring) {
        var host = authority
        var portText: Substring = ""
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return nil }
                portText = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        }
        var port = 80
        if !portText.isEmpty {
            guard portText.count <= 5, let p = Int(portText), p > 0, p < 65536 else { return nil }
            port = p
        }
        var storage = sockaddr_storage()
        let literal = host.lowercased() == "localhost" ? "127.0.0.1" : String(host)
        var sin = sockaddr_in()
        if inet_pton(AF_INET, literal, &sin.sin_addr) == 1 {
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = in_port_t(UInt16(port).bigEndian)
            withUnsafeBytes(of: sin) { source in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: source) } }
            addressLength = socklen_t(MemoryLayout<sockaddr_in>.size)
        } else {
            var sin6 = sockaddr_in6()
            guard inet_pton(AF_INET6, literal, &sin6.sin6_addr) == 1 else { return nil }
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = in_port_t(UInt16(port).bigEndian)
            withUnsafeBytes(of: sin6) { source in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: source) } }
            addressLength = socklen_t(MemoryLayout<sockaddr_in6>.size)
        }
        address = storage
        let hostPart = authority.hasPrefix("[") ? "[\(host)]" : String(host)
        label = "\(hostPart):\(port)"
        hostHeader = port == 80 ? hostPart : label
    }
}
