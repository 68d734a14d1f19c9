import Foundation
import PortcullisCore
import PortcullisRuntime

/// The master's side of the metrics file: creates it at start, names the slots of each
/// configuration before the workers load it, gives each worker a block (a replacement takes a
/// dead worker's, so sums carry on) and keeps the instance figures in the header.
final class PoolMetrics {
    let segment: MetricsSegment
    private var blocks: [pid_t: Int] = [:]

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

    /// Arguments giving a worker about to be spawned its block (none when every block is held).
    func reserveBlock() -> (block: Int, arguments: [String])? {
        guard let block = MetricsSegment.freeBlock(holding: Set(blocks.values)) else { return nil }
        return (block, ["--metrics-block", String(block)])
    }

    func spawned(_ pid: pid_t, block: Int) { blocks[pid] = block }

    /// The worker is gone: its gauges are cleared, its counts stay.
    func reaped(_ pid: pid_t) {
        guard let block = blocks.removeValue(forKey: pid) else { return }
        segment.releaseBlock(block)
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
