import PortcullisCore

/// The request head the lean client writes: byte for byte what libcurl sends for the same
/// `UpstreamRequest` in `UpstreamClient` (upstreams and tests see no difference), built
/// directly into the output buffer.
enum HTTP1RequestHead {
    /// True when the request carries a body: curl's POST mode (a body, or POST/PUT/PATCH
    /// even when empty), never for HEAD.
    static func hasBody(_ request: UpstreamRequest) -> Bool {
        guard request.method != "HEAD" else { return false }
        if (request.bodyLength ?? 0) > 0 { return true }
        return request.method == "POST" || request.method == "PUT" || request.method == "PATCH"
    }

    /// Appends the head for `request` to `out`: request line, `Host`, the request's headers
    /// in order (minus Host and Content-Length, which are the client's; an empty value is
    /// dropped as curl drops it), then for a body `Content-Length`. No `Content-Type` is ever
    /// invented: a body the client sent without one is forwarded without one.
    static func write<Sink: ByteSink>(_ request: UpstreamRequest, target: Substring, hostHeader: String, into out: inout Sink) {
        // Every piece through `appendUTF8` (one copy each): walking the string views cost more
        // than the rest of the exchange's setup.
        out.appendUTF8(request.method)
        out.append(0x20)
        if target.utf8.first != UInt8(ascii: "/") { out.append(UInt8(ascii: "/")) }
        out.appendUTF8(target)
        out.appendASCII(" HTTP/1.1\r\nHost: ")
        out.appendUTF8(hostHeader)
        out.appendASCII("\r\n")
        for (name, value) in request.headers {
            if isClientFraming(name) { continue }
            guard value.utf8.contains(where: { $0 != 0x20 && $0 != 0x09 }) else { continue }
            out.appendUTF8(name)
            out.appendASCII(": ")
            RawText.append(value, to: &out)
            out.appendASCII("\r\n")
        }
        if hasBody(request) {
            out.appendASCII("Content-Length: ")
            out.appendDecimal(Int(request.bodyLength ?? 0))
            out.appendASCII("\r\n")
        }
        out.appendASCII("\r\n")
    }

    /// `Host` and `Content-Length` are the client's: the head writes its own.
    private static func isClientFraming(_ name: String) -> Bool {
        switch name.utf8.count {
        case 4: return name.caseInsensitiveEquals("host")
        case 14: return name.caseInsensitiveEquals("content-length")
        default: return false
        }
    }
}
