import Crypto
import Foundation

/// What nginx reported about the TLS client certificate, taken from FastCGI params
/// (`PORTCULLIS_SSL_CLIENT_*`), never from request headers, so a client cannot forge them.
public struct ClientCertificateFacts: Sendable, Equatable {
    /// `$ssl_client_verify`: `SUCCESS`, `FAILED:reason` or `NONE`.
    public var verify: String?
    /// A SHA-256 fingerprint (hex, any case, colons allowed). nginx's own
    /// `$ssl_client_fingerprint` is SHA-1, so the worker computes this one from
    /// `$ssl_client_cert` with `CertificateFingerprint.sha256Hex(pem:)`.
    public var fingerprint: String?
    /// `$ssl_client_s_dn` (RFC 2253 form).
    public var subjectDN: String?

    public init(verify: String?, fingerprint: String?, subjectDN: String?) {
        self.verify = verify
        self.fingerprint = fingerprint
        self.subjectDN = subjectDN
    }

    /// True when the client presented a certificate at all (verified or not).
    public var isPresented: Bool {
        guard let verify, !verify.isEmpty else { return false }
        return verify != "NONE"
    }

    /// True only when nginx verified the certificate against its CA.
    public var isVerified: Bool { verify == "SUCCESS" }
}

/// Certificate fingerprints computed with swift-crypto.
public enum CertificateFingerprint {
    /// Lower-case hex SHA-256 of the DER certificate inside `pem` (the first
    /// `CERTIFICATE` block). nginx's `$ssl_client_cert` is PEM whose continuation lines start
    /// with a tab; that whitespace is ignored. Returns nil when no certificate is found.
    public static func sha256Hex(pem: String) -> String? {
        guard let begin = pem.range(of: "-----BEGIN CERTIFICATE-----"),
              let end = pem.range(of: "-----END CERTIFICATE-----", range: begin.upperBound..<pem.endIndex)
        else { return nil }
        let body = pem[begin.upperBound..<end.lowerBound].filter { !$0.isWhitespace }
        guard !body.isEmpty, let der = Data(base64Encoded: String(body)) else { return nil }
        return Hex.encode(SHA256.hash(data: der))
    }

    /// Normalises a configured or reported fingerprint: colons removed, lower-case.
    public static func normalize(_ fingerprint: String) -> String {
        fingerprint.replacingOccurrences(of: ":", with: "").lowercased()
    }
}
