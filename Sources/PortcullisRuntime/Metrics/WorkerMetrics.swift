import CPortcullis
import PortcullisCore

/// A worker's block of the metrics file, seen through one configuration: where each of its
/// routes and limits counts. Every write is a relaxed atomic add or store on the worker's own
/// block (loops of one worker share it), so recording a request allocates nothing, takes no
/// lock and makes no syscall.
public final class WorkerMetrics: @unchecked Sendable {
    public let segment: MetricsSegment
    public let blockIndex: Int
    let block: UnsafeMutablePointer<UInt64>
    /// Route slot per configuration route (`config.routes` order).
    let routeSlots: [Int]
    /// Limit slot per route and limit (`config.routes[i].limits` order).
    let limitSlots: [[Int]]
    /// Target slots of every upstream's targets, upstreams in name order (as
    /// `Gateway.upstreamTargets`); one flat array, so counting a try retains nothing.
    let targetSlots: [Int]
    /// Where each upstream's targets start in `targetSlots`.
    let targetStart: [Int]

    /// The worker's view of `segment` for `config`, counting in block `blockIndex`.
    public init(segment: MetricsSegment, blockIndex: Int, config: GatewayConfig) {
        self.segment = segment
        self.blockIndex = blockIndex
        block = segment.block(blockIndex)
        routeSlots = MetricsNames.lookup(config.routes.map(\.name), in: segment.routeNames, firstFree: 2, overflow: MetricsLayout.otherRoute)
        let limitNames = segment.limitNames
        limitSlots = config.routes.map { route in
            MetricsNames.lookup(route.limits.map { MetricsNames.limitKey(route: route.name, limit: $0.name) }, in: limitNames,
                                firstFree: 1, overflow: MetricsLayout.otherLimit)
        }
        let keys = MetricsNames.targetKeys(config)
        targetSlots = MetricsNames.lookup(keys.flatMap { $0 }, in: segment.targetNames, firstFree: 1, overflow: MetricsLayout.otherTarget)
        targetStart = keys.reduce(into: [0]) { $0.append($0.last! + $1.count) }
    }

    /// The route slot of configuration route `index` (nil: no route matched).
    @inline(__always)
    func routeSlot(_ index: Int?) -> Int { index.map { routeSlots[$0] } ?? MetricsLayout.unmatchedRoute }

    /// One answered request: its status class's duration histogram and, when it went
    /// upstream, the upstream histogram.
    @inline(__always)
    func recordRequest(routeSlot: Int, status: Int, totalMicros: UInt64, upstreamMicros: UInt64?) {
        let p = block + MetricsLayout.classOffset(route: routeSlot, statusClass: MetricsLayout.statusClass(status))
        pc_relaxed_add_u64(p + MetricsLayout.bucket(micros: totalMicros), 1)
        pc_relaxed_add_u64(p + MetricsLayout.bucketCount, totalMicros)
        if let upstreamMicros {
            let u = p + MetricsLayout.histogramWords
            pc_relaxed_add_u64(u + MetricsLayout.bucket(micros: upstreamMicros), 1)
            pc_relaxed_add_u64(u + MetricsLayout.bucketCount, upstreamMicros)
        }
    }

    func authFailure(routeIndex: Int, problemType: String) {
        pc_relaxed_add_u64(block + MetricsLayout.authOffset(route: routeSlots[routeIndex], reason: MetricsLayout.authReason(problemType: problemType)), 1)
    }

    func rateLimited(routeIndex: Int, limitIndex: Int) {
        let slots = limitSlots[routeIndex]
        pc_relaxed_add_u64(block + MetricsLayout.limitOffset(limitIndex < slots.count ? slots[limitIndex] : MetricsLayout.otherLimit), 1)
    }

    func transformError(routeIndex: Int) {
        pc_relaxed_add_u64(block + MetricsLayout.transformErrorOffset(route: routeSlots[routeIndex]), 1)
    }

    /// Counts one try, failure or retry of target `target` of upstream `upstream` (indexes as in
    /// `Gateway.upstreamTargets`).
    @inline(__always)
    func countTarget(_ counter: MetricsLayout.TargetCounter, upstream: Int, target: Int) {
        pc_relaxed_add_u64(block + MetricsLayout.targetOffset(targetSlots[targetStart[upstream] + target], counter), 1)
    }

    /// Counts access-log lines the log's writer thread dropped (any thread).
    static func accessLogDropped(_ segment: MetricsSegment, block: Int, lines: Int) {
        pc_relaxed_add_u64(segment.block(block) + MetricsLayout.BlockHead.accessLogDropped.rawValue, UInt64(lines))
    }

    // MARK: gauges and scoreboard (the loop's thread)

    func connectionOpened() { pc_relaxed_add_u64(block + MetricsLayout.BlockHead.keptConnections.rawValue, 1) }
    func connectionClosed() { pc_relaxed_sub_u64(block + MetricsLayout.BlockHead.keptConnections.rawValue, 1) }

    /// The scoreboard entry of loop `loop` (nil beyond the first `scoreboardLoops`).
    func scoreboard(loop: Int) -> UnsafeMutablePointer<UInt64>? {
        loop < MetricsLayout.scoreboardLoops ? block + MetricsLayout.BlockHead.scoreboard.rawValue + loop * MetricsLayout.scoreboardWords : nil
    }

    var inFlight: UnsafeMutablePointer<UInt64> { block + MetricsLayout.BlockHead.inFlight.rawValue }
}
