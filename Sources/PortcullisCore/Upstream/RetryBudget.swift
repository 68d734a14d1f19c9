/// An upstream's retry budget over fixed windows, in one word: window index (bits 48–63),
/// retries (24–47), first tries (0–23). A retry is allowed while the window's retries stay
/// below `max(budgetMinimum, budgetPercent % of first tries)`, so retries add at most that
/// much load when a whole upstream degrades.
public enum RetryBudget {
    @inline(__always)
    static func window(_ nowSeconds: UInt64, _ policy: RetryPolicy) -> UInt64 { (nowSeconds / UInt64(policy.budgetWindowSeconds)) & 0xFFFF }

    /// Counts a first try.
    @inline(__always)
    public static func noteRequest<W: AtomicWord>(_ word: W, nowSeconds: UInt64, policy: RetryPolicy) {
        let index = window(nowSeconds, policy)
        let raw = word.load()
        if raw >> 48 == index && raw & 0xFF_FFFF < 0xFF_FFFF {
            word.add(1)
        } else {
            word.update { old in old >> 48 == index ? nil : index << 48 | 1 }
        }
    }

    /// Takes one retry from the budget; false when it is spent.
    public static func acquire<W: AtomicWord>(_ word: W, nowSeconds: UInt64, policy: RetryPolicy) -> Bool {
        let index = window(nowSeconds, policy)
        var allowed = false
        word.update { raw in
            var requests = raw & 0xFF_FFFF
            var retries = (raw >> 24) & 0xFF_FFFF
            if raw >> 48 != index {
                requests = 0
                retries = 0
            }
            let cap = max(UInt64(policy.budgetMinimum), requests * UInt64(policy.budgetPercent) / 100)
            allowed = retries < cap
            guard allowed else { return nil }
            return index << 48 | (retries + 1) << 24 | requests
        }
        return allowed
    }
}
