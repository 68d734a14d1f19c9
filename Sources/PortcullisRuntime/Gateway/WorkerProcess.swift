import CPortcullis
import Foundation
import PortcullisCore

/// A worker process: serves FastCGI requests on the listening socket inherited from the master
/// until SIGTERM, then finishes its in-flight requests and exits.
public enum WorkerProcess {
    /// Exit status when the configuration cannot be loaded (sysexits' EX_CONFIG).
    public static let configErrorStatus: Int32 = 78

    /// `snapshotPath` holds the config bytes the master validated for this generation; they are
    /// read as if they were `configPath` (relative paths, error messages).
    public static func run(configPath: String, snapshotPath: String?, listenFD: Int32, threads: Int?, generation: Int) -> Never {
        // If the master dies (even by SIGKILL), do not linger holding the socket.
        if pc_set_parent_death_signal(SIGTERM) != 0 { exit(0) }
        pc_ignore_signal(SIGPIPE)
        pc_ignore_signal(SIGINT)  // Ctrl-C reaches the whole group; the master coordinates.

        let loaded: LoadedGateway
        do {
            let bytes = try GatewayLoader.readConfig(snapshotPath ?? configPath)
            loaded = try GatewayLoader.load(configPath: configPath, bytes: bytes)
        } catch {
            EventLog.emit("worker_config_error", [("error", .string(error.description))])
            exit(configErrorStatus)
        }
        let config = loaded.config
        let accessLog: AccessLog
        do {
            accessLog = try AccessLog(path: config.log.accessLog, bufferBytes: config.log.bufferBytes)
        } catch {
            EventLog.emit("worker_start_failed", [("error", .string("\(error)"))])
            exit(1)
        }
        // JWKS URLs are fetched once before serving, then refreshed in the background.
        let (jwksSources, _) = JWKSFetcher.startAll(for: config.auth) { message in
            EventLog.emit("jwks", [("detail", .string(message))])
        }
        let rateTable: SharedMemoryRateTable?
        do {
            rateTable = try SharedMemoryRateTable.open(path: SharedMemoryRateTable.defaultPath(runtimeDirectory: config.server.runtimeDirectory))
        } catch {
            // Without the table, limited routes answer 500 rather than run unlimited.
            EventLog.emit("rate_table_unavailable", [("error", .string("\(error)"))])
            rateTable = nil
        }
        let gateway = Gateway(loaded: loaded, accessLog: accessLog, jwksSources: jwksSources, rateTable: rateTable)
        let threadCount = threads ?? config.server.threadsPerWorker
        let server = FastCGIServer(listenFD: listenFD, threads: threadCount) { GatewayHandler(gateway: gateway) }

        var pipeFDs: [Int32] = [0, 0]
        pipe(&pipeFDs)
        let signals: [Int32] = [SIGTERM, SIGQUIT]
        pc_install_signal_pipe(pipeFDs[1], signals, Int32(signals.count))

        server.start()
        EventLog.emit("worker_started", [("generation", .int(Int64(generation))), ("threads", .int(Int64(threadCount)))])

        var byte: UInt8 = 0
        while read(pipeFDs[0], &byte, 1) != 1 {}
        server.beginShutdown()
        let deadline = ContinuousClock.now + .seconds(config.server.shutdownGraceSeconds)
        // Every thread, not only those inside a request: one may have just accepted a connection.
        while server.runningThreads.load(ordering: .sequentiallyConsistent) > 0 && ContinuousClock.now < deadline {
            usleep(10_000)
        }
        accessLog.flush()
        EventLog.emit("worker_stopped", [("generation", .int(Int64(generation)))])
        exit(0)
    }
}
