/// What nginx reported about the client certificate, from FastCGI params set by the TLS
/// server block. A request counts as certificate-authenticated only when `verify == "SUCCESS"`.
public struct ClientCertificateFacts: Sendable, Equatable {
    /// `$ssl_client_verify`: SUCCESS, NONE, or FAILED:reason.
    public var verify: String?
    /// `$ssl_client_fingerprint` (SHA-1 hex, as nginx computes it).
    public var fingerprint: String?
    /// `$ssl_client_s_dn`.
    public var subjectDN: String?
    /// `$ssl_client_escaped_cert` (URL-encoded PEM).
    public var escapedPEM: String?

    public init(verify: String? = nil, fingerprint: String? = nil, subjectDN: String? = nil, escapedPEM: String? = nil) {
        self.verify = verify
        self.fingerprint = fingerprint
        self.subjectDN = subjectDN
        self.escapedPEM = escapedPEM
    }

    public var isEmpty: Bool {
        [verify, fingerprint, subjectDN, escapedPEM].allSatisfy { $0 == nil || $0!.isEmpty }
    }
}
