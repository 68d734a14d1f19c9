import Synchronization

/// A bounded cache of verified tokens, keyed by the SHA-256 of the token, so a repeated RS/ES
/// token costs one hash and one lookup instead of a public-key operation and two JSON parses.
/// An entry holds the identity built from the token's claims: a hit builds nothing (the
/// identity depends only on the claims and on the configuration, which owns the cache).
///
/// An entry lives until the earlier of the token's `exp` and `ttl` seconds after it was
/// verified. Revocation consequence: a token accepted once stays accepted for up to `ttl`
/// seconds even if its signing key is removed from the configuration or the JWKS in the
/// meantime (a config reload builds a new, empty cache). Eviction is FIFO when full.
public final class TokenCache: Sendable {
    public struct Entry: Sendable {
        public let validUntil: Int64
        /// The identity of the verified token (its claims included).
        public let identity: Identity
    }

    private struct State {
        var entries: [SHA256Words: Entry] = [:]
        var order: [SHA256Words] = []
        var next = 0
    }

    public let capacity: Int
    public let ttlSeconds: Int64
    private let state: Mutex<State>

    public init(capacity: Int, ttlSeconds: Int64) {
        self.capacity = max(0, capacity)
        self.ttlSeconds = ttlSeconds
        self.state = Mutex(State())
    }

    /// The cached verification of `token`, if still valid at `now`.
    public func lookup(_ token: [UInt8], now: Int64) -> Entry? {
        token.withUnsafeBufferPointer { lookup($0, now: now) }
    }

    /// The cached verification of the token in `token`'s bytes, if still valid at `now`.
    public func lookup(_ token: UnsafeBufferPointer<UInt8>, now: Int64) -> Entry? {
        guard capacity > 0 else { return nil }
        let k = SHA256Words(hashing: UnsafeRawBufferPointer(token))
        return state.withLock { s in
            guard let e = s.entries[k] else { return nil }
            if now >= e.validUntil {
                s.entries[k] = nil
                return nil
            }
            return e
        }
    }

    /// Remembers a verified token. `expiry` is the token's `exp` (nil when it has none).
    public func store(_ token: [UInt8], expiry: Int64?, now: Int64, identity: Identity) {
        guard capacity > 0, ttlSeconds > 0 else { return }
        let until = min(expiry ?? .max, now &+ ttlSeconds)
        guard until > now else { return }
        let k = token.withUnsafeBytes { SHA256Words(hashing: $0) }
        let entry = Entry(validUntil: until, identity: identity)
        state.withLock { s in
            if s.entries.updateValue(entry, forKey: k) != nil { return }
            if s.order.count < capacity {
                s.order.append(k)
            } else {
                // Ring buffer: overwrite the oldest slot (it may already have expired away).
                s.entries[s.order[s.next]] = nil
                s.order[s.next] = k
                s.next = (s.next + 1) % capacity
            }
        }
    }

    public var count: Int { state.withLock { $0.entries.count } }
}
