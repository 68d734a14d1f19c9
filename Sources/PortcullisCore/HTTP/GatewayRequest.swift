/// A request as the worker received it from nginx, decoupled from FastCGI so the pipeline can
/// be tested without sockets.
public struct GatewayRequest: Sendable, RoutableRequest {
    public var method: String
    /// nginx's normalised path (`$document_uri`: decoded, dot segments resolved).
    public var path: String
    /// Raw query string without `?` (may be empty).
    public var rawQuery: String
    /// Lower-case host without port.
    public var host: String
    public var headers: HTTPHeaders
    public var facts: ConnectionFacts
    public var requestId: String
    public var contentLength: Int64?
    /// The TLS client certificate as nginx reported it (FastCGI params, never headers); nil
    /// when the worker was given no such params.
    public var clientCertificate: ClientCertificateFacts? = nil
    /// nginx sent the request from its location for the gateway's own pages
    /// (`PORTCULLIS_ADMIN 1`, see nginx/portcullis.conf): served by `AdminPages`, not routed.
    public var adminPages = false
    /// The client asked for a WebSocket (`Upgrade: websocket`, which the snippet passes as
    /// the param `PORTCULLIS_UPGRADE` only when present), decided while decoding.
    public var websocketUpgrade = false
    /// FastCGI params `PORTCULLIS_VAR_<NAME>` the nginx snippet sets (rate-limit key parts
    /// `var:<NAME>`), names without the prefix; empty unless the operator added some.
    public var variables: [(name: String, value: String)] = []
    private var parsedQuery: [(name: String, value: String)]

    public init(method: String, path: String, rawQuery: String = "", host: String = "", headers: HTTPHeaders = HTTPHeaders(),
                facts: ConnectionFacts = ConnectionFacts(clientAddress: "127.0.0.1", scheme: "http", host: ""),
                requestId: String = "", contentLength: Int64? = nil) {
        self.method = method
        self.path = path
        self.rawQuery = rawQuery
        self.host = host
        self.headers = headers
        self.facts = facts
        self.requestId = requestId
        self.contentLength = contentLength
        self.parsedQuery = QueryString.parse(rawQuery)
    }

    public func header(_ lowercaseName: String) -> String? { headers[lowercaseName] }
    public func queryValue(_ name: String) -> String? { parsedQuery.first { $0.name == name }?.value }
    public var queryItems: [(name: String, value: String)] { parsedQuery }
    /// The value of the param `PORTCULLIS_VAR_<name>`, or nil when nginx did not send it.
    public func variable(_ name: String) -> String? { variables.first { $0.name == name }?.value }
}

/// `application/x-www-form-urlencoded` query strings.
public enum QueryString {
    public static func parse(_ raw: String) -> [(name: String, value: String)] {
        guard !raw.isEmpty else { return [] }
        return raw.split(separator: "&", omittingEmptySubsequences: true).map { pair in
            if let eq = pair.firstIndex(of: "=") {
                return (PercentEncoding.decode(pair[..<eq], plusAsSpace: true),
                        PercentEncoding.decode(pair[pair.index(after: eq)...], plusAsSpace: true))
            }
            return (PercentEncoding.decode(pair, plusAsSpace: true), "")
        }
    }

    public static func serialize(_ items: [(name: String, value: String)]) -> String {
        items.map { PercentEncoding.encode($0.name, allowed: .queryComponent) + "=" + PercentEncoding.encode($0.value, allowed: .queryComponent) }
            .joined(separator: "&")
    }
}

public enum PercentEncoding {
    public enum Allowed { case path, queryComponent }

    public static func decode(_ s: some StringProtocol, plusAsSpace: Bool = false) -> String {
        let bytes = Array(s.utf8)
        guard bytes.contains(where: { $0 == 0x25 || (plusAsSpace && $0 == 0x2B) }) else { return String(s) }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            let c = bytes[i]
            if c == 0x25, i + 2 < bytes.count, let h = Hex.nibble(bytes[i + 1]), let l = Hex.nibble(bytes[i + 2]) {
                out.append(h << 4 | l); i += 3
            } else {
                out.append(plusAsSpace && c == 0x2B ? 0x20 : c); i += 1
            }
        }
        // `caf%E9` stays byte 0xE9 (RawText), never U+FFFD.
        return RawText.decode(out)
    }

    /// Encodes every byte outside the unreserved set (and, for paths, `/` and sub-delims).
    /// Bytes kept by `RawText` are encoded as the byte they stand for (`%E9`).
    public static func encode(_ s: String, allowed: Allowed) -> String {
        let table = allowed == .path ? pathBytes : componentBytes
        // Most paths need no escaping: then the string is returned as it is, nothing built.
        guard s.utf8.contains(where: { !table[Int($0)] }) else { return s }
        return encode(bytes: RawText.bytes(of: s), table: table)
    }

    /// Encodes the bytes ≥ 0x80 of a raw query (kept by `RawText`) and nothing else: a query
    /// is forwarded as the client sent it, as a valid request target.
    /// The request target sent upstream: the path percent-encoded, then `?` and the raw query
    /// (non-ASCII bytes encoded) when there is one.
    public static func requestTarget(path: String, rawQuery: String) -> String {
        let encoded = encode(path, allowed: .path)
        return rawQuery.isEmpty ? encoded : encoded + "?" + encodeNonASCII(rawQuery)
    }

    public static func encodeNonASCII(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 >= 0x80 }) else { return s }
        return encode(bytes: RawText.bytes(of: s), table: asciiBytes)
    }

    private static func encode(bytes: [UInt8], table: [Bool]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 16)
        let digits = Array("0123456789ABCDEF".utf8)
        for c in bytes {
            if table[Int(c)] { out.append(c) } else {
                out.append(0x25); out.append(digits[Int(c >> 4)]); out.append(digits[Int(c & 15)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static let asciiBytes: [Bool] = (0..<256).map { $0 < 0x80 }

    /// Bytes left as they are: RFC 3986 unreserved, plus sub-delims, `:`, `@` and `/` in a path.
    private static let componentBytes: [Bool] = allowedTable(extra: "")
    private static let pathBytes: [Bool] = allowedTable(extra: "/:@!$&'()*+,;=")

    private static func allowedTable(extra: String) -> [Bool] {
        var table = [Bool](repeating: false, count: 256)
        for c in UInt8(ascii: "0")...UInt8(ascii: "9") { table[Int(c)] = true }
        for c in UInt8(ascii: "A")...UInt8(ascii: "Z") { table[Int(c)] = true }
        for c in UInt8(ascii: "a")...UInt8(ascii: "z") { table[Int(c)] = true }
        for c in ("-._~" + extra).utf8 { table[Int(c)] = true }
        return table
    }
}
