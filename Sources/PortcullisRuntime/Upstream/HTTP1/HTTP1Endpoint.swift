import Glibc

/// A plain-HTTP upstream URL split into what the lean client needs; nil for anything that
/// must go through curl (another scheme, userinfo).
struct HTTP1URL {
    /// `host[:port]` as written in the URL.
    let authority: Substring
    /// Path and query as written ("/" added when the URL has none); the fragment dropped.
    let target: Substring

    init?(_ url: String) {
        // On UTF-8 bytes: this runs once per request, and Character-wise scanning (grapheme
        // breaking over the whole path and query) cost more than the rest of the exchange.
        let bytes = url.utf8
        guard bytes.starts(with: "http://".utf8) else { return nil }
        let start = bytes.index(bytes.startIndex, offsetBy: 7)
        let rest = bytes[start...]
        let end = rest.firstIndex { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") } ?? rest.endIndex
        guard end > start, !bytes[start..<end].contains(UInt8(ascii: "@")) else { return nil }
        authority = url[start..<end]
        let targetEnd = bytes[end...].firstIndex(of: UInt8(ascii: "#")) ?? bytes.endIndex
        target = url[end..<targetEnd]
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
