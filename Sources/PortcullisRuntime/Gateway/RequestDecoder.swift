import PortcullisCore

/// Turns FastCGI params into a `GatewayRequest`. Client headers arrive only as `HTTP_*`
/// params, so they can never pose as the `PORTCULLIS_*` facts nginx sets itself.
public enum RequestDecoder {
    public struct Decoded {
        public var request: GatewayRequest
        /// Request id nginx generated (`$request_id`), used when the client's is unacceptable.
        public var nginxRequestId: String
    }

    public static func decode(_ params: [FastCGIParam]) -> GatewayRequest {
        var method = "GET", documentURI = "", requestURI = "", query = "", host = "", hostHeader = ""
        var remote = "", scheme = "", nginxId = "", contentLength: Int64?
        var headers = HTTPHeaders()
        var certVerify: String?, certSubject: String?, certPEM: String?
        for param in params {
            let name = param.name, value = param.value
            if name.utf8.starts(with: "HTTP_".utf8) {
                // nginx passes these twice; CONTENT_TYPE/CONTENT_LENGTH are the authoritative copies.
                if name == "HTTP_CONTENT_TYPE" || name == "HTTP_CONTENT_LENGTH" { continue }
                let headerName = headerName(fromParam: name)
                if name == "HTTP_HOST" { hostHeader = value }
                headers.add(headerName, value)
                continue
            }
            switch name {
            case "REQUEST_METHOD": method = value
            case "DOCUMENT_URI": documentURI = value
            case "REQUEST_URI": requestURI = value
            case "QUERY_STRING": query = value
            case "CONTENT_TYPE": if !value.isEmpty { headers.add("Content-Type", value) }
            case "CONTENT_LENGTH": contentLength = Int64(value)
            case "REMOTE_ADDR": remote = value
            case "PORTCULLIS_SCHEME": scheme = value
            case "REQUEST_SCHEME": if scheme.isEmpty { scheme = value }
            case "PORTCULLIS_HOST": host = value
            case "PORTCULLIS_REQUEST_ID": nginxId = value
            case "PORTCULLIS_SSL_CLIENT_VERIFY": certVerify = value
            case "PORTCULLIS_SSL_CLIENT_S_DN": certSubject = value
            // nginx's $ssl_client_fingerprint is SHA-1; consumers are matched by the SHA-256 of the
            // certificate nginx verified ($ssl_client_escaped_cert, URL-encoded PEM).
            case "PORTCULLIS_SSL_CLIENT_CERT": certPEM = PercentEncoding.decode(value)
            default: break
            }
        }
        if documentURI.isEmpty {
            documentURI = PercentEncoding.decode(requestURI.split(separator: "?", maxSplits: 1).first ?? "/")
        }
        if host.isEmpty { host = String(hostHeader.split(separator: ":").first ?? "") }
        if nginxId.isEmpty { nginxId = randomRequestId() }
        let requestId = RequestID.choose(clientSupplied: headers["X-Request-ID"], nginxGenerated: nginxId)
        var request = GatewayRequest(
            method: method, path: documentURI.isEmpty ? "/" : documentURI, rawQuery: query, host: host.asciiLowercased,
            headers: headers,
            facts: ConnectionFacts(clientAddress: remote, scheme: scheme.isEmpty ? "http" : scheme, host: hostHeader),
            requestId: requestId, contentLength: contentLength)
        if let certVerify, !certVerify.isEmpty {
            let fingerprint = certPEM.flatMap { $0.isEmpty ? nil : CertificateFingerprint.sha256Hex(pem: $0) }
            request.clientCertificate = ClientCertificateFacts(verify: certVerify, fingerprint: fingerprint, subjectDN: certSubject)
        }
        return request
    }

    /// `HTTP_X_REQUEST_ID` → `X-Request-Id` (ASCII bytes; params are ASCII names).
    static func headerName(fromParam param: String) -> String {
        var bytes = Array(param.utf8.dropFirst(5))
        var upper = true
        for i in bytes.indices {
            let c = bytes[i]
            if c == UInt8(ascii: "_") {
                bytes[i] = UInt8(ascii: "-")
                upper = true
                continue
            }
            if upper, c >= 0x61, c <= 0x7A { bytes[i] = c - 32 } else if !upper, c >= 0x41, c <= 0x5A { bytes[i] = c + 32 }
            upper = false
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func randomRequestId() -> String {
        var g = SystemRandomNumberGenerator()
        let a = g.next() as UInt64, b = g.next() as UInt64
        return String(a, radix: 16) + String(b, radix: 16)
    }
}
