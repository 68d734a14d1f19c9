/// One 64-bit word that several threads or processes update: a slot of the shared-memory
/// upstream state in production, a Swift atomic in tests. The pure state machines of this
/// folder (breaker, health, retry budget) are written against it, so their CAS loops are
/// unit-tested with threads and a fake clock.
public protocol AtomicWord {
    func load() -> UInt64
    /// Replaces the word with `desired` if it still holds `expected`.
    func compareExchange(expected: UInt64, desired: UInt64) -> Bool
    /// Adds `delta` (wrapping; `UInt64.max` subtracts one) and returns the new value.
    @discardableResult func add(_ delta: UInt64) -> UInt64
}

extension AtomicWord {
    /// Applies `transform` until its CAS wins; nil from `transform` leaves the word as it is.
    /// Returns the word that was stored (or the one left in place).
    @discardableResult @inline(__always)
    public func update(_ transform: (UInt64) -> UInt64?) -> UInt64 {
        while true {
            let old = load()
            guard let new = transform(old) else { return old }
            if new == old || compareExchange(expected: old, desired: new) { return new }
        }
    }
}
