/// The fixed shape of the instance's metrics file (`runtime_dir/metrics.shm`): where each
/// counter lives, as 64-bit word offsets. Pure arithmetic, shared by the writers (workers), the
/// master and the readers (`/_portcullis/metrics`, `portcullis metrics`).
///
/// ```
/// header            64 words   magic, version, shape, instance gauges (master)
/// route names       routeSlots × nameWords       (master assigns, never reassigns)
/// limit names       limitSlots × nameWords       ("route\tlimit")
/// target names      targetSlots × nameWords      ("upstream\ttarget")
/// blocks            blockCount × blockWords      one per live worker, summed when read
/// ```
/// A block: a 64-word head (pid, loops, gauges, a 16-loop scoreboard), then per route slot
/// `routeWords` words (per status class two histograms of non-cumulative bucket counts plus a
/// sum in µs; auth failures by reason; transform errors), then one word per limit slot, then
/// per upstream target slot `targetWords` counters (`TargetCounter`).
public enum MetricsLayout {
    public static let magic: UInt64 = 0x3153_4D54_4D43_5050  // "PPCMTMS1" little-endian
    public static let version: UInt64 = 2
    public static let headerWords = 64
    /// Route slots, the two reserved ones included; a configuration's routes beyond them share
    /// the `other` slot.
    public static let routeSlots = 64
    public static let limitSlots = 128
    /// Upstream target slots, the shared `other` one included (the header's bitmap of the
    /// targets being served has one bit per slot).
    public static let targetSlots = 128
    public static let blockCount = 256
    public static let nameWords = 16
    /// Route slot of requests no route matched (404, 405, bad requests).
    public static let unmatchedRoute = 0
    /// Route slot shared by routes beyond `routeSlots` (and by names assigned nowhere).
    public static let otherRoute = 1
    public static let unmatchedName = "_unmatched"
    public static let otherName = "_other"
    /// Limit slot shared by limits beyond `limitSlots`.
    public static let otherLimit = 0
    /// Target slot shared by targets beyond `targetSlots`.
    public static let otherTarget = 0

    /// Upper bounds of the latency buckets, in µs (100 µs … 30 s), then +Inf.
    public static let bucketBoundsMicros: [UInt64] = [
        100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
        1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
    ]
    public static let bucketCount = bucketBoundsMicros.count + 1
    /// Buckets then the sum in µs.
    public static let histogramWords = bucketCount + 1
    public static let statusClasses = ["1xx", "2xx", "3xx", "4xx", "5xx"]
    public static let classWords = 2 * histogramWords
    public static let authReasons = ["missing_credential", "invalid_credential", "insufficient_scope", "forbidden_group", "other"]
    public static let routeWords = statusClasses.count * classWords + authReasons.count + 1
    public static let blockHeadWords = 64
    /// Loops of a worker that have a scoreboard entry; further loops are counted in the
    /// worker's totals only.
    public static let scoreboardLoops = 16
    public static let scoreboardWords = 3
    /// Counters of an upstream target in a block, in this order.
    public enum TargetCounter: Int, CaseIterable {
        /// Tries sent to the target (a retry is one more try).
        case requests = 0
        /// Tries that failed: refused, reset, timed out, or a status the breaker counts as a failure.
        case failures
        /// Tries after which the request was tried again on another target.
        case retries
    }
    public static let targetWords = TargetCounter.allCases.count
    public static let blockWords = blockHeadWords + routeSlots * routeWords + limitSlots + targetSlots * targetWords

    // MARK: header words (written by the master)

    public enum Header: Int, CaseIterable {
        case magic = 0, version, routeSlots, limitSlots, blockCount, masterPid, startedUnix, generation,
             reloadsOK, reloadsFailed, workersReady, workersDesired, threads, metricsEnabled,
             /// Bitmap of the target slots the running configuration names (slots 0–63, then
             /// 64–127): their gauges are shown; a target a reload removed keeps only its counters.
             servedTargets, servedTargetsHigh,
             /// Redis degraded mode of the instance (`DegradedTime`): state, closed periods (ms),
             /// the highest total a reader reported (a period's close is two writes; a read
             /// between them would otherwise see the total drop).
             redisDegradedState, redisDegradedMs, redisDegradedReportedMs
    }

    // MARK: block head words

    public enum BlockHead: Int {
        /// The worker's pid while it lives (0: free or dead; its counters still count).
        case pid = 0
        /// Loops the worker runs (0: the block was never used).
        case loops
        /// Requests in flight on the worker (gauge).
        case inFlight
        /// FastCGI connections the worker keeps open (gauge).
        case keptConnections
        /// Access-log lines dropped because the log buffer was full (counter).
        case accessLogDropped
        /// When the worker started (Unix seconds).
        case startedUnix
        /// The worker's event loops in Redis degraded mode (the master takes them out of the
        /// instance's count when the worker dies).
        case redisDegradedLoops
        /// First scoreboard entry: per loop `inFlight`, `route slot + 1` of its oldest request
        /// (0: idle), `since` (CLOCK_MONOTONIC ns) of that request.
        case scoreboard = 8
    }

    public static var routeNamesOffset: Int { headerWords }
    public static var limitNamesOffset: Int { routeNamesOffset + routeSlots * nameWords }
    public static var targetNamesOffset: Int { limitNamesOffset + limitSlots * nameWords }
    public static var blocksOffset: Int { targetNamesOffset + targetSlots * nameWords }
    public static var fileWords: Int { blocksOffset + blockCount * blockWords }
    public static var fileBytes: Int { fileWords * 8 }

    public static func blockOffset(_ block: Int) -> Int { blocksOffset + block * blockWords }
    /// Offset inside a block of a route's class: `histogramWords` total words, then upstream ones.
    public static func classOffset(route: Int, statusClass: Int) -> Int {
        blockHeadWords + route * routeWords + statusClass * classWords
    }
    public static func authOffset(route: Int, reason: Int) -> Int {
        blockHeadWords + route * routeWords + statusClasses.count * classWords + reason
    }
    public static func transformErrorOffset(route: Int) -> Int {
        blockHeadWords + route * routeWords + statusClasses.count * classWords + authReasons.count
    }
    public static func limitOffset(_ limit: Int) -> Int { blockHeadWords + routeSlots * routeWords + limit }
    public static func targetOffset(_ target: Int, _ counter: TargetCounter) -> Int {
        blockHeadWords + routeSlots * routeWords + limitSlots + target * targetWords + counter.rawValue
    }

    /// Index 0…4 of a status's class; anything outside 100…599 (no answer was sent: the
    /// client went away) counts as 5xx.
    @inline(__always)
    public static func statusClass(_ status: Int) -> Int {
        let c = status / 100 - 1
        return c >= 0 && c < 5 ? c : 4
    }

    /// The bucket of a duration in µs (the first whose bound is ≥ it; the last is +Inf).
    @inline(__always)
    public static func bucket(micros: UInt64) -> Int {
        var lo = 0, hi = bucketBoundsMicros.count
        while lo < hi {
            let mid = (lo + hi) >> 1
            if bucketBoundsMicros[mid] < micros { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Index of an auth rejection's reason, from its problem type.
    public static func authReason(problemType: String) -> Int {
        if problemType.hasSuffix("/authentication-required") { return 0 }
        if problemType.hasSuffix("/invalid-credential") { return 1 }
        if problemType.hasSuffix("/insufficient-scope") { return 2 }
        if problemType.hasSuffix("/forbidden-group") { return 3 }
        return 4
    }

    /// Longest name a name slot holds, in bytes.
    public static var maxNameBytes: Int { (nameWords - 1) * 8 }
}
