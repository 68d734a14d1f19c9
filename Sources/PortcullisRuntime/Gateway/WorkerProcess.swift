import CPortcullis
import Foundation
import PortcullisCore

/// A worker process: serves FastCGI requests on the listening socket inherited from the master
/// with `loops` event-loop threads, swaps configurations inside the running loops when the
/// master reloads, and on SIGTERM finishes its requests and hands its idle kept connections
/// back to the master before it exits.
public enum WorkerProcess {
    /// Exit status when the configuration cannot be loaded (sysexits' EX_CONFIG).
    public static let configErrorStatus: Int32 = 78

    /// `bundlePath` holds everything the master validated for this generation (without it, as
    /// when run by hand, `configPath` and its files are read from disk). `controlFD` is the
    /// worker's end of the master's control channel (none when run by hand).
    /// `slot` is the worker's slot in the master's `WorkerTable`, where it beats.
    public static func run(configPath: String, bundlePath: String?, listenFD: Int32, controlFD: Int32?,
                           loops: Int?, generation: Int, slot: Int?) -> Never {
        // If the master dies (even by SIGKILL), do not linger holding the socket.
        if pc_set_parent_death_signal(SIGTERM) != 0 { exit(0) }
        pc_ignore_signal(SIGPIPE)
        pc_ignore_signal(SIGINT)  // Ctrl-C reaches the whole group; the master coordinates.
        // Installed first: a signal that arrives while the worker starts (the master forwarding
        // SIGUSR1, say) waits in the pipe instead of killing it.
        var pipeFDs: [Int32] = [0, 0]
        pipe(&pipeFDs)
        let signals: [Int32] = [SIGTERM, SIGQUIT, SIGUSR1]
        pc_install_signal_pipe(pipeFDs[1], signals, Int32(signals.count))
        let control = controlFD.map(ControlChannel.init(fd:))
        if let controlFD { _ = fcntl(controlFD, F_SETFL, fcntl(controlFD, F_GETFL) | O_NONBLOCK) }

        let loaded: LoadedGateway
        do {
            if let bundlePath {
                loaded = try GatewayLoader.load(bundle: GatewayLoader.readBundle(bundlePath))
            } else {
                loaded = try GatewayLoader.load(configPath: configPath)
            }
        } catch {
            EventLog.emit("worker_config_error", [("error", .string(error.description))])
            // The master reports the reason in `status` and does not respawn in a loop.
            control?.send("boot_failed \(generation) \(error.description.replacingOccurrences(of: "\n", with: "; "))")
            exit(configErrorStatus)
        }
        let loopCount = loops ?? loaded.config.server.threadsPerWorker
        let gateway: Gateway
        do {
            // The worker counts its metrics in the block of its worker-table slot.
            let metricsBlock = slot.flatMap { $0 < MetricsLayout.blockCount ? $0 : nil }
            gateway = try Gateway.build(loaded, loops: loopCount, previous: nil, metricsBlock: metricsBlock)
            if let metricsBlock { gateway.metricsSegment?.claimBlock(metricsBlock, loops: loopCount) }
        } catch {
            EventLog.emit("worker_start_failed", [("error", .string("\(error)"))])
            exit(1)
        }
        let server = WorkerServer(listenFD: listenFD, loops: loopCount, gateway: gateway) { fds in
            // Idle kept connections of a retiring loop: a surviving worker takes them over.
            // Once sent, the kernel holds them for the master; unsent (no master), they close.
            control?.send("handoff", fds: fds)
            for fd in fds { close(fd) }
        }


        server.start()
        // Routes that need no JWKS are served from here on; the master counts the worker ready
        // (and gives it handed-over connections) once its key sets are in or their first fetch
        // failed. A respawn starts from the cached sets and is ready at once.
        gateway.awaitJWKS()
        EventLog.emit("worker_started", [("generation", .int(Int64(generation))), ("loops", .int(Int64(loopCount)))])
        control?.send("ready \(generation)")

        if let slot, let table = try? WorkerTable.open(path: WorkerTable.defaultPath(runtimeDirectory: loaded.config.server.runtimeDirectory)) {
            startHeartbeat(table: table, slot: slot, server: server, hardTimeoutSeconds: loaded.config.server.hardTimeoutSeconds)
        }
        var state = ReloadState(current: gateway, generation: generation)
        var fds = [pollfd(fd: pipeFDs[0], events: Int16(POLLIN), revents: 0),
                   pollfd(fd: controlFD ?? -1, events: Int16(POLLIN), revents: 0)]
        serving: while true {
            _ = poll(&fds, 2, 500)
            state.closeRetiredLogs()
            if fds[0].revents != 0 {
                var byte: UInt8 = 0
                if read(pipeFDs[0], &byte, 1) == 1 {
                    switch Int32(byte) {
                    case SIGUSR1:
                        reopenLog(state.current.accessLog)
                        continue serving
                    case SIGQUIT:
                        // Fast stop: what is logged so far is written, in-flight requests are cut.
                        state.current.accessLog.flush()
                        EventLog.emit("worker_stopped", [("generation", .int(Int64(state.generation))), ("fast", .bool(true))])
                        exit(0)
                    default:
                        break serving
                    }
                }
            }
            guard let control, fds[1].revents != 0 else { continue }
            while let received = control.receive() {
                switch received {
                case .closed:
                    break serving  // the master is gone
                case .message(let words, let passed):
                    handle(words, passed: passed, server: server, control: control, loops: loopCount, state: &state)
                }
            }
        }
        let grace = state.current.config.server.shutdownGraceSeconds
        server.beginShutdown(graceSeconds: grace)
        let deadline = ContinuousClock.now + .seconds(grace + 1)
        while server.runningLoops.load(ordering: .sequentiallyConsistent) > 0 && ContinuousClock.now < deadline {
            usleep(5_000)
        }
        state.current.accessLog.flush()
        EventLog.emit("worker_stopped", [("generation", .int(Int64(state.generation)))])
        exit(0)
    }

    /// Writes the worker's slot four times a second from a thread of its own, so a reload that
    /// waits for JWKS keys on the main thread does not look like a dead worker; a process that
    /// is stopped or frozen stops beating, and a loop stuck in one request shows in `busySince`.
    /// A loop stuck beyond the hard timeout is logged here, with the request it last started,
    /// before the master (which waits a second longer) replaces the worker.
    private static func startHeartbeat(table: WorkerTable, slot: Int, server: WorkerServer, hardTimeoutSeconds: Int) {
        let pid = getpid()
        let thread = Thread {
            var reported: UInt64 = 0
            while true {
                let health = server.health()
                let now = WorkerTable.nowMs()
                table.beat(slot: slot, pid: pid, now: now, requests: health.requests, busySince: health.busySince / 1_000_000,
                           busyLoops: health.busyLoops)
                let busyMs = health.busySince == 0 ? 0 : now &- health.busySince / 1_000_000
                if health.busySince != 0 && busyMs > UInt64(hardTimeoutSeconds) * 1000 && reported != health.busySince {
                    reported = health.busySince
                    let last = server.lastStarted(loop: health.busiestLoop)
                    EventLog.emit("request_hard_timeout", [("loop", .int(Int64(health.busiestLoop))), ("busy_ms", .int(Int64(busyMs))),
                                                           ("request_id", last.map { .string($0.requestId) } ?? .null),
                                                           ("route", last.map { .string($0.route) } ?? .null)])
                }
                usleep(250_000)
            }
        }
        thread.name = "heartbeat"
        thread.start()
    }

    /// SIGUSR1 (a worker run by hand) or `reopen_logs` from the master: the access log is
    /// reopened at its path.
    private static func reopenLog(_ log: AccessLog) {
        do {
            try log.reopen()
            EventLog.emit("access_log_reopened", [("path", .string(log.path))])
        } catch {
            EventLog.emit("access_log_reopen_failed", [("error", .string("\(error)"))])
        }
    }

    /// What a worker keeps between the phases of a reload.
    struct ReloadState {
        var current: Gateway
        var generation: Int
        var prepared: (generation: Int, gateway: Gateway)?
        /// Logs a reload replaced, closed once requests that began before it have ended.
        var retiredLogs: [(AccessLog, ContinuousClock.Instant)] = []

        mutating func closeRetiredLogs() {
            let now = ContinuousClock.now
            retiredLogs.removeAll { log, at in
                guard at <= now else { return false }
                log.close()
                return true
            }
        }
    }

    private static func handle(_ words: [String], passed: [Int32], server: WorkerServer, control: ControlChannel,
                               loops: Int, state: inout ReloadState) {
        switch words.first {
        case "adopt":
            server.adopt(passed)
        case "reopen_logs":
            // logrotate (SIGUSR1 to the master): the master's reopened event log, if it has one,
            // becomes this worker's standard output and error; the access log is reopened.
            if let log = passed.first { EventLogFile.redirectStandardStreams(to: log) }
            passed.forEach { close($0) }
            reopenLog(state.current.accessLog)
        case "prepare" where words.count == 3:
            let generation = Int(words[1]) ?? 0
            do {
                let loaded = try GatewayLoader.load(bundle: GatewayLoader.readBundle(words[2]))
                let gateway = try Gateway.build(loaded, loops: loops, previous: state.current)
                // The running gateway serves meanwhile; the new one serves once its keys are in.
                gateway.awaitJWKS()
                if let stale = state.prepared?.gateway { stale.discard(keeping: state.current) }
                state.prepared = (generation, gateway)
                control.send("prepared \(generation)")
            } catch let error as ConfigErrors {
                control.send("prepare_failed \(generation) \(error.issues.map(\.description).joined(separator: "; "))")
            } catch {
                control.send("prepare_failed \(generation) \(error)")
            }
        case "commit" where words.count >= 2:
            guard let prepared = state.prepared, prepared.generation == Int(words[1]) else { return }
            server.publish(prepared.gateway)
            let old = state.current
            state.current = prepared.gateway
            state.generation = prepared.generation
            state.prepared = nil
            old.stopBackgroundWork()
            if old.accessLog !== prepared.gateway.accessLog {
                let grace = old.config.server.shutdownGraceSeconds
                state.retiredLogs.append((old.accessLog, ContinuousClock.now + .seconds(max(1, grace))))
            }
            EventLog.emit("worker_reloaded", [("generation", .int(Int64(prepared.generation)))])
        case "abort":
            if let stale = state.prepared?.gateway { stale.discard(keeping: state.current) }
            state.prepared = nil
        default:
            for fd in passed { close(fd) }
        }
    }
}
