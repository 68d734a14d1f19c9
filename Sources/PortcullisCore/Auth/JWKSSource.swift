import Synchronization

/// Keys of a remote JWK Set that change while the gateway runs. The pure side only holds the
/// current set and records that a token named a `kid` it does not know; fetching is done by
/// the runtime (`JWKSFetcher`), which calls `replace(keys:)`.
public protocol JWKSSource: Sendable {
    /// The current keys (a snapshot; cheap to take per request).
    func currentKeys() -> [VerificationKey]
    /// A token named a `kid` that is not in the set: the set may have rotated.
    func noteUnknownKid(now: Int64)
}

/// The in-memory JWKS holder shared by request threads and the fetcher thread.
public final class JWKSKeyStore: JWKSSource {
    private struct State {
        var keys: [VerificationKey] = []
        var refetchWanted = false
        var lastRefetchRequest: Int64 = .min
        var loaded = false
    }

    /// Minimum seconds between two unknown-`kid` refetches, so a client sending random kids
    /// cannot make the gateway hammer the identity provider.
    public let refetchCooldownSeconds: Int64
    private let state = Mutex(State())

    public init(keys: [VerificationKey] = [], refetchCooldownSeconds: Int64 = 10) {
        self.refetchCooldownSeconds = refetchCooldownSeconds
        state.withLock { $0.keys = keys; $0.loaded = !keys.isEmpty }
    }

    public func currentKeys() -> [VerificationKey] { state.withLock { $0.keys } }

    public func noteUnknownKid(now: Int64) {
        state.withLock { s in
            if now >= s.lastRefetchRequest &+ refetchCooldownSeconds || s.lastRefetchRequest == .min {
                s.lastRefetchRequest = now
                s.refetchWanted = true
            }
        }
    }

    /// Swaps in a freshly fetched set atomically (requests see the old or the new set, whole).
    public func replace(keys: [VerificationKey]) {
        state.withLock { $0.keys = keys; $0.loaded = true }
    }

    /// True once a set has been installed.
    public var isLoaded: Bool { state.withLock { $0.loaded } }

    /// Returns true (once) when an unknown `kid` asked for a refetch since the last call.
    public func takeRefetchRequest() -> Bool {
        state.withLock { s in
            defer { s.refetchWanted = false }
            return s.refetchWanted
        }
    }
}
