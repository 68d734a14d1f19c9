import PortcullisCore

/// Turns FastCGI params into a `GatewayRequest`, in one pass over the bytes nginx sent. Client
/// headers arrive only as `HTTP_*` params, so they can never pose as the `PORTCULLIS_*` facts
/// nginx sets itself. Strings are made only for what the request keeps; names are matched as
/// bytes.
public enum RequestDecoder {
    public struct Decoded {
        public var request: GatewayRequest
        /// nginx always sends REQUEST_METHOD; without it the params were cut short.
        public var hasMethod: Bool
        /// Total bytes of the params (bounded by `server.max_header_bytes`).
        public var paramBytes: Int
    }

    /// Decodes `NAME=VALUE` entries, as libfcgi hands them over.
    public static func decode<Entries: Sequence>(entries: Entries) -> Decoded where Entries.Element == UnsafeBufferPointer<UInt8> {
        var method: String?, documentURI = "", requestURI = "", query = "", host = ""
        var remote = "", scheme = "", requestScheme = "", nginxId = "", contentLength: Int64?
        var headers = HTTPHeaders()
        var certVerify: String?, certSubject: String?, certPEM: String?
        var variables: [(name: String, value: String)] = []
        var paramBytes = 0
        var adminPages = false, websocketUpgrade = false
        for entry in entries {
            paramBytes += entry.count
            // `memchr`: the generic `firstIndex(of:)` stepped a byte at a time through each name.
            guard let base = entry.baseAddress, let found = memchr(base, 0x3D, entry.count) else { continue }
            let eq = UnsafeRawPointer(base).distance(to: UnsafeRawPointer(found))
            let name = UnsafeBufferPointer(rebasing: entry[..<eq])
            let valueBytes = UnsafeBufferPointer(rebasing: entry[(eq + 1)...])
            // Bytes that are not UTF-8 are kept (RawText), never replaced by U+FFFD.
            func value() -> String { RawText.decode(valueBytes) }
            if hasPrefix(name, "HTTP_") {
                // nginx passes these twice; CONTENT_TYPE/CONTENT_LENGTH are the authoritative copies.
                if equals(name, "HTTP_CONTENT_TYPE") || equals(name, "HTTP_CONTENT_LENGTH") { continue }
                headers.add(headerName(fromParam: name), value())
                continue
            }
            switch name.count {
            case 11 where equals(name, "REMOTE_ADDR"): remote = value()
            case 11 where equals(name, "REQUEST_URI"): requestURI = value()
            case 12 where equals(name, "DOCUMENT_URI"): documentURI = value()
            case 12 where equals(name, "QUERY_STRING"): query = value()
            case 12 where equals(name, "CONTENT_TYPE"): if !valueBytes.isEmpty { headers.add("Content-Type", value()) }
            case 14 where equals(name, "REQUEST_METHOD"): method = value()
            case 14 where equals(name, "CONTENT_LENGTH"): contentLength = Int64(value())
            case 14 where equals(name, "REQUEST_SCHEME"): requestScheme = value()
            case 15 where equals(name, "PORTCULLIS_HOST"): host = value()
            case 16 where equals(name, "PORTCULLIS_ADMIN"): adminPages = valueBytes.elementsEqual("1".utf8)
            case 17 where equals(name, "PORTCULLIS_SCHEME"): scheme = value()
            case 18 where equals(name, "PORTCULLIS_UPGRADE"): websocketUpgrade = value().caseInsensitiveEquals("websocket")
            case 21 where equals(name, "PORTCULLIS_REQUEST_ID"): nginxId = value()
            case 26 where equals(name, "PORTCULLIS_SSL_CLIENT_S_DN"): certSubject = value()
            case 26 where equals(name, "PORTCULLIS_SSL_CLIENT_CERT"):
                // nginx's $ssl_client_fingerprint is SHA-1; consumers are matched by the SHA-256
                // of the certificate nginx verified ($ssl_client_escaped_cert, URL-encoded PEM).
                certPEM = PercentEncoding.decode(value())
            case 28 where equals(name, "PORTCULLIS_SSL_CLIENT_VERIFY"): certVerify = value()
            default:
                // Operator-chosen nginx facts (rate-limit key parts `var:<NAME>`).
                if name.count > 15, name[0] == UInt8(ascii: "P"), hasPrefix(name, "PORTCULLIS_VAR_") {
                    variables.append((String(decoding: UnsafeBufferPointer(rebasing: name[15...]), as: UTF8.self), value()))
                }
            }
        }
        if scheme.isEmpty { scheme = requestScheme }
        if documentURI.isEmpty {
            documentURI = PercentEncoding.decode(requestURI.split(separator: "?", maxSplits: 1).first ?? "/")
        }
        // The host is nginx's `$host` (PORTCULLIS_HOST: the request line's host, else the Host
        // header, lower-cased, without port), for routing and X-Forwarded-Host alike; never
        // the client's Host header on its own, which may differ from what nginx routed on.
        host = host.asciiLowercased
        if nginxId.isEmpty { nginxId = randomRequestId() }
        let requestId = RequestID.choose(clientSupplied: headers["X-Request-ID"], nginxGenerated: nginxId)
        var request = GatewayRequest(
            method: method ?? "GET", path: documentURI.isEmpty ? "/" : documentURI, rawQuery: query, host: host,
            headers: headers,
            facts: ConnectionFacts(clientAddress: remote, scheme: scheme.isEmpty ? "http" : scheme, host: host),
            requestId: requestId, contentLength: contentLength)
        request.adminPages = adminPages
        request.websocketUpgrade = websocketUpgrade
        if !variables.isEmpty { request.variables = variables }
        if let certVerify, !certVerify.isEmpty {
            let fingerprint = certPEM.flatMap { $0.isEmpty ? nil : CertificateFingerprint.sha256Hex(pem: $0) }
            request.clientCertificate = ClientCertificateFacts(verify: certVerify, fingerprint: fingerprint, subjectDN: certSubject)
        }
        return Decoded(request: request, hasMethod: method != nil, paramBytes: paramBytes)
    }

    /// Decodes params given as name/value pairs (tests, tools).
    public static func decode(_ params: [FastCGIParam]) -> Decoded {
        let entries = params.map { Array("\($0.name)=\($0.value)".utf8) }
        var buffers: [UnsafeBufferPointer<UInt8>] = []
        return withBuffers(entries[...], into: &buffers) { decode(entries: $0) }
    }

    private static func withBuffers<R>(_ rest: ArraySlice<[UInt8]>, into buffers: inout [UnsafeBufferPointer<UInt8>],
                                       _ body: ([UnsafeBufferPointer<UInt8>]) -> R) -> R {
        guard let first = rest.first else { return body(buffers) }
        return first.withUnsafeBufferPointer { pointer in
            buffers.append(pointer)
            return withBuffers(rest.dropFirst(), into: &buffers, body)
        }
    }

    @inline(__always)
    static func equals(_ bytes: UnsafeBufferPointer<UInt8>, _ literal: StaticString) -> Bool {
        bytes.count == literal.utf8CodeUnitCount
            && memcmp(bytes.baseAddress!, literal.utf8Start, bytes.count) == 0
    }

    /// `bytes` starts with `literal` (a `memcmp`: the generic `starts(with:)` cost more than
    /// the rest of a param's decoding).
    @inline(__always)
    static func hasPrefix(_ bytes: UnsafeBufferPointer<UInt8>, _ literal: StaticString) -> Bool {
        bytes.count >= literal.utf8CodeUnitCount
            && memcmp(bytes.baseAddress!, literal.utf8Start, literal.utf8CodeUnitCount) == 0
    }

    /// `HTTP_X_REQUEST_ID` → `X-Request-Id` (ASCII bytes; params are ASCII names).
    static func headerName(fromParam param: UnsafeBufferPointer<UInt8>) -> String {
        let source = UnsafeBufferPointer(rebasing: param[5...])
        return String(unsafeUninitializedCapacity: source.count) { out in
            var upper = true
            for (i, c) in source.enumerated() {
                if c == UInt8(ascii: "_") {
                    out[i] = UInt8(ascii: "-")
                    upper = true
                    continue
                }
                if upper, c >= 0x61, c <= 0x7A { out[i] = c - 32 } else if !upper, c >= 0x41, c <= 0x5A { out[i] = c + 32 } else { out[i] = c }
                upper = false
            }
            return source.count
        }
    }

    static func randomRequestId() -> String {
        var g = SystemRandomNumberGenerator()
        let a = g.next() as UInt64, b = g.next() as UInt64
        return String(a, radix: 16) + String(b, radix: 16)
    }
}

#if canImport(Glibc)
import Glibc
#endif
