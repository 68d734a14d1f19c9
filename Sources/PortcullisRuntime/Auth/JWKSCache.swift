import Foundation
import PortcullisCore

/// The last good JWK Set of each `jwks_url`, kept in the runtime directory so that a worker
/// that starts (respawn, scale-up, recycling) verifies tokens with known kids at once, even
/// while the identity provider is down or slow. Files are written atomically (rename) and
/// readable by the gateway's user only; they hold public keys.
public struct JWKSCache: Sendable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    /// The cache of a runtime directory.
    public init(runtimeDirectory: String) { self.init(directory: runtimeDirectory + "/jwks") }

    func path(for url: String) -> String {
        directory + "/" + APIKeyMaterial.digestHex(url) + ".json"  // the SHA-256 of the URL
    }

    /// The keys last saved for `url`; empty when there are none or the file is unusable.
    public func keys(for url: String) -> [VerificationKey] {
        guard let data = FileManager.default.contents(atPath: path(for: url)),
              let document = try? JSONCodec.parse(Array(data), rejectDuplicateKeys: true) else { return [] }
        return VerificationKey.jwkSet(document).keys
    }

    /// Saves a document that was just fetched and accepted; failures are ignored (the cache
    /// only shortens a future start).
    public func save(_ document: [UInt8], for url: String) {
        mkdir(directory, 0o700)
        let target = path(for: url)
        let temporary = target + ".\(getpid()).tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(document), attributes: [.posixPermissions: 0o600]) else { return }
        if rename(temporary, target) != 0 { unlink(temporary) }
    }
}
