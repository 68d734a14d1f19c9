import ArgumentParser
import PortcullisCore
import PortcullisPool
import PortcullisRuntime

/// `portcullis metrics`: the running instance's metrics in Prometheus text format, read from
/// the metrics file in the runtime directory (no request through nginx).
struct MetricsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metrics", abstract: "Print the running instance's metrics (Prometheus text format 0.0.4).")

    @OptionGroup var options: ConfigOption

    func run() throws {
        let paths = RuntimePaths.locate(configPath: options.config)
        guard paths.runningMasterPid() != nil else {
            printError("not running (no master for runtime directory \(paths.directory))")
            throw ExitCode(3)
        }
        let segment: MetricsSegment
        do {
            segment = try MetricsSegment.open(path: MetricsSegment.defaultPath(runtimeDirectory: paths.directory))
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        let table = try? SharedMemoryRateTable.open(path: SharedMemoryRateTable.defaultPath(runtimeDirectory: paths.directory))
        let upstreams = try? UpstreamStateTable.open(path: UpstreamStateTable.defaultPath(runtimeDirectory: paths.directory))
        print(PrometheusText.render(segment.snapshot(rateTable: table, upstreams: upstreams), version: PortcullisVersion.current), terminator: "")
    }
}
