import ArgumentParser
import Foundation
import PortcullisCore

/// `portcullis keys`: make and hash API keys. Keys are printed once and never stored in clear;
/// the config holds only their SHA-256 digest.
public struct KeysCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Generate API keys and compute the digests the configuration stores.",
        subcommands: [Generate.self, Hash.self]
    )

    public init() {}

    /// `keys generate --consumer ID --key-id ID [--expires T]`
    public struct Generate: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Print a new random API key once, and the config entry holding its digest.")

        @Option(help: "Consumer id the key is for (shown in the printed entry).")
        var consumer: String

        @Option(name: .customLong("key-id"), help: "Id of the key (logged and sent upstream as X-Credential-ID).")
        var keyId: String

        @Option(help: "Optional expiry: RFC 3339 time or Unix seconds.")
        var expires: String?

        public init() {}

        public func validate() throws {
            guard !consumer.isEmpty else { throw ValidationError("--consumer must not be empty") }
            guard !keyId.isEmpty else { throw ValidationError("--key-id must not be empty") }
        }

        public func run() throws {
            var entry = JSONObject([("id", .string(keyId))])
            let key = APIKeyMaterial.generate()
            entry["sha256"] = .string(APIKeyMaterial.digestHex(key))
            if let expires {
                guard let at = Int64(expires) ?? RFC3339.parse(expires) else {
                    throw ValidationError("--expires must be an RFC 3339 time or Unix seconds")
                }
                // A key that is already expired would be refused from its first request.
                guard at > Int64(time(nil)) else { throw ValidationError("--expires \(expires) is in the past") }
                entry["expires"] = Int64(expires) != nil ? .int(at) : .string(expires)
            }
            print("API key (shown once; give it to the client, it is not stored anywhere):")
            print("  \(key)")
            print("")
            print("Add this to \"api_keys\" of consumer \"\(consumer)\" in the configuration, then reload:")
            print(JSONCodec.serialize(.object(entry), pretty: true))
        }
    }

    /// `keys hash`: reads one key from standard input and prints its SHA-256 hex.
    public struct Hash: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Read an API key from standard input and print the SHA-256 digest for the config.")

        public init() {}

        public func run() throws {
            let data = FileHandle.standardInput.readDataToEndOfFile()
            var key = String(decoding: data, as: UTF8.self)
            // `echo key | portcullis keys hash` adds a newline that is not part of the key. A
            // CRLF is one Character in Swift, so it is compared as such.
            while let last = key.last, last == "\n" || last == "\r" || last == "\r\n" { key.removeLast() }
            guard !key.isEmpty else { throw ValidationError("no key on standard input") }
            print(APIKeyMaterial.digestHex(key))
        }
    }
}
