import Foundation

/// Resolves a host name to its TCP addresses with the system resolver (`/etc/hosts`, DNS), for
/// configuration that names hosts but is used where a lookup must not block (a Redis sentinel is
/// asked on an event loop). An IP address is returned as it is, without a lookup.
enum HostResolver {
    /// Why a name has no address (the resolver's own text, e.g. `Name or service not known`).
    struct Failure: Error, Equatable { let reason: String }

    /// The numeric addresses of `host`, in the resolver's order without repeats, or the
    /// resolver's reason.
    static func addresses(of host: String) -> Result<[String], Failure> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, nil, &hints, &list)
        guard rc == 0, let first = list else { return .failure(Failure(reason: String(cString: gai_strerror(rc)))) }
        defer { freeaddrinfo(first) }
        var found: [String] = []
        var node: UnsafeMutablePointer<addrinfo>? = first
        while let info = node {
            var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(info.pointee.ai_addr, info.pointee.ai_addrlen, &text, socklen_t(text.count), nil, 0, NI_NUMERICHOST) == 0 {
                let address = String(cString: text)
                if !found.contains(address) { found.append(address) }
            }
            node = info.pointee.ai_next
        }
        return found.isEmpty ? .failure(Failure(reason: "no address")) : .success(found)
    }
}
