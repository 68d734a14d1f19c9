import Crypto

/// Making and hashing API keys (used by `portcullis keys`).
public enum APIKeyMaterial {
    /// A new key: 32 bytes from the system's CSPRNG, base64url (43 characters, 256 bits).
    public static func generate() -> String {
        var rng = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: 32)
        for i in bytes.indices { bytes[i] = UInt8.random(in: .min ... .max, using: &rng) }
        return Base64URL.encode(bytes)
    }

    /// Lower-case hex SHA-256 of the key's UTF-8 bytes, as the config's `sha256` stores it.
    public static func digestHex(_ key: String) -> String {
        Hex.encode(SHA256.hash(data: Array(key.utf8)))
    }
}
