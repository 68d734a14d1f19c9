import CPortcullis
import Foundation
import PortcullisCore
import PortcullisRuntime

/// The master process: owns the FastCGI socket, spawns and supervises workers, reloads the
/// configuration and scales the pool. Its signal handler only writes a byte to a pipe; this
/// loop reconciles desired against actual workers (gunicorn's arbiter, php-fpm's master).
public final class Master {
    struct Worker {
        let pid: pid_t
        let generation: Int
        let startedAt: Date
        var retiring = false
    }

    private let configPath: String
    private var config: GatewayConfig
    private let workersOverride: Int?
    private let threadsOverride: Int?
    private var desiredWorkers: Int
    private let paths: RuntimePaths
    private var listenFD: Int32 = -1
    private var workers: [pid_t: Worker] = [:]
    private var generation = 1
    private var shuttingDown = false
    private var shutdownDeadline: ContinuousClock.Instant?
    private var lastReload: JSONObject?
    private var respawnNotBefore = ContinuousClock.now
    private var recentCrashes = 0
    private let startedAt = Date()
    private var signalPipe: [Int32] = [-1, -1]
    private let initialConfigBytes: [UInt8]
    private var pluginFingerprint: PluginDirectoryFingerprint?
    private var nextPluginCheck = ContinuousClock.now

    public init(configPath: String, configBytes: [UInt8], config: GatewayConfig, workers: Int?, threads: Int?) {
        self.initialConfigBytes = configBytes
        self.configPath = configPath
        self.config = config
        self.workersOverride = workers
        self.threadsOverride = threads
        self.desiredWorkers = workers ?? config.server.workers
        self.paths = RuntimePaths(config: config)
    }

    /// Runs until SIGTERM/SIGINT; returns the process exit status.
    public func run() throws -> Int32 {
        try prepareRuntimeDirectory()
        try openSocket()
        try createRateTable()
        try writeSnapshot(initialConfigBytes, generation: generation)
        try writePidFile()
        pipe(&signalPipe)
        _ = pc_set_cloexec(signalPipe[0], 1)
        _ = pc_set_cloexec(signalPipe[1], 1)
        fcntl(signalPipe[0], F_SETFL, O_NONBLOCK)
        fcntl(signalPipe[1], F_SETFL, O_NONBLOCK)
        let signals: [Int32] = [SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGCHLD, SIGTTIN, SIGTTOU, SIGUSR2]
        pc_install_signal_pipe(signalPipe[1], signals, Int32(signals.count))
        pc_ignore_signal(SIGPIPE)

        EventLog.emit("master_started", [("socket", .string(config.server.socket)), ("workers", .int(Int64(desiredWorkers))),
                                         ("config", .string(configPath))])
        notePluginFiles(of: config)
        reconcile()
        writeState()

        while true {
            var pfd = pollfd(fd: signalPipe[0], events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, 250)
            var buffer = [UInt8](repeating: 0, count: 64)
            let n = read(signalPipe[0], &buffer, buffer.count)
            if n > 0 {
                for signal in buffer.prefix(n) { handle(signal: Int32(signal)) }
            }
            reap()
            if shuttingDown {
                if workers.isEmpty { break }
                if let deadline = shutdownDeadline, ContinuousClock.now > deadline {
                    for pid in workers.keys { kill(pid, SIGKILL) }
                }
                continue
            }
            reconcile()
            watchPlugins()
            writeState()
        }
        cleanup()
        EventLog.emit("master_stopped")
        return 0
    }

    private func handle(signal: Int32) {
        switch signal {
        case SIGTERM, SIGINT, SIGQUIT:
            guard !shuttingDown else { return }
            shuttingDown = true
            shutdownDeadline = ContinuousClock.now + .seconds(config.server.shutdownGraceSeconds + 5)
            EventLog.emit("master_stopping", [("workers", .int(Int64(workers.count)))])
            for pid in workers.keys { kill(pid, SIGTERM) }
        case SIGHUP:
            reload()
        case SIGTTIN:
            desiredWorkers = min(desiredWorkers + 1, 256)
        case SIGTTOU:
            desiredWorkers = max(desiredWorkers - 1, 1)
        case SIGUSR2:
            if let text = try? String(contentsOfFile: paths.scaleFile, encoding: .utf8),
               let n = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), n >= 1, n <= 256 {
                desiredWorkers = n
                EventLog.emit("scale", [("workers", .int(Int64(n)))])
            }
        default:
            break  // SIGCHLD: reaping happens every loop
        }
    }

    /// Validates the configuration file; if valid, starts a new generation of workers with it
    /// and retires the old one once the new workers are up. If invalid, nothing changes.
    private func reload() {
        // Taken before loading, so a change made while loading is seen by the next check; a
        // refused set is not retried until the files change again.
        notePluginFiles(of: config)
        let newConfig: GatewayConfig
        let bytes: [UInt8]
        do {
            bytes = try GatewayLoader.readConfig(configPath)
            newConfig = try GatewayLoader.load(configPath: configPath, bytes: bytes).config
        } catch {
            lastReload = JSONObject([("ok", false), ("at", .string(RFC3339.format(Date(), milliseconds: true))),
                                     ("errors", .array(error.issues.map { .string($0.description) }))])
            EventLog.emit("reload_refused", [("errors", .array(error.issues.map { .string($0.description) }))])
            writeState()
            return
        }
        if newConfig.server.socket != config.server.socket {
            EventLog.emit("reload_warning", [("detail", .string("socket path changes need a restart; keeping \(config.server.socket)"))])
        }
        if newConfig.pluginsDirectory != config.pluginsDirectory { notePluginFiles(of: newConfig) }
        let previous = (config: config, desiredWorkers: desiredWorkers)
        config = newConfig
        if workersOverride == nil { desiredWorkers = newConfig.server.workers }
        let old = workers.filter { $0.value.generation == generation }.map(\.key)
        generation += 1
        do {
            try writeSnapshot(bytes, generation: generation)
        } catch {
            generation -= 1
            (config, desiredWorkers) = previous
            lastReload = JSONObject([("ok", false), ("at", .string(RFC3339.format(Date(), milliseconds: true))),
                                     ("errors", .array([.string("\(error)")]))])
            EventLog.emit("reload_failed", [("detail", .string("\(error)"))])
            writeState()
            return
        }
        for _ in 0..<desiredWorkers { spawnWorker() }
        // Give the new generation a moment to load before the old one stops accepting.
        let deadline = ContinuousClock.now + .milliseconds(300)
        while ContinuousClock.now < deadline { usleep(20_000); reap() }
        let started = workers.values.filter { $0.generation == generation && !$0.retiring }.count
        guard started == desiredWorkers else {
            // Something the master cannot check for the workers failed (an access log they
            // cannot open, the file changing between validation and their start): the old
            // generation keeps serving and the new one is withdrawn.
            for (pid, worker) in workers where worker.generation == generation {
                workers[pid]?.retiring = true
                kill(pid, SIGTERM)
            }
            generation -= 1
            (config, desiredWorkers) = previous
            recentCrashes = 0
            respawnNotBefore = ContinuousClock.now
            let reason = "the new workers exited while starting (see their worker_config_error / worker_start_failed events); the running workers keep serving"
            lastReload = JSONObject([("ok", false), ("at", .string(RFC3339.format(Date(), milliseconds: true))),
                                     ("errors", .array([.string(reason)]))])
            EventLog.emit("reload_failed", [("detail", .string(reason))])
            writeState()
            return
        }
        for pid in old { workers[pid]?.retiring = true; kill(pid, SIGTERM) }
        lastReload = JSONObject([("ok", true), ("at", .string(RFC3339.format(Date(), milliseconds: true))), ("generation", .int(Int64(generation)))])
        EventLog.emit("reloaded", [("generation", .int(Int64(generation)))])
        writeState()
    }

    /// With `plugins_watch`, a change to the plugins directory (a file added, removed, or
    /// rewritten) since the running configuration was loaded triggers the same validated reload
    /// as SIGHUP; checked once a second.
    private func watchPlugins() {
        guard config.watchPlugins, let directory = config.pluginsDirectory, ContinuousClock.now >= nextPluginCheck else { return }
        nextPluginCheck = ContinuousClock.now + .seconds(1)
        guard PluginDirectoryFingerprint.of(directory) != pluginFingerprint else { return }
        EventLog.emit("plugins_changed", [("directory", .string(directory))])
        reload()
    }

    /// The plugins directory as it is when a configuration is (re)loaded, for `watchPlugins`.
    private func notePluginFiles(of config: GatewayConfig) {
        pluginFingerprint = config.pluginsDirectory.map { PluginDirectoryFingerprint.of($0) }
    }

    private func reconcile() {
        let current = workers.values.filter { $0.generation == generation && !$0.retiring }
        if current.count < desiredWorkers {
            guard ContinuousClock.now >= respawnNotBefore else { return }
            for _ in current.count..<desiredWorkers { spawnWorker() }
        } else if current.count > desiredWorkers {
            for worker in current.sorted(by: { $0.startedAt > $1.startedAt }).prefix(current.count - desiredWorkers) {
                workers[worker.pid]?.retiring = true
                kill(worker.pid, SIGTERM)
            }
        }
    }

    private func reap() {
        var status: Int32 = 0
        while true {
            let pid = waitpid(-1, &status, WNOHANG)
            guard pid > 0 else { break }
            guard let worker = workers.removeValue(forKey: pid) else { continue }
            let exitCode = (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
            let signal = status & 0x7f
            let lived = Date().timeIntervalSince(worker.startedAt)
            EventLog.emit("worker_exited", [("worker_pid", .int(Int64(pid))), ("generation", .int(Int64(worker.generation))),
                                            ("exit_code", exitCode >= 0 ? .int(Int64(exitCode)) : .null),
                                            ("signal", signal != 0 ? .int(Int64(signal)) : .null),
                                            ("expected", .bool(worker.retiring || shuttingDown))])
            if !worker.retiring && !shuttingDown {
                // A crash loop backs off (up to 10 s) instead of spinning.
                recentCrashes = lived < 2 ? recentCrashes + 1 : 0
                let delayMs = recentCrashes == 0 ? 0 : min(10_000, 100 << min(recentCrashes, 7))
                respawnNotBefore = ContinuousClock.now + .milliseconds(delayMs)
            }
        }
    }

    private func spawnWorker() {
        let exe = executablePath()
        var args = [exe, "worker", "--config", configPath, "--snapshot", snapshotPath(generation),
                    "--fd", "3", "--generation", String(generation)]
        if let threadsOverride { args += ["--threads", String(threadsOverride)] }
        let pid = spawn(exe, args, fds: [(listenFD, 3)])
        guard pid > 0 else {
            EventLog.emit("spawn_failed", [("error", .string(String(cString: strerror(-pid))))])
            respawnNotBefore = ContinuousClock.now + .seconds(1)
            return
        }
        workers[pid] = Worker(pid: pid, generation: generation, startedAt: Date())
    }

    private func spawn(_ path: String, _ args: [String], fds: [(Int32, Int32)]) -> pid_t {
        var cArgs = args.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        let from = fds.map(\.0), to = fds.map(\.1)
        return pc_spawn(path, &cArgs, environ, from, to, Int32(fds.count))
    }

    private func executablePath() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        return n > 0 ? String(cString: buffer) : CommandLine.arguments[0]
    }

    // MARK: files and socket

    private func prepareRuntimeDirectory() throws {
        try FileManager.default.createDirectory(atPath: paths.directory, withIntermediateDirectories: true)
        if let text = try? String(contentsOfFile: paths.pidFile, encoding: .utf8),
           let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0, kill(pid, 0) == 0, pid != getpid() {
            throw RuntimeError("another master (pid \(pid)) is running with runtime directory \(paths.directory)")
        }
    }

    private func openSocket() throws {
        let path = config.server.socket
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        if pc_unix_probe(path) == 1 {
            throw RuntimeError("something is already listening on \(path)")
        }
        unlink(path)  // a stale socket from a master that died
        let fd = pc_unix_listen(path, 1024)
        guard fd >= 0 else { throw RuntimeError("cannot listen on \(path): \(String(cString: strerror(-fd)))") }
        listenFD = fd
        guard chmod(path, mode_t(config.server.socketMode)) == 0 else {
            throw RuntimeError("cannot chmod \(path): \(String(cString: strerror(errno)))")
        }
        if config.server.socketOwner != nil || config.server.socketGroup != nil {
            var uid = uid_t.max, gid = gid_t.max
            if let owner = config.server.socketOwner {
                guard let pw = getpwnam(owner) else { throw RuntimeError("unknown socket_owner \"\(owner)\"") }
                uid = pw.pointee.pw_uid
            }
            if let group = config.server.socketGroup {
                guard let gr = getgrnam(group) else { throw RuntimeError("unknown socket_group \"\(group)\"") }
                gid = gr.pointee.gr_gid
            }
            guard chown(path, uid, gid) == 0 else { throw RuntimeError("cannot chown \(path): \(String(cString: strerror(errno)))") }
        }
    }

    /// The shared-memory table every worker maps; created once, so counters outlive workers
    /// and reloads.
    private func createRateTable() throws {
        let path = SharedMemoryRateTable.defaultPath(runtimeDirectory: paths.directory)
        do {
            _ = try SharedMemoryRateTable.create(path: path, slots: config.rateLimit.tableSlots)
        } catch {
            throw RuntimeError("cannot create the rate-limit table \(path): \(error)")
        }
    }

    /// Each generation's workers, respawned ones included, run the config bytes the master
    /// validated for that generation, not whatever the file holds when they start.
    private func snapshotPath(_ generation: Int) -> String { paths.directory + "/config.generation-\(generation).json" }

    private func writeSnapshot(_ bytes: [UInt8], generation: Int) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: snapshotPath(generation)), options: .atomic)
        if generation > 2 { unlink(snapshotPath(generation - 2)) }
    }

    private func writePidFile() throws {
        try "\(getpid())\n".write(toFile: paths.pidFile, atomically: true, encoding: .utf8)
    }

    private func writeState() {
        let list: [JSONValue] = workers.values.sorted { $0.startedAt < $1.startedAt }.map { w in
            .object(JSONObject([("pid", .int(Int64(w.pid))), ("generation", .int(Int64(w.generation))),
                                ("started_at", .string(RFC3339.format(w.startedAt, milliseconds: true))), ("retiring", .bool(w.retiring))]))
        }
        var state = JSONObject([
            ("master_pid", .int(Int64(getpid()))), ("generation", .int(Int64(generation))),
            ("socket", .string(config.server.socket)), ("config", .string(configPath)),
            ("desired_workers", .int(Int64(desiredWorkers))),
            ("threads", .int(Int64(threadsOverride ?? config.server.threadsPerWorker))),
            ("started_at", .string(RFC3339.format(startedAt, milliseconds: true))), ("workers", .array(list)),
        ])
        if let lastReload { state["last_reload"] = .object(lastReload) }
        let text = JSONCodec.serialize(.object(state), pretty: true) + "\n"
        if text != lastStateText {
            try? text.write(toFile: paths.stateFile, atomically: true, encoding: .utf8)
            lastStateText = text
        }
    }
    private var lastStateText = ""

    private func cleanup() {
        close(listenFD)
        unlink(config.server.socket)
        unlink(paths.pidFile)
        unlink(paths.stateFile)
        unlink(SharedMemoryRateTable.defaultPath(runtimeDirectory: paths.directory))
        for g in max(1, generation - 2)...generation { unlink(snapshotPath(g)) }
    }
}
