/// Header rules applied at the gateway boundary, both directions.
public enum HeaderHygiene {
    /// Hop-by-hop fields (RFC 9110 §7.6.1 and the legacy ones proxies still see), lower-case.
    public static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "proxy-authenticate", "proxy-authorization",
    ]

    /// Headers the gateway sets from nginx's facts; a client's copy is never trusted.
    public static let gatewayOwned: Set<String> = [
        "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "forwarded", "x-real-ip",
        "x-request-id",
    ]

    /// Removes hop-by-hop fields, including every field named in `Connection`. Compares
    /// case-insensitively in place: no lower-cased copies on the hot path, and nothing at all
    /// is allocated when the only `Connection` tokens are hop-by-hop names themselves
    /// (`keep-alive`, `close`), as in nearly every message. Linear in headers plus tokens.
    public static func stripHopByHop(_ headers: inout HTTPHeaders) {
        guard headers.fields.contains(where: { isHopByHop($0.name) }) else { return }
        var named: Set<String> = []
        for field in headers.fields where field.name.caseInsensitiveEquals("connection") {
            for token in field.value.utf8.split(separator: UInt8(ascii: ",")) {
                let name = Substring(token).trimmingSpaces()
                if name.isEmpty || isHopByHop(name) || name.caseInsensitiveEquals("close") { continue }
                named.insert(String(name).asciiLowercased)
            }
        }
        headers.removeAll { name in isHopByHop(name) || (!named.isEmpty && named.contains(name.asciiLowercased)) }
    }

    /// The most `Connection` tokens a request may carry (all `Connection` fields together,
    /// empty list elements not counted); more is answered 400 before routing.
    public static let maxConnectionTokens = 32

    /// True when the `Connection` fields of `headers` name more than ``maxConnectionTokens``
    /// tokens. Counts commas of non-empty elements and stops at the cap: linear in the bytes
    /// of the `Connection` fields, nothing allocated.
    public static func exceedsConnectionTokenCap(_ headers: HTTPHeaders) -> Bool {
        var tokens = 0
        for field in headers.fields where field.name.utf8.count == 10 && field.name.caseInsensitiveEquals("connection") {
            var inToken = false
            for c in field.value.utf8 {
                if c == UInt8(ascii: ",") {
                    inToken = false
                } else if c != 0x20 && c != 0x09 && !inToken {
                    inToken = true
                    tokens += 1
                    if tokens > maxConnectionTokens { return true }
                }
            }
        }
        return false
    }

    /// Whether `name` is one of ``hopByHop`` (any case), decided by length first.
    @inlinable
    static func isHopByHop(_ name: some StringProtocol) -> Bool {
        switch name.utf8.count {
        case 2: return name.caseInsensitiveEquals("te")
        case 7: return name.caseInsensitiveEquals("trailer") || name.caseInsensitiveEquals("upgrade")
        case 10: return name.caseInsensitiveEquals("connection") || name.caseInsensitiveEquals("keep-alive")
        case 16: return name.caseInsensitiveEquals("proxy-connection")
        case 17: return name.caseInsensitiveEquals("transfer-encoding")
        case 18: return name.caseInsensitiveEquals("proxy-authenticate")
        case 19: return name.caseInsensitiveEquals("proxy-authorization")
        default: return false
        }
    }

    /// Whether `name` is one of ``gatewayOwned``, any other `X-Forwarded-*` field,
    /// `Content-Length` or `Expect` (any case): the fields a client's request never passes
    /// upstream as they are. Decided by length first.
    static func isReplacedUpstream(_ name: String) -> Bool {
        let count = name.utf8.count
        // Frameworks build URLs and decide the scheme from X-Forwarded-Prefix, -Ssl, -Scheme,
        // -Server...: only the gateway (or an operator's rule set, applied after this) may set
        // them, never the client.
        if count >= 12, isForwardedPrefix(name) { return true }
        switch count {
        case 6: return name.caseInsensitiveEquals("expect")
        case 9: return name.caseInsensitiveEquals("forwarded") || name.caseInsensitiveEquals("x-real-ip")
        case 12: return name.caseInsensitiveEquals("x-request-id")
        case 14: return name.caseInsensitiveEquals("content-length")
        default: return false
        }
    }

    /// Whether `name` starts with `X-Forwarded-` (any case).
    private static func isForwardedPrefix(_ name: String) -> Bool {
        var bytes = name.utf8.makeIterator()
        for expected in "x-forwarded-".utf8 {
            guard let c = bytes.next(), ASCIICase.lower(c) == expected else { return false }
        }
        return true
    }

    /// The request headers to forward upstream: hop-by-hop and gateway-owned fields removed,
    /// then `X-Forwarded-*` and `X-Request-ID` set from what nginx reported.
    public static func upstreamRequestHeaders(_ incoming: HTTPHeaders, facts: ConnectionFacts, requestId: String) -> HTTPHeaders {
        var headers = incoming
        // The copy is made once, with room for the four fields added here and the trace
        // context the gateway adds next, instead of growing three times.
        headers.reserveCapacity(incoming.count + 5)
        stripHopByHop(&headers)
        if headers.fields.contains(where: { isReplacedUpstream($0.name) }) { headers.removeAll(where: isReplacedUpstream) }
        headers.add("X-Forwarded-For", facts.clientAddress)
        headers.add("X-Forwarded-Proto", facts.scheme)
        if !facts.host.isEmpty { headers.add("X-Forwarded-Host", facts.host) }
        headers.add("X-Request-ID", requestId)
        return headers
    }

    /// Response headers to pass back to nginx: hop-by-hop removed; `Content-Length` kept only
    /// when the body passes through unchanged. Every `X-Accel-*` field is removed (nginx acts
    /// on them: `X-Accel-Redirect` would serve any internal location, `X-Accel-Limit-Rate`
    /// throttle the client), except `X-Accel-Buffering` when `allowAccelBuffering`.
    public static func downstreamResponseHeaders(_ upstream: HTTPHeaders, allowAccelBuffering: Bool = true) -> HTTPHeaders {
        var headers = upstream
        stripHopByHop(&headers)
        headers.removeAll { name in
            name.caseInsensitiveEquals("status") || name.caseInsensitiveEquals("x-request-id")
                || (isAccel(name) && !(allowAccelBuffering && name.caseInsensitiveEquals("x-accel-buffering")))
        }
        return headers
    }

    /// Appends `Name: value\r\n` for each of `headers` that may be placed in a head (a token
    /// name, a safe value), the value's bytes as they came (`RawText`).
    public static func appendFields(_ headers: HTTPHeaders, to out: inout [UInt8]) { writeFields(headers, to: &out) }

    public static func appendFields(_ headers: HTTPHeaders, to out: inout ByteBuffer) { writeFields(headers, to: &out) }

    // The public forms are concrete so that callers in other modules get this module's
    // specialisations, not generic code.
    private static func writeFields<Sink: ByteSink>(_ headers: HTTPHeaders, to out: inout Sink) {
        for (name, value) in headers where isSafeHeaderValue(value) && isToken(name) {
            out.appendUTF8(name)
            out.appendASCII(": ")
            RawText.append(value, to: &out)
            out.appendASCII("\r\n")
        }
    }

    /// What `appendFields(downstreamResponseHeaders(raw.headers(), ...))` appends, decided on
    /// the bytes as they arrived: no `String` per field, nothing allocated unless a
    /// `Connection` field names a field that is not hop-by-hop itself.
    public static func appendDownstreamFields(_ raw: RawHeaderFields, allowAccelBuffering: Bool, to out: inout [UInt8]) {
        writeDownstreamFields(raw, allowAccelBuffering: allowAccelBuffering, to: &out)
    }

    public static func appendDownstreamFields(_ raw: RawHeaderFields, allowAccelBuffering: Bool, to out: inout ByteBuffer) {
        writeDownstreamFields(raw, allowAccelBuffering: allowAccelBuffering, to: &out)
    }

    private static func writeDownstreamFields<Sink: ByteSink>(_ raw: RawHeaderFields, allowAccelBuffering: Bool, to out: inout Sink) {
        raw.bytes.withUnsafeBufferPointer { all in
            func slice(_ range: Range<Int>) -> UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(rebasing: all[range]) }
            // Fields a `Connection` field names are hop-by-hop too (as ranges of `all`).
            var named: [Range<Int>] = []
            for f in raw.fields where ASCIICase.equal(slice(f.nameStart..<f.valueStart), lower: "connection") {
                var start = f.valueStart
                while start <= f.valueEnd {
                    var end = start
                    while end < f.valueEnd, all[end] != UInt8(ascii: ",") { end += 1 }
                    var lo = start, hi = end
                    while lo < hi, all[lo] == 0x20 || all[lo] == 0x09 { lo += 1 }
                    while hi > lo, all[hi - 1] == 0x20 || all[hi - 1] == 0x09 { hi -= 1 }
                    let token = slice(lo..<hi)
                    if !token.isEmpty, !isHopByHop(token), !ASCIICase.equal(token, lower: "close") { named.append(lo..<hi) }
                    start = end + 1
                }
            }
            for f in raw.fields {
                let name = slice(f.nameStart..<f.valueStart), value = slice(f.valueStart..<f.valueEnd)
                guard isToken(name), isSafeHeaderValue(value), !isHopByHop(name) else { continue }
                if !named.isEmpty, named.contains(where: { ASCIICase.equal(slice($0), name) }) { continue }
                switch name.count {
                case 6 where ASCIICase.equal(name, lower: "status"): continue
                case 12 where ASCIICase.equal(name, lower: "x-request-id"): continue
                case 9...:
                    if isAccel(name) && !(allowAccelBuffering && ASCIICase.equal(name, lower: "x-accel-buffering")) { continue }
                default: break
                }
                out.append(bytes: name)
                out.appendASCII(": ")
                out.append(bytes: value)
                out.appendASCII("\r\n")
            }
        }
    }

    /// `isHopByHop` on bytes.
    static func isHopByHop(_ name: UnsafeBufferPointer<UInt8>) -> Bool {
        switch name.count {
        case 2: return ASCIICase.equal(name, lower: "te")
        case 7: return ASCIICase.equal(name, lower: "trailer") || ASCIICase.equal(name, lower: "upgrade")
        case 10: return ASCIICase.equal(name, lower: "connection") || ASCIICase.equal(name, lower: "keep-alive")
        case 16: return ASCIICase.equal(name, lower: "proxy-connection")
        case 17: return ASCIICase.equal(name, lower: "transfer-encoding")
        case 18: return ASCIICase.equal(name, lower: "proxy-authenticate")
        case 19: return ASCIICase.equal(name, lower: "proxy-authorization")
        default: return false
        }
    }

    /// `isAccel` on bytes.
    static func isAccel(_ name: UnsafeBufferPointer<UInt8>) -> Bool {
        name.count > 8 && ASCIICase.equal(UnsafeBufferPointer(rebasing: name[..<8]), lower: "x-accel-")
    }

    /// `isSafeHeaderValue` on bytes. Eight bytes at a time while a word holds no byte below
    /// 0x20 and no DEL (exact tests: a word that has one is looked at byte by byte, where a
    /// tab passes); a value is mostly such words.
    public static func isSafeHeaderValue(_ value: UnsafeBufferPointer<UInt8>) -> Bool {
        var i = 0
        if let base = value.baseAddress {
            let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
            while i + 8 <= value.count {
                let w = UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self)
                let below20 = (w &- 0x20 &* ones) & ~w & highs
                let del = w ^ (0x7F &* ones)
                let isDel = (del &- ones) & ~del & highs
                if below20 | isDel != 0 { break }
                i += 8
            }
        }
        while i < value.count {
            let c = value[i]
            if (c < 0x20 && c != 0x09) || c == 0x7F { return false }
            i += 1
        }
        return true
    }

    /// `isToken` on bytes.
    public static func isToken(_ name: UnsafeBufferPointer<UInt8>) -> Bool {
        !name.isEmpty && name.allSatisfy(isTokenByte)
    }

    /// Whether `name` starts with `X-Accel-` (any case).
    @inlinable
    static func isAccel(_ name: String) -> Bool {
        let u = name.utf8
        guard u.count > 8, let first = u.first, first | 0x20 == UInt8(ascii: "x") else { return false }
        return name.utf8.prefix(8).elementsEqual("x-accel-".utf8) { ASCIICase.lower($0) == $1 }
    }

    /// True when `value` may be placed in a header: no CR, LF, NUL or other control characters
    /// except horizontal tab.
    public static func isSafeHeaderValue(_ value: String) -> Bool {
        if let safe = value.utf8.withContiguousStorageIfAvailable({ isSafeHeaderValue($0) }) { return safe }
        return !value.utf8.contains { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7F }
    }

    /// True for an RFC 9110 token (header names).
    public static func isToken(_ name: String) -> Bool {
        guard !name.isEmpty else { return false }
        return name.utf8.withContiguousStorageIfAvailable { $0.allSatisfy(isTokenByte) } ?? name.utf8.allSatisfy(isTokenByte)
    }

    /// RFC 9110 `tchar` (digits, letters, ``!#$%&'*+-.^_`|~``), by byte: a bit of a 128-bit
    /// constant instead of a search through the punctuation, or a table behind a lazily
    /// initialised global that was checked once per byte.
    @inline(__always)
    static func isTokenByte(_ c: UInt8) -> Bool {
        let lo: UInt64 = 0x03FF_6CFA_0000_0000, hi: UInt64 = 0x57FF_FFFF_C7FF_FFFE
        return c < 64 ? (lo >> UInt64(c)) & 1 == 1 : c < 128 && (hi >> UInt64(c - 64)) & 1 == 1
    }
}

/// Facts about the client connection as nginx reported them (FastCGI params, never headers).
public struct ConnectionFacts: Sendable, Equatable {
    public var clientAddress: String
    public var scheme: String
    public var host: String
    public init(clientAddress: String, scheme: String, host: String) {
        self.clientAddress = clientAddress
        self.scheme = scheme
        self.host = host
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces and tabs (HTTP optional whitespace).
    public func trimmingSpaces() -> SubSequence {
        var s = self[...]
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}
