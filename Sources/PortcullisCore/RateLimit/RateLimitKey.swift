/// What a limit can be keyed on.
public enum RateLimitKeyPart: Sendable, Hashable, CustomStringConvertible {
    /// One credential of one consumer (`Identity.rateLimitCredential`): kind and consumer id
    /// with the API key or certificate id, or a JWT's issuer and subject.
    case credential
    case consumer
    /// nginx's client address (`$remote_addr`, after `realip` when behind trusted proxies).
    case ip
    case route
    /// A request header value; the name is stored lower-case.
    case header(String)
    /// A claim of the verified JWT.
    case claim(String)
    /// The request path (nginx's normalised `$document_uri`, without the query).
    case path
    /// A parameter of the matched route's path pattern (`/users/{id}` → `path_param:id`).
    case pathParam(String)
    case method
    /// The first value of a query parameter (decoded).
    case query(String)
    /// A cookie of the `Cookie` header.
    case cookie(String)
    /// An nginx-provided fact: the FastCGI param `PORTCULLIS_VAR_<NAME>` set in the nginx snippet
    /// (`fastcgi_param PORTCULLIS_VAR_TENANT $ssl_client_s_dn;` → `var:TENANT`). The name is
    /// stored upper-case.
    case variable(String)

    /// The accepted spellings, for error messages.
    public static let syntax = "api_key, credential, consumer, ip, route, path, path_param:<name>, method, "
        + "header:<Name>, claim:<name>, query:<name>, cookie:<name>, var:<NAME>"

    /// Parses one of ``syntax``.
    public init?(configValue s: String) {
        switch s {
        case "api_key", "credential": self = .credential
        case "consumer": self = .consumer
        case "ip": self = .ip
        case "route": self = .route
        case "path": self = .path
        case "method": self = .method
        default:
            guard let colon = s.firstIndex(of: ":") else { return nil }
            let name = String(s[s.index(after: colon)...])
            guard !name.isEmpty else { return nil }
            switch s[..<colon] {
            case "header":
                guard name.utf8.allSatisfy({ HTTPToken.isTokenByte($0) }) else { return nil }
                self = .header(name.asciiLowercased)
            case "claim": self = .claim(name)
            case "path_param": self = .pathParam(name)
            case "query": self = .query(name)
            case "cookie":
                guard name.utf8.allSatisfy({ HTTPToken.isTokenByte($0) }) else { return nil }
                self = .cookie(name)
            case "var":
                // The param name nginx sends: letters, digits and underscores.
                guard name.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x5F })
                else { return nil }
                self = .variable(name.uppercased())
            default: return nil
            }
        }
    }

    /// Whether the value comes from the request itself (``RateLimitSubject/request``).
    public var readsRequest: Bool {
        switch self {
        case .path, .method, .header, .query, .cookie, .variable: return true
        case .credential, .consumer, .ip, .route, .pathParam, .claim: return false
        }
    }

    public var description: String {
        switch self {
        case .credential: return "credential"
        case .consumer: return "consumer"
        case .ip: return "ip"
        case .route: return "route"
        case .header(let n): return "header:" + n
        case .claim(let n): return "claim:" + n
        case .path: return "path"
        case .pathParam(let n): return "path_param:" + n
        case .method: return "method"
        case .query(let n): return "query:" + n
        case .cookie(let n): return "cookie:" + n
        case .variable(let n): return "var:" + n
        }
    }
}

/// RFC 9110 token characters, for header names in key specifications.
enum HTTPToken {
    static func isTokenByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(b)
        }
    }
}

/// What the limits of one route read from a request beyond what every subject carries (the
/// identity's consumer id, groups and claims, the client address, the route), decided once per
/// route when the configuration is loaded: a request puts into its ``RateLimitSubject`` only
/// what one of them uses.
public struct RateLimitInputs: Sendable, Equatable {
    /// A key part or the cost reads the request itself (``RateLimitSpec/readsRequest``).
    public let request: Bool
    /// A key part is `credential` (``RateLimitSpec/readsCredential``).
    public let credential: Bool

    public init(_ limits: [RateLimitSpec]) {
        request = limits.contains { $0.readsRequest }
        credential = limits.contains { $0.readsCredential }
    }
}

/// The facts about one request that limits are keyed on; filled by the request pipeline after
/// authentication.
public struct RateLimitSubject {
    /// The `credential` key value (`Identity.rateLimitCredential`), not the bare credential id.
    public var credentialId: String?
    public var consumerId: String?
    public var consumerGroups: [String]
    public var clientIP: String
    public var routeName: String
    /// A request header's value (lower-case name), asked before the request's own headers
    /// (``headerValue(_:)``): for callers without a request.
    public var header: (String) -> String?
    /// A claim's key value, asked when the subject holds no `claims` (``claimValue(_:)``).
    public var claim: (String) -> String?
    /// The request, for the `path`, `method`, `header:`, `query:`, `cookie:` and `var:` key
    /// parts (nil: absent).
    public var request: GatewayRequest?
    /// The verified JWT's claims, for `claim:` key parts and costs (nil: `claim` answers). The
    /// gateway sets this and `request` instead of closures: nothing is captured per request.
    public var claims: JSONObject?
    /// The matched route's path parameters.
    public var pathParams: [String: String] = [:]

    public init(credentialId: String?, consumerId: String?, consumerGroups: [String], clientIP: String,
                routeName: String, header: @escaping (String) -> String? = { _ in nil },
                claim: @escaping (String) -> String? = { _ in nil }, request: GatewayRequest? = nil,
                claims: JSONObject? = nil, pathParams: [String: String] = [:]) {
        self.credentialId = credentialId
        self.consumerId = consumerId
        self.consumerGroups = consumerGroups
        self.clientIP = clientIP
        self.routeName = routeName
        self.header = header
        self.claim = claim
        self.request = request
        self.claims = claims
        self.pathParams = pathParams
    }

    /// The first value of the request header `name` (lower-case): `header`'s answer, else the
    /// request's own field.
    public func headerValue(_ name: String) -> String? { header(name) ?? request?.headers[name] }

    /// The claim `name` as a key value (``claimText(_:)``) from `claims`, else `claim`'s answer.
    public func claimValue(_ name: String) -> String? {
        guard let claims else { return claim(name) }
        return claims[name].flatMap(Self.claimText)
    }

    /// A claim as a key value: strings as they are, other scalars as JSON text; null, arrays
    /// and objects count as missing.
    public static func claimText(_ value: JSONValue) -> String? {
        switch value {
        case .string(let s): return s
        case .null, .array, .object: return nil
        default: return JSONCodec.serialize(value)
        }
    }

    /// The value of one key part; nil when the request has none (no consumer, header absent…).
    public func value(of part: RateLimitKeyPart) -> String? {
        switch part {
        case .credential: return credentialId
        case .consumer: return consumerId
        case .ip: return clientIP
        case .route: return routeName
        case .header(let n): return headerValue(n)
        case .claim(let n): return claimValue(n)
        case .path: return request?.path
        case .pathParam(let n): return pathParams[n]
        case .method: return request?.method
        case .query(let n): return request?.queryValue(n)
        case .cookie(let n): return CookieHeader.value(named: n, in: request?.headers["cookie"])
        case .variable(let n): return request?.variable(n)
        }
    }
}

/// The identity of one counter: a stable 64-bit hash, which is all the shared-memory table
/// (slot and tag) and Redis (`<namespace>:rl:<hash>`) keep of it.
///
/// The hash is that of the counter's text: the limit's name, its parameters and the
/// length-prefixed key values, so values containing separators cannot collide, a reload that
/// keeps a limit keeps its counters, and a changed limit starts fresh. The limiter hashes those
/// bytes as it goes (``init(prefix:parts:subject:)``) without writing the text out; ``make``
/// writes it, for tests and diagnostics. Two keys are equal when their hashes are.
public struct RateLimitKey: Sendable, Hashable {
    public let hash: UInt64
    /// The counter's text when it was written out (``make``, ``init(text:)``); empty for the
    /// keys the limiter derives.
    public let text: String

    public init(text: String) {
        self.text = text
        self.hash = StableHash.hash(text)
    }

    /// For callers that already hold a hash (tests that push millions of keys).
    public init(hash: UInt64, text: String = "") {
        self.hash = hash == 0 ? 1 : hash
        self.text = text
    }

    /// The key of `subject` under a limit whose text prefix is `prefix`
    /// (``RateLimitTexts/keyPrefix``): the hash of exactly the text ``make`` writes.
    init(prefix: StableHasher, parts: [RateLimitKeyPart], subject: borrowing RateLimitSubject) {
        var hasher = prefix
        Self.writeValues(parts: parts, subject: subject, to: &hasher)
        self.init(hash: hasher.finalize())
    }

    public static func == (a: RateLimitKey, b: RateLimitKey) -> Bool { a.hash == b.hash }
    public func hash(into h: inout Hasher) { h.combine(hash) }

    /// Builds the key of `limitName` with `params` for `subject`, its text written out. A
    /// missing value is written as `-` (distinct from any present value, which carries its
    /// length): every request without, say, a consumer shares one counter — conservative
    /// rather than unlimited.
    public static func make(limitName: String, params: RateLimitParams, parts: [RateLimitKeyPart],
                            subject: RateLimitSubject) -> RateLimitKey {
        var text = RateLimitKeyText()
        writePrefix(limitName: limitName, params: params, to: &text)
        writeValues(parts: parts, subject: subject, to: &text)
        return RateLimitKey(text: String(decoding: text.bytes, as: UTF8.self))
    }

    /// `name|algorithm/limit/window_us/burst`: what the configuration fixes.
    static func writePrefix<W: RateLimitKeyWriter>(limitName: String, params: RateLimitParams, to w: inout W) {
        w.write(limitName)
        w.write(byte: UInt8(ascii: "|"))
        w.write(params.algorithm.rawValue)
        w.write(byte: UInt8(ascii: "/"))
        w.writeDecimal(Int(params.limit))
        w.write(byte: UInt8(ascii: "/"))
        w.writeDecimal(Int(params.windowMicros))
        w.write(byte: UInt8(ascii: "/"))
        w.writeDecimal(Int(params.burst))
    }

    /// `|<len>:<value>` per part (`|-` for a missing value): what the request adds.
    static func writeValues<W: RateLimitKeyWriter>(parts: [RateLimitKeyPart], subject: borrowing RateLimitSubject, to w: inout W) {
        for part in parts {
            w.write(byte: UInt8(ascii: "|"))
            if let v = subject.value(of: part) {
                w.writeDecimal(v.utf8.count)
                w.write(byte: UInt8(ascii: ":"))
                w.write(v)
            } else {
                w.write(byte: UInt8(ascii: "-"))
            }
        }
    }
}

/// Receives a counter text's bytes: ``RateLimitKey/make`` keeps them, the limiter only hashes
/// them (``StableHasher``).
protocol RateLimitKeyWriter {
    mutating func write(byte: UInt8)
    mutating func write(_ text: String)
    /// `value` in decimal, as `String(value)` writes it.
    mutating func writeDecimal(_ value: Int)
}

/// A counter's text, written out.
struct RateLimitKeyText: RateLimitKeyWriter {
    var bytes: [UInt8] = []
    init() { bytes.reserveCapacity(64) }
    mutating func write(byte: UInt8) { bytes.append(byte) }
    mutating func write(_ text: String) { bytes.appendUTF8(text) }
    mutating func writeDecimal(_ value: Int) { bytes.appendDecimal(value) }
}

/// A hash that is the same in every process and on every run (Swift's `Hasher` is seeded per
/// process, so it cannot index shared memory): FNV-1a over the UTF-8 bytes, then a SplitMix64
/// finaliser so that the low bits (the slot index) and the top byte (the slot tag) are both
/// well mixed. Never 0 (0 marks an empty slot).
public enum StableHash {
    public static func hash(_ s: String) -> UInt64 {
        var h = StableHasher()
        h.write(s)
        return h.finalize()
    }

    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        z = z ^ (z >> 31)
        return z == 0 ? 1 : z
    }
}

/// ``StableHash`` fed in pieces: FNV-1a is a running state, so a text given piece by piece
/// hashes as the joined text would, and a fixed prefix can be hashed once and continued.
public struct StableHasher: Sendable, Hashable, RateLimitKeyWriter {
    private var state: UInt64 = 0xcbf2_9ce4_8422_2325

    public init() {}

    @inline(__always)
    public mutating func write(byte: UInt8) {
        state ^= UInt64(byte)
        state = state &* 0x0000_0100_0000_01b3
    }

    public mutating func write(_ text: String) {
        var text = text  // withUTF8 is free for a native string
        text.withUTF8 { for b in $0 { write(byte: b) } }
    }

    public mutating func writeDecimal(_ value: Int) {
        DecimalText.forEachByte(of: value) { write(byte: $0) }
    }

    /// The hash of everything written (never 0).
    public func finalize() -> UInt64 { StableHash.mix(state) }
}
