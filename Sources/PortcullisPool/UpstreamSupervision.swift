import Foundation
import PortcullisCore
import PortcullisRuntime

/// The master's share of upstream resilience: it creates the shared upstream state (breakers,
/// health, in-flight counts) that every worker maps, runs the one health prober of the
/// instance, and clears a dead worker's in-flight counts.
final class UpstreamSupervision {
    let path: String
    private let table: UpstreamStateTable
    private let prober: HealthProber

    init(runtimeDirectory: String, config: GatewayConfig) throws {
        path = UpstreamStateTable.defaultPath(runtimeDirectory: runtimeDirectory)
        do {
            table = try UpstreamStateTable.create(path: path)
        } catch {
            throw RuntimeError("cannot create the upstream state \(path): \(error)")
        }
        prober = HealthProber(table: table)
        prober.configure(config)
        prober.start()
    }

    /// A reload was committed: checks follow the new configuration (unchanged targets keep
    /// their state).
    func configure(_ config: GatewayConfig) { prober.configure(config) }

    /// A worker was reaped: requests it had in flight are over.
    func workerExited(_ pid: pid_t) { table.release(pid: pid) }

    func stop() {
        prober.stop()
        unlink(path)
    }

    /// The upstreams and their targets, for `status` (which reads their live state from the file).
    static func stateEntry(_ config: GatewayConfig) -> JSONValue {
        .object(JSONObject(config.upstreams.keys.sorted().map { name in
            (name, .array(config.upstreams[name]!.targets.map { .string($0) }))
        }))
    }
}
