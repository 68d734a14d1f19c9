import Glibc
import PortcullisCore

/// One upstream of a gateway generation bound to its shared state: each target's slot
/// (breaker, health, in flight), the upstream's own slot (retry budget, bulkhead), the hash
/// ring when it balances by hash. Built once per configuration, read-only afterwards, shared
/// by every loop of the worker.
final class UpstreamTargets: @unchecked Sendable {
    let config: UpstreamConfig
    let breaker: CircuitBreaker
    let slots: [UpstreamStateTable.Slot]
    let own: UpstreamStateTable.Slot
    let ring: ConsistentHashRing?
    let table: UpstreamStateTable
    /// This worker's in-flight column.
    let column: Int
    /// More than one target and retries configured.
    let retries: Bool
    /// Health is kept (a health check is configured), so passive results feed it too.
    let tracksHealth: Bool

    init(config: UpstreamConfig, table: UpstreamStateTable, column: Int) {
        self.config = config
        self.table = table
        self.column = column
        breaker = CircuitBreaker(policy: config.breaker, probeTimeoutMs: config.connectTimeoutMs + config.timeoutMs)
        slots = config.targets.map { Self.slot(table, config.name, $0) }
        own = Self.slot(table, config.name, nil)
        if case .hash = config.balancer {
            ring = ConsistentHashRing(targets: config.targets, weights: config.weights)
        } else {
            ring = nil
        }
        retries = config.targets.count > 1 && config.retry.attempts > 0
        tracksHealth = config.healthCheck != nil
    }

    /// A full table (hundreds of targets) leaves a target with per-process state only.
    private static let overflow = UpstreamStateTable.local()
    private static func slot(_ table: UpstreamStateTable, _ upstream: String, _ target: String?) -> UpstreamStateTable.Slot {
        if let slot = table.slot(upstream: upstream, target: target) { return slot }
        EventLog.emit("upstream_state_full", [("upstream", .string(upstream)), ("target", target.map { .string($0) } ?? .null)])
        return overflow.slot(upstream: upstream, target: target)!
    }

    /// Whether target `i` may take a request now: not tried yet by this request, its breaker
    /// lets requests through and (unless `ignoringHealth`) its health checks pass.
    @inline(__always)
    func eligible(_ i: Int, tried: UInt64, nowMs: UInt64, ignoringHealth: Bool) -> Bool {
        if i < 64 && tried & (1 << UInt64(i)) != 0 { return false }
        if !ignoringHealth && !HealthWord(raw: slots[i].health.load()).healthy { return false }
        return breaker.isAvailable(slots[i].breaker.load(), nowMs: nowMs)
    }

    /// Seconds until the first target lets requests through again (Retry-After).
    func secondsUntilAvailable(nowMs: UInt64) -> Int {
        var earliest = UInt64.max
        for slot in slots {
            let w = BreakerWord(raw: slot.breaker.load())
            if w.state != .closed { earliest = min(earliest, w.until) }
        }
        guard earliest != .max, earliest > nowMs else { return 1 }
        return Int((earliest - nowMs + 999) / 1000)
    }

    // MARK: bulkhead

    /// Enters the upstream's bulkhead; false (and nothing held) when `maxInFlight` requests are
    /// already in flight across the instance.
    func enterBulkhead(limit: Int) -> Bool {
        let cell = own.inFlightCell(column: column)
        cell.add(1)
        if own.inFlightTotal > UInt64(limit) {
            cell.add(UInt64.max)
            return false
        }
        return true
    }

    func leaveBulkhead() { own.inFlightCell(column: column).add(UInt64.max) }
}
