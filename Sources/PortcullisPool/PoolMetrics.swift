import Foundation
import PortcullisCore
import PortcullisRuntime

/// The master's side of the metrics file: creates it at start, names the slots of each
/// configuration before the workers load it, clears a dead worker's gauges (a worker counts in
/// the block of its worker-table slot, which a replacement takes over, so sums carry on) and
/// keeps the instance figures in the header.
final class PoolMetrics {
    let segment: MetricsSegment

    init(runtimeDirectory: String) throws {
        let path = MetricsSegment.defaultPath(runtimeDirectory: runtimeDirectory)
        do {
            segment = try MetricsSegment.create(path: path)
        } catch {
            throw RuntimeError("cannot create the metrics file \(path): \(error)")
        }
    }

    /// Names the configuration's routes and limits (before any worker loads it).
    func load(_ config: GatewayConfig) {
        segment.assignNames(for: config)
        segment[.metricsEnabled] = config.metrics.enabled ? 1 : 0
    }

    /// The worker of worker-table `slot` is gone: its gauges are cleared, its counts stay (a
    /// worker counts in the block of its slot; slots beyond the file's blocks count nothing).
    func reaped(slot: Int) {
        guard slot < MetricsLayout.blockCount else { return }
        segment.releaseBlock(slot)
    }

    func reload(ok: Bool) {
        if ok { segment[.reloadsOK] += 1 } else { segment[.reloadsFailed] += 1 }
    }

    func publish(generation: Int, ready: Int, desired: Int, threads: Int) {
        segment[.generation] = UInt64(generation)
        segment[.workersReady] = UInt64(ready)
        segment[.workersDesired] = UInt64(desired)
        segment[.threads] = UInt64(threads)
    }

    func remove() { unlink(segment.path) }
}
