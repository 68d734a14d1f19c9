#if canImport(Glibc)
import Glibc
#endif

/// What the router decided for a request.
public enum RouteDecision: Sendable, Equatable {
    case matched(RouteMatchResult)
    /// Some route matched everything but the method; `allowed` lists the methods that would.
    case methodNotAllowed(allowed: [String])
    case notFound
}

/// A matched route with its captured path parameters.
public struct RouteMatchResult: Sendable, Equatable {
    /// Index into the config's routes.
    public let routeIndex: Int
    public let params: [String: String]
    /// Number of leading path segments the route's path consumed (for prefix stripping).
    public let consumedSegments: Int
}

/// What the router needs from a request; kept small so matching allocates little.
public protocol RoutableRequest {
    var method: String { get }
    var path: String { get }
    /// Lower-case host without port.
    var host: String { get }
    func header(_ lowercaseName: String) -> String?
    func queryValue(_ name: String) -> String?
}

/// Routes compiled once per configuration into a segment trie, so a request walks only the
/// branches its path can take. Precedence (most specific wins):
/// exact path over prefix; more literal segments; more segments; exact host over wildcard host
/// over any host; more header/query conditions; a method list over any method; then
/// declaration order.
public struct Router: Sendable {
    final class Node: @unchecked Sendable {
        /// Keyed by bytes: Swift's `String` equality is canonical equivalence (`é` equals
        /// `e` + U+0301), but nginx and upstreams compare bytes, so the router does too.
        var literals: [ByteKey: Node] = [:]
        /// `literals` as a list when there are few (set once the trie is built): a few
        /// comparisons cost less than hashing the segment for the dictionary.
        var fewLiterals: [(key: ByteKey, node: Node)]?
        var param: Node?

        /// The most literal children looked up by comparison instead of by hash.
        static let fewLimit = 8

        /// The child for the literal segment `segment`, if any.
        func literal(_ segment: Substring) -> Node? {
            let key = ByteKey(segment)
            guard let few = fewLiterals else { return literals[key] }
            for entry in few where entry.key == key { return entry.node }
            return nil
        }

        /// Sets `fewLiterals` in this node and every node below it.
        func settle() {
            fewLiterals = literals.count <= Self.fewLimit ? literals.map { (key: $0.key, node: $0.value) } : nil
            for child in literals.values { child.settle() }
            param?.settle()
        }
        var exactRoutes: [Int] = []
        var prefixRoutes: [Int] = []
    }

    struct Compiled: Sendable {
        let match: RouteMatch
        let paramNames: [String?]  // per segment position: name if a param
        let rank: [Int]
    }

    private let root: Node
    private let routes: [Compiled]

    public init(routes: [RouteConfig]) {
        let root = Node()
        var compiled: [Compiled] = []
        for (i, route) in routes.enumerated() {
            let pattern: String
            let isExact: Bool
            switch route.match.path {
            case .exact(let p): pattern = p; isExact = true
            case .prefix(let p): pattern = p; isExact = false
            }
            let segments = PathPattern.segments(of: pattern)
            var node = root
            var names: [String?] = []
            var literalCount = 0
            for seg in segments {
                switch seg {
                case .literal(let l):
                    literalCount += 1
                    names.append(nil)
                    if let next = node.literals[ByteKey(l[...])] { node = next } else {
                        let next = Node(); node.literals[ByteKey(l[...])] = next; node = next
                    }
                case .param(let name):
                    names.append(name)
                    if let next = node.param { node = next } else {
                        let next = Node(); node.param = next; node = next
                    }
                }
            }
            if isExact { node.exactRoutes.append(i) } else { node.prefixRoutes.append(i) }
            let hostRank = route.match.hosts.isEmpty ? 0 : (route.match.hosts.allSatisfy { !$0.hasPrefix("*.") } ? 2 : 1)
            let rank = [isExact ? 1 : 0, literalCount, segments.count, hostRank,
                        route.match.headers.count + route.match.query.count,
                        route.match.methods.isEmpty ? 0 : 1, -i]
            compiled.append(Compiled(match: route.match, paramNames: names, rank: rank))
        }
        root.settle()
        self.root = root
        self.routes = compiled
    }

    public func route(_ request: some RoutableRequest) -> RouteDecision {
        let segments = PathPattern.splitPath(request.path)
        var best: (index: Int, captures: [Substring], consumed: Int)?
        var allowed: [String] = []
        var captures: [Substring] = []
        captures.reserveCapacity(segments.count)

        func consider(_ index: Int, consumed: Int) {
            // Read in place: a copy of the compiled route retained each of its fields.
            guard conditionsHold(routes[index].match, request) else { return }
            let methods = routes[index].match.methods
            if !methods.isEmpty && !methods.contains(request.method) {
                // HEAD is answered by GET routes, as HTTP intends.
                if !(request.method == "HEAD" && methods.contains("GET")) {
                    allowed.append(contentsOf: methods)
                    return
                }
            }
            if let current = best, !routes[current.index].rank.lexicographicallyPrecedes(routes[index].rank) { return }
            best = (index, captures, consumed)
        }

        func walk(_ node: Node, depth: Int) {
            for index in node.prefixRoutes { consider(index, consumed: depth) }
            if depth == segments.count {
                for index in node.exactRoutes { consider(index, consumed: depth) }
                return
            }
            let seg = segments[depth]
            if let next = node.literal(seg) { walk(next, depth: depth + 1) }
            if let next = node.param {
                captures.append(seg)
                walk(next, depth: depth + 1)
                captures.removeLast()
            }
        }
        walk(root, depth: 0)

        if let best {
            let names = routes[best.index].paramNames
            var params: [String: String] = [:]
            var c = 0
            for name in names.prefix(best.consumed) {
                if let name { params[name] = String(best.captures[c]); c += 1 }
            }
            return .matched(RouteMatchResult(routeIndex: best.index, params: params, consumedSegments: best.consumed))
        }
        if !allowed.isEmpty {
            var seen = Set<String>()
            var list = allowed.filter { seen.insert($0).inserted }
            if list.contains("GET") && !list.contains("HEAD") { list.append("HEAD") }
            return .methodNotAllowed(allowed: list.sorted())
        }
        return .notFound
    }

    private func conditionsHold(_ match: RouteMatch, _ request: some RoutableRequest) -> Bool {
        if !match.hosts.isEmpty {
            let host = request.host
            let hostOK = match.hosts.contains { pattern in
                pattern.hasPrefix("*.")
                    ? (host.utf8.count > pattern.utf8.count - 1 && host.utf8.reversed().starts(with: pattern.utf8.dropFirst().reversed()))
                    : host.utf8.elementsEqual(pattern.utf8)
            }
            if !hostOK { return false }
        }
        for (name, rule) in match.headers {
            guard let value = request.header(name) else { return false }
            if case .equals(let expected) = rule, !value.utf8.elementsEqual(expected.utf8) { return false }
        }
        for (name, rule) in match.query {
            guard let value = request.queryValue(name) else { return false }
            if case .equals(let expected) = rule, !value.utf8.elementsEqual(expected.utf8) { return false }
        }
        return true
    }

    /// The path to send upstream: the rewrite template (prefix routes keep the unmatched rest),
    /// the path without its matched prefix, or the path unchanged.
    public static func upstreamPath(route: RouteConfig, result: RouteMatchResult, requestPath: String) -> String {
        guard !keepsRequestPath(route) else { return requestPath }
        let isPrefix: Bool
        if case .prefix = route.match.path { isPrefix = true } else { isPrefix = false }
        let rest = isPrefix ? remainder(of: requestPath, afterSegments: result.consumedSegments) : ""
        var base = route.rewrite.map { PathPattern.fill($0, params: result.params) } ?? "/"
        if !rest.isEmpty {
            if base.hasSuffix("/") { base.removeLast() }
            base += rest
        }
        return base
    }

    /// The route sends the request's path upstream unchanged (no rewrite, no prefix stripped).
    public static func keepsRequestPath(_ route: RouteConfig) -> Bool {
        let isPrefix: Bool
        if case .prefix = route.match.path { isPrefix = true } else { isPrefix = false }
        return route.rewrite == nil && !(route.stripPrefix && isPrefix)
    }

    /// The part of `path` after its first `count` non-empty segments, starting with "/" (or "").
    static func remainder(of path: String, afterSegments count: Int) -> String {
        // On bytes: a "/" followed by a combining mark is one Character, but still a separator.
        let u = path.utf8
        var seen = 0
        var idx = u.startIndex
        while seen < count, idx < u.endIndex {
            while idx < u.endIndex && u[idx] == 0x2F { idx = u.index(after: idx) }
            guard idx < u.endIndex else { break }
            while idx < u.endIndex && u[idx] != 0x2F { idx = u.index(after: idx) }
            seen += 1
        }
        return String(path[idx...])
    }
}

/// A path segment compared and hashed as bytes (no Unicode normalisation, no allocation).
struct ByteKey: Hashable, Sendable {
    let text: Substring
    init(_ text: Substring) { self.text = text }
    static func == (a: ByteKey, b: ByteKey) -> Bool {
        let x = a.text.utf8, y = b.text.utf8
        guard x.count == y.count else { return false }
        // One `memcmp` on the contiguous bytes: the generic `elementsEqual` of the views cost
        // several hundred instructions per lookup.
        if let equal = x.withContiguousStorageIfAvailable({ p in
            y.withContiguousStorageIfAvailable { q in p.isEmpty || memcmp(p.baseAddress!, q.baseAddress!, p.count) == 0 }
        }), let equal {
            return equal
        }
        return x.elementsEqual(y)
    }
    func hash(into hasher: inout Hasher) {
        if text.utf8.withContiguousStorageIfAvailable({ hasher.combine(bytes: UnsafeRawBufferPointer($0)) }) == nil {
            for b in text.utf8 { hasher.combine(b) }
        }
    }
}
