#if canImport(Glibc)
import Glibc
#endif
import CPortcullis
import PortcullisCore

/// Why the metrics file could not be created or opened.
public struct MetricsSegmentError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// The instance's metrics: one file (`runtime_dir/metrics.shm`, shape in `MetricsLayout`)
/// created by the master at start and mapped `MAP_SHARED` by the master, every worker and
/// `portcullis metrics`. The master writes the header and the name tables; each worker counts
/// in its own block with relaxed atomic adds (no lock, no fence, no syscall). Blocks of
/// workers that died stay in the sums, and a replacement reuses a free block, so counters never
/// go backwards while the master lives. The file is sparse: a block costs memory only once a
/// worker used it.
public final class MetricsSegment: @unchecked Sendable {
    public let path: String
    let base: UnsafeMutablePointer<UInt64>

    /// The metrics file in the gateway's runtime directory.
    public static func defaultPath(runtimeDirectory: String) -> String { runtimeDirectory + "/metrics.shm" }

    /// Creates a fresh, zeroed file (master, at start), built under a temporary name and
    /// renamed into place.
    public static func create(path: String) throws(MetricsSegmentError) -> MetricsSegment {
        do {
            let base = try MappedWords.create(path: path, bytes: MetricsLayout.fileBytes) { words in
                typealias H = MetricsLayout.Header
                words[H.version.rawValue] = MetricsLayout.version
                words[H.routeSlots.rawValue] = UInt64(MetricsLayout.routeSlots)
                words[H.limitSlots.rawValue] = UInt64(MetricsLayout.limitSlots)
                words[H.blockCount.rawValue] = UInt64(MetricsLayout.blockCount)
                words[H.masterPid.rawValue] = UInt64(getpid())
                words[H.startedUnix.rawValue] = UInt64(time(nil))
                pc_atomic_store_u64(words, MetricsLayout.magic)  // last: whoever sees the magic sees the rest
            }
            return MetricsSegment(path: path, base: base)
        } catch {
            throw MetricsSegmentError(error.description)
        }
    }

    /// Maps the file the master created (workers, the CLI).
    public static func open(path: String) throws(MetricsSegmentError) -> MetricsSegment {
        let mapped: (base: UnsafeMutablePointer<UInt64>, bytes: Int)?
        do {
            mapped = try MappedWords.open(path: path, minimumBytes: MetricsLayout.fileBytes)
        } catch {
            throw MetricsSegmentError(error.description)
        }
        guard let mapped else { throw MetricsSegmentError("\(path) is not a version \(MetricsLayout.version) metrics file (too small)") }
        guard mapped.bytes == MetricsLayout.fileBytes else {
            munmap(mapped.base, mapped.bytes)
            throw MetricsSegmentError("\(path) is not a version \(MetricsLayout.version) metrics file (size)")
        }
        let segment = MetricsSegment(path: path, base: mapped.base)
        guard pc_atomic_load_u64(segment.base) == MetricsLayout.magic,
              segment.base[MetricsLayout.Header.version.rawValue] == MetricsLayout.version else {
            throw MetricsSegmentError("\(path) is not a version \(MetricsLayout.version) metrics file")
        }
        return segment
    }

    private init(path: String, base: UnsafeMutablePointer<UInt64>) {
        self.path = path
        self.base = base
    }

    deinit { munmap(base, MetricsLayout.fileBytes) }

    // MARK: header (master)

    public subscript(_ h: MetricsLayout.Header) -> UInt64 {
        get { pc_atomic_load_u64(base + h.rawValue) }
        set { pc_atomic_store_u64(base + h.rawValue, newValue) }
    }

    // MARK: names

    private func nameEntry(_ table: Int, _ slot: Int) -> UnsafeMutablePointer<UInt64> {
        base + table + slot * MetricsLayout.nameWords
    }

    /// The names of a table (`MetricsLayout.routeNamesOffset` or `limitNamesOffset`).
    func names(_ table: Int, count: Int) -> [String?] {
        (0..<count).map { slot in
            let entry = nameEntry(table, slot)
            let length = Int(pc_atomic_load_u64(entry))
            guard length > 0, length <= MetricsLayout.maxNameBytes else { return nil }
            return String(decoding: UnsafeRawBufferPointer(start: entry + 1, count: length), as: UTF8.self)
        }
    }

    private func writeName(_ table: Int, _ slot: Int, _ name: String) {
        let entry = nameEntry(table, slot)
        let bytes = Array(name.utf8)
        UnsafeMutableRawPointer(entry + 1).copyMemory(from: bytes, byteCount: bytes.count)
        pc_atomic_store_u64(entry, UInt64(bytes.count))  // last: a reader sees the whole name or none
    }

    public var routeNames: [String?] { names(MetricsLayout.routeNamesOffset, count: MetricsLayout.routeSlots) }
    public var limitNames: [String?] { names(MetricsLayout.limitNamesOffset, count: MetricsLayout.limitSlots) }
    public var targetNames: [String?] { names(MetricsLayout.targetNamesOffset, count: MetricsLayout.targetSlots) }

    /// Gives the configuration's routes, limits and upstream targets slots, and marks its
    /// targets as the ones served (master, before any worker loads it).
    public func assignNames(for config: GatewayConfig) {
        let routes = MetricsNames.assign(config.routes.map(\.name), existing: routeNames, firstFree: 2, overflow: MetricsLayout.otherRoute)
        for (slot, name) in routes.added { writeName(MetricsLayout.routeNamesOffset, slot, name) }
        let limits = MetricsNames.assign(Self.limitKeys(config), existing: limitNames, firstFree: 1, overflow: MetricsLayout.otherLimit)
        for (slot, name) in limits.added { writeName(MetricsLayout.limitNamesOffset, slot, name) }
        let targets = MetricsNames.assign(MetricsNames.targetKeys(config).flatMap { $0 }, existing: targetNames, firstFree: 1,
                                          overflow: MetricsLayout.otherTarget)
        for (slot, name) in targets.added { writeName(MetricsLayout.targetNamesOffset, slot, name) }
        var served: (UInt64, UInt64) = (0, 0)
        for slot in targets.slots where slot != MetricsLayout.otherTarget {
            if slot < 64 { served.0 |= 1 << UInt64(slot) } else { served.1 |= 1 << UInt64(slot - 64) }
        }
        self[.servedTargets] = served.0
        self[.servedTargetsHigh] = served.1
    }

    static func limitKeys(_ config: GatewayConfig) -> [String] {
        config.routes.flatMap { route in route.limits.map { MetricsNames.limitKey(route: route.name, limit: $0.name) } }
    }

    // MARK: blocks

    func block(_ index: Int) -> UnsafeMutablePointer<UInt64> { base + MetricsLayout.blockOffset(index) }

    /// Claims block `index` for this process (worker, at start).
    public func claimBlock(_ index: Int, loops: Int) {
        let b = block(index)
        typealias B = MetricsLayout.BlockHead
        pc_atomic_store_u64(b + B.startedUnix.rawValue, UInt64(time(nil)))
        pc_atomic_store_u64(b + B.loops.rawValue, UInt64(max(1, loops)))
        pc_atomic_store_u64(b + B.pid.rawValue, UInt64(getpid()))
    }

    /// The worker of `index` is gone: its gauges and scoreboard are cleared, its counters stay
    /// in the sums (master, when it reaps the worker).
    public func releaseBlock(_ index: Int) {
        let b = block(index)
        typealias B = MetricsLayout.BlockHead
        let degraded = pc_atomic_load_u64(b + B.redisDegradedLoops.rawValue)
        if degraded != 0 {
            pc_atomic_store_u64(b + B.redisDegradedLoops.rawValue, 0)
            if degraded <= DegradedTime.countMask { applyDegraded(-Int64(degraded), nowMs: EventLoop.monotonicNanos() / 1_000_000) }
        }
        for word in [B.pid, B.inFlight, B.keptConnections] { pc_atomic_store_u64(b + word.rawValue, 0) }
        for word in 0..<(MetricsLayout.scoreboardLoops * MetricsLayout.scoreboardWords) {
            pc_atomic_store_u64(b + B.scoreboard.rawValue + word, 0)
        }
    }

    // MARK: Redis degraded mode

    /// `delta` event loops of the worker of block `index` entered (+1) or left (-1) Redis
    /// degraded mode (any thread of that worker).
    public func redisDegraded(_ delta: Int64, block index: Int) {
        _ = pc_atomic_add_u64(block(index) + MetricsLayout.BlockHead.redisDegradedLoops.rawValue, UInt64(bitPattern: delta))
        applyDegraded(delta, nowMs: EventLoop.monotonicNanos() / 1_000_000)
    }

    private func applyDegraded(_ delta: Int64, nowMs: UInt64) {
        let state = base + MetricsLayout.Header.redisDegradedState.rawValue
        while true {
            let old = pc_atomic_load_u64(state)
            let (new, closedMs) = DegradedTime.apply(old, delta: delta, nowMs: nowMs)
            if pc_atomic_cas_u64(state, old, new) != 0 {
                if closedMs > 0 { _ = pc_atomic_add_u64(base + MetricsLayout.Header.redisDegradedMs.rawValue, closedMs) }
                return
            }
        }
    }

    /// The degraded total to report: never below what any reader reported before.
    private func reportDegraded(_ total: UInt64) -> UInt64 {
        let reported = base + MetricsLayout.Header.redisDegradedReportedMs.rawValue
        while true {
            let before = pc_atomic_load_u64(reported)
            if total <= before { return before }
            if pc_atomic_cas_u64(reported, before, total) != 0 { return total }
        }
    }

    // MARK: reading

    /// Every block summed, with the name tables, the live workers' scoreboards and (from
    /// `upstreams`) the live state of the served upstream targets.
    public func snapshot(rateTable: SharedMemoryRateTable?, upstreams: UpstreamStateTable?) -> MetricsSnapshot {
        typealias L = MetricsLayout
        typealias B = L.BlockHead
        var routes = [[UInt64]](repeating: [UInt64](repeating: 0, count: L.routeWords), count: L.routeSlots)
        var limits = [UInt64](repeating: 0, count: L.limitSlots)
        var targets = [[UInt64]](repeating: [UInt64](repeating: 0, count: L.targetWords), count: L.targetSlots)
        var workers: [MetricsSnapshot.Worker] = []
        var dropped: UInt64 = 0
        for index in 0..<L.blockCount {
            let b = block(index)
            let loops = Int(pc_relaxed_load_u64(b + B.loops.rawValue))
            guard loops > 0 else { continue }  // never used: its pages were never touched
            dropped &+= pc_relaxed_load_u64(b + B.accessLogDropped.rawValue)
            for r in 0..<L.routeSlots {
                let from = b + L.blockHeadWords + r * L.routeWords
                routes[r].withUnsafeMutableBufferPointer { sums in
                    for w in 0..<L.routeWords { sums[w] &+= pc_relaxed_load_u64(from + w) }
                }
            }
            for l in 0..<L.limitSlots { limits[l] &+= pc_relaxed_load_u64(b + L.limitOffset(l)) }
            for t in 0..<L.targetSlots {
                for c in L.TargetCounter.allCases { targets[t][c.rawValue] &+= pc_relaxed_load_u64(b + L.targetOffset(t, c)) }
            }
            let pid = pc_relaxed_load_u64(b + B.pid.rawValue)
            guard pid != 0 else { continue }
            let board = (0..<min(loops, L.scoreboardLoops)).map { loop -> MetricsSnapshot.Loop in
                let entry = b + B.scoreboard.rawValue + loop * L.scoreboardWords
                let route = pc_relaxed_load_u64(entry + 1)
                return MetricsSnapshot.Loop(inFlight: pc_relaxed_load_u64(entry), route: route == 0 ? nil : Int(route - 1),
                                            sinceNanos: pc_relaxed_load_u64(entry + 2))
            }
            workers.append(MetricsSnapshot.Worker(
                block: index, pid: pid, loops: loops, inFlight: pc_relaxed_load_u64(b + B.inFlight.rawValue),
                keptConnections: pc_relaxed_load_u64(b + B.keptConnections.rawValue),
                startedUnix: pc_relaxed_load_u64(b + B.startedUnix.rawValue), scoreboard: board))
        }
        let header = (0..<L.Header.allCases.count).map { pc_atomic_load_u64(base + $0) }
        let table = rateTable.map { t -> MetricsSnapshot.RateTable in
            let s = t.stats
            return MetricsSnapshot.RateTable(slots: UInt64(t.slots), used: s.used, insertions: s.insertions, evictions: s.evictions,
                                             storeFailures: s.storeFailures, degradedDecisions: s.degradedDecisions)
        }
        let now = EventLoop.monotonicNanos()
        var snapshot = MetricsSnapshot(header: header, routeNames: routeNames, limitNames: limitNames, routes: routes, limits: limits,
                                       workers: workers, accessLogDropped: dropped, rateTable: table, nowNanos: now)
        snapshot.redisDegradedMs = reportDegraded(DegradedTime.total(state: header[L.Header.redisDegradedState.rawValue],
                                                                     closedMs: header[L.Header.redisDegradedMs.rawValue], nowMs: now / 1_000_000))
        let targetNames = self.targetNames
        snapshot.targetNames = targetNames
        snapshot.targets = targets
        if let upstreams {
            let served = (header[L.Header.servedTargets.rawValue], header[L.Header.servedTargetsHigh.rawValue])
            for (slot, name) in targetNames.enumerated() {
                guard let name, slot < 64 ? served.0 & (1 << UInt64(slot)) != 0 : served.1 & (1 << UInt64(slot - 64)) != 0 else { continue }
                let (upstream, target) = MetricsNames.labels(name)
                snapshot.targetStates[slot] = upstreams.state(upstream: upstream, target: target)
            }
        }
        return snapshot
    }
}
