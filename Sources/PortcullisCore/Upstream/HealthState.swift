/// A target's health packed into one word: unhealthy flag (bit 0), consecutive successes
/// (1–16), consecutive failures (17–32). Zero is "healthy, nothing known", so a new target
/// serves until its checks say otherwise.
public struct HealthWord: Equatable, Sendable {
    public static let maxCount = 0xFFFF
    public var raw: UInt64
    public init(raw: UInt64) { self.raw = raw }
    public init(unhealthy: Bool, successes: UInt64, failures: UInt64) {
        raw = (unhealthy ? 1 : 0) | min(successes, 0xFFFF) << 1 | min(failures, 0xFFFF) << 17
    }
    public var healthy: Bool { raw & 1 == 0 }
    public var successes: UInt64 { (raw >> 1) & 0xFFFF }
    public var failures: UInt64 { (raw >> 17) & 0xFFFF }

    /// The word after one result: `unhealthyThreshold` failures in a row take the target out,
    /// `healthyThreshold` successes in a row bring it back.
    public func recording(success: Bool, policy: HealthCheckPolicy) -> HealthWord {
        if success {
            // A healthy target only needs its failure run cleared: the word usually stays 0, so
            // passive successes write nothing.
            if healthy { return HealthWord(raw: 0) }
            let s = successes + 1
            let back = !healthy && s >= UInt64(policy.healthyThreshold)
            return HealthWord(unhealthy: !healthy && !back, successes: s, failures: 0)
        }
        let f = failures + 1
        return HealthWord(unhealthy: !healthy || f >= UInt64(policy.unhealthyThreshold), successes: 0, failures: f)
    }

    /// Records one result in `word`; returns the word before and after.
    @discardableResult
    public static func record<W: AtomicWord>(_ word: W, success: Bool, policy: HealthCheckPolicy) -> (before: HealthWord, after: HealthWord) {
        var before = HealthWord(raw: 0)
        let after = word.update { raw in
            before = HealthWord(raw: raw)
            return before.recording(success: success, policy: policy).raw
        }
        return (before, HealthWord(raw: after))
    }
}
