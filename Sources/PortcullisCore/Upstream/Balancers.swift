/// Smooth weighted round-robin (nginx's): each pick adds every eligible target's weight to its
/// running score, takes the highest score and subtracts the eligible total from it. Over any
/// `sum(weights)` picks each target gets exactly its weight's share, interleaved rather than in
/// bursts. One per event loop; no allocation per pick.
public struct SmoothWeightedRoundRobin: Sendable {
    public let weights: [Int]
    private var scores: [Int]

    public init(weights: [Int]) {
        self.weights = weights
        scores = Array(repeating: 0, count: weights.count)
    }

    /// The next target among those `eligible` accepts; nil when none is.
    @inline(__always)
    public mutating func next(eligible: (Int) -> Bool) -> Int? {
        var best = -1
        var total = 0
        for i in 0..<weights.count where eligible(i) {
            scores[i] &+= weights[i]
            total &+= weights[i]
            if best < 0 || scores[i] > scores[best] { best = i }
        }
        guard best >= 0 else { return nil }
        scores[best] &-= total
        return best
    }
}

/// Least outstanding requests: the eligible target with the fewest requests in flight per
/// unit of weight (`load(i) / weight(i)`, compared by cross-multiplication); ties go to the
/// first after `start`, which the caller rotates so equal targets share the traffic.
public enum LeastRequests {
    @inline(__always)
    public static func pick(count: Int, start: Int, weights: [Int], load: (Int) -> UInt64, eligible: (Int) -> Bool) -> Int? {
        var best = -1
        var bestLoad: UInt64 = 0
        var bestWeight: UInt64 = 1
        for step in 0..<count {
            var i = start &+ step
            if i >= count { i %= count }
            guard eligible(i) else { continue }
            let l = load(i), w = UInt64(weights[i])
            if best < 0 || l * bestWeight < bestLoad * w {
                best = i
                bestLoad = l
                bestWeight = w
            }
        }
        return best < 0 ? nil : best
    }
}

/// A consistent-hash ring: `virtualNodes × weight` points per target, placed by hashing the
/// target's URL with the point's number. A key goes to the first point clockwise from its hash
/// whose target is eligible, so adding or removing one target of N moves about 1/N of the keys
/// and an ineligible target's keys spread over the others. Built once per configuration and
/// shared read-only by every loop.
public struct ConsistentHashRing: Sendable {
    public static let virtualNodes = 160
    private let points: [UInt64]
    private let owners: [Int32]
    private let targetCount: Int

    public init(targets: [String], weights: [Int], virtualNodes: Int = ConsistentHashRing.virtualNodes) {
        var pairs: [(UInt64, Int32)] = []
        pairs.reserveCapacity(targets.count * virtualNodes)
        for (t, url) in targets.enumerated() {
            let base = StableHash.hash(url)
            for v in 0..<(virtualNodes * max(weights[t], 1)) {
                pairs.append((StableHash.mix(base ^ UInt64(v) &* 0x9E37_79B9_7F4A_7C15), Int32(t)))
            }
        }
        pairs.sort { $0.0 < $1.0 }
        targetCount = targets.count
        points = pairs.map(\.0)
        owners = pairs.map(\.1)
    }

    /// The target of `keyHash` among the eligible ones; nil when none is.
    public func lookup(_ keyHash: UInt64, eligible: (Int) -> Bool) -> Int? {
        guard !points.isEmpty else { return nil }
        var lo = 0, hi = points.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if points[mid] < keyHash { lo = mid + 1 } else { hi = mid }
        }
        var rejected: UInt64 = 0
        for step in 0..<points.count {
            let owner = Int(owners[(lo + step) % points.count])
            if eligible(owner) { return owner }
            // Walking a whole ring of rejected targets is bounded: stop once every target said no.
            if owner < 64 {
                rejected |= 1 << UInt64(owner)
                if rejected.nonzeroBitCount >= min(64, targetCount) { return nil }
            }
        }
        return nil
    }
}
