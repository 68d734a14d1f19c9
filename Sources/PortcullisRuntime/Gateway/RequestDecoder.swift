import PortcullisCore

/// Turns FastCGI params into a `GatewayRequest`. Client headers arrive only as `HTTP_*`
/// params, so they can never pose as the `PORTCULLIS_*` facts nginx sets itself.
public enum RequestDecoder {
    public struct Decoded {
        public var request: GatewayRequest
        /// Request id nginx generated (`$request_id`), used when the client's is unacceptable.
        public var nginxRequestId: String
    }

    public static func decode(_ params: [(name: Substring, value: Substring)]) -> GatewayRequest {
        var method = "GET", documentURI = "", requestURI = "", query = "", host = "", hostHeader = ""
        var remote = "", scheme = "", nginxId = "", contentLength: Int64?
        var headers = HTTPHeaders()
        var certVerify: String?, certSubject: String?, certPEM: String?
        for (name, value) in params {
            if name.hasPrefix("HTTP_") {
                // nginx passes these twice; CONTENT_TYPE/CONTENT_LENGTH are the authoritative copies.
                if name == "HTTP_CONTENT_TYPE" || name == "HTTP_CONTENT_LENGTH" { continue }
                let headerName = headerName(fromParam: name.dropFirst(5))
                if headerName == "Host" { hostHeader = String(value) }
                headers.add(headerName, String(value))
                continue
            }
            switch name {
            case "REQUEST_METHOD": method = String(value)
            case "DOCUMENT_URI": documentURI = String(value)
            case "REQUEST_URI": requestURI = String(value)
            case "QUERY_STRING": query = String(value)
            case "CONTENT_TYPE": if !value.isEmpty { headers.add("Content-Type", String(value)) }
            case "CONTENT_LENGTH": contentLength = Int64(value)
            case "REMOTE_ADDR": remote = String(value)
            case "PORTCULLIS_SCHEME": scheme = String(value)
            case "REQUEST_SCHEME": if scheme.isEmpty { scheme = String(value) }
            case "PORTCULLIS_HOST": host = String(value)
            case "PORTCULLIS_REQUEST_ID": nginxId = String(value)
            case "PORTCULLIS_SSL_CLIENT_VERIFY": certVerify = String(value)
            case "PORTCULLIS_SSL_CLIENT_S_DN": certSubject = String(value)
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

    /// `X_REQUEST_ID` → `X-Request-Id`.
    static func headerName(fromParam param: Substring) -> String {
        var out = ""
        out.reserveCapacity(param.utf8.count)
        var upper = true
        for c in param {
            if c == "_" { out.append("-"); upper = true; continue }
            out.append(upper ? Character(c.uppercased()) : Character(c.lowercased()))
            upper = false
        }
        return out
    }

    static func randomRequestId() -> String {
        var g = SystemRandomNumberGenerator()
        let a = g.next() as UInt64, b = g.next() as UInt64
        return String(a, radix: 16) + String(b, radix: 16)
    }
}
