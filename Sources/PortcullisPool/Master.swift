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
        var generation: Int
        let startedAt: Date
        /// The master's end of the worker's control channel.
        let control: ControlChannel
        /// The worker reported its loops accept requests.
        var ready = false
        var retiring = false
        /// Why the worker could not start (its `boot_failed` message), before it exits 78.
        var bootError: String?
        /// Its slot in the worker table.
        let slot: Int
        /// Due for recycling: retired as soon as its replacement is ready.
        var recycling = false
        /// Why the master killed it (it stopped serving), for the exit event.
        var killedBecause: String?
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
    private var respawnDelayMs = 0
    /// The last unexpected worker exit, for `status`.
    private var lastWorkerFailure: JSONObject?
    private let startedAt = Date()
    private var signalPipe: [Int32] = [-1, -1]
    private let initialBundle: ConfigBundle
    private let extraPidFile: String?
    private var pluginFingerprint: PluginDirectoryFingerprint?
    private var workerTable: WorkerTable?
    private var nextSupervision = ContinuousClock.now
    private var nextPluginCheck = ContinuousClock.now
    private var metrics: PoolMetrics?
    private var upstreams: UpstreamSupervision?
    /// A growth of the pool waiting for its new workers to be ready.
    private var growth: PoolGrowth?
    /// The outcome of the last change of the pool's size, for `portcullis scale` and `status`.
    private var lastScale: JSONObject?
    /// `serve --log-file`: where standard output and error go, reopened on SIGUSR1.
    private let logFile: EventLogFile?
    /// systemd's `NOTIFY_SOCKET` (`Type=notify`), read once; workers do not inherit it.
    private let notifier = ServiceNotifier.fromEnvironment(unsetting: true)
    /// The first generation was ready (the service manager was told `READY=1`).
    private var announcedReady = false

    /// `loaded` is the validated configuration the first generation runs (its bundle is what
    /// the workers load).
    /// `pidFile` is an extra pid file (`serve --pid-file`, for init systems) beside the one in
    /// the runtime directory. `logFile` (`serve --log-file`) receives the master's and the
    /// workers' standard output and error.
    public init(loaded: LoadedGateway, workers: Int?, threads: Int?, pidFile: String? = nil, logFile: String? = nil) {
        self.extraPidFile = pidFile
        self.logFile = logFile.map(EventLogFile.init(path:))
        self.initialBundle = loaded.bundle
        self.configPath = loaded.configPath
        self.config = loaded.config
        let config = loaded.config
        self.workersOverride = workers
        self.threadsOverride = threads
        self.desiredWorkers = workers ?? config.server.workers
        self.paths = RuntimePaths(config: config)
    }

    /// Runs until SIGTERM/SIGINT; returns the process exit status.
    public func run() throws -> Int32 {
        try logFile?.redirectStandardStreams()
        try prepareRuntimeDirectory()
        try openSocket()
        try createRateTable()
        do {
            workerTable = try WorkerTable.create(path: WorkerTable.defaultPath(runtimeDirectory: paths.directory))
        } catch {
            throw RuntimeError("cannot create the worker table: \(error)")
        }
        metrics = try PoolMetrics(runtimeDirectory: paths.directory)
        metrics?.load(config)
        upstreams = try UpstreamSupervision(runtimeDirectory: paths.directory, config: config)
        try writeBundle(initialBundle, generation: generation)
        try writePidFile()
        pipe(&signalPipe)
        _ = pc_set_cloexec(signalPipe[0], 1)
        _ = pc_set_cloexec(signalPipe[1], 1)
        fcntl(signalPipe[0], F_SETFL, O_NONBLOCK)
        fcntl(signalPipe[1], F_SETFL, O_NONBLOCK)
        let signals: [Int32] = [SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGCHLD, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2]
        pc_install_signal_pipe(signalPipe[1], signals, Int32(signals.count))
        pc_ignore_signal(SIGPIPE)

        EventLog.emit("master_started", [("socket", .string(config.server.socket)), ("workers", .int(Int64(desiredWorkers))),
                                         ("config", .string(configPath))])
        notePluginFiles(of: config)
        reconcile()
        writeState()

        while true {
            waitForEvents(timeoutMs: 250)
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
            supervise()
            reconcile()
            judgeGrowth()
            watchPlugins()
            announceReadiness()
            writeState()
        }
        cleanup()
        EventLog.emit("master_stopped")
        return 0
    }

    private func handle(signal: Int32) {
        switch signal {
        case SIGTERM, SIGINT:
            guard !shuttingDown else { return }
            shuttingDown = true
            shutdownDeadline = ContinuousClock.now + .seconds(config.server.shutdownGraceSeconds + 5)
            notifier.stopping()
            EventLog.emit("master_stopping", [("workers", .int(Int64(workers.count))), ("fast", .bool(false))])
            for pid in workers.keys { kill(pid, SIGTERM) }
        case SIGQUIT:
            // Fast stop (also after a graceful one began): workers exit at once.
            shuttingDown = true
            shutdownDeadline = ContinuousClock.now + .seconds(2)
            notifier.stopping()
            EventLog.emit("master_stopping", [("workers", .int(Int64(workers.count))), ("fast", .bool(true))])
            for pid in workers.keys { kill(pid, SIGQUIT) }
        case SIGUSR1:
            reopenLogs()
        case SIGHUP:
            reload()
        case SIGTTIN:
            resize(to: min(desiredWorkers + 1, 256))
        case SIGTTOU:
            resize(to: max(desiredWorkers - 1, 1))
        case SIGUSR2:
            if let text = try? String(contentsOfFile: paths.scaleFile, encoding: .utf8),
               let n = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), n >= 1, n <= 256 {
                EventLog.emit("scale", [("workers", .int(Int64(n)))])
                resize(to: n)
            }
        default:
            break  // SIGCHLD: reaping happens every loop
        }
    }

    /// logrotate moved the logs: the master reopens its own (`--log-file`) and sends the new
    /// file to every worker, which puts it in place of its standard output and error and
    /// reopens the access log. Lines written before go to the moved files, none is lost.
    private func reopenLogs() {
        var newLog: [Int32] = []
        if let logFile {
            do {
                let fd = try logFile.open()
                EventLogFile.redirectStandardStreams(to: fd)
                newLog = [fd]
            } catch {
                EventLog.emit("log_reopen_failed", [("error", .string("\(error)"))])
            }
        }
        defer { newLog.forEach { close($0) } }
        EventLog.emit("reopen_logs", [("workers", .int(Int64(workers.count))), ("log_file", logFile.map { .string($0.path) } ?? .null)])
        for worker in workers.values { worker.control.send("reopen_logs", fds: newLog) }
    }

    /// Tells the service manager once that the first generation serves: every desired worker
    /// is ready.
    private func announceReadiness() {
        guard !announcedReady, notifier.address != nil else { return }
        let ready = workers.values.filter { $0.generation == generation && $0.ready && !$0.retiring }.count
        guard ready >= desiredWorkers else { return }
        announcedReady = true
        notifier.ready(status: serviceStatus(ready: ready))
    }

    /// The one-line `STATUS=` systemd shows.
    private func serviceStatus(ready: Int? = nil) -> String {
        let count = ready ?? workers.values.filter { $0.ready && !$0.retiring }.count
        return "generation \(generation), \(count) workers ready"
    }

    /// Validates the configuration file; if valid, starts a new generation of workers with it
    /// and retires the old one once the new workers are up. If invalid, nothing changes.
    private func reload() {
        // The service manager sees the reload (`systemctl reload` waits for `portcullis reload`
        // anyway); it ends ready whatever the outcome: the running configuration serves.
        if announcedReady { notifier.reloading() }
        defer { if announcedReady { notifier.ready(status: serviceStatus()) } }
        // Taken before loading, so a change made while loading is seen by the next check; a
        // refused set is not retried until the files change again.
        notePluginFiles(of: config)
        let newConfig: GatewayConfig
        let bundle: ConfigBundle
        do {
            let loaded = try GatewayLoader.load(configPath: configPath)
            (newConfig, bundle) = (loaded.config, loaded.bundle)
        } catch {
            lastReload = JSONObject([("ok", false), ("at", .string(RFC3339.format(Date(), milliseconds: true))),
                                     ("errors", .array(error.issues.map { .string($0.description) }))])
            EventLog.emit("reload_refused", [("errors", .array(error.issues.map { .string($0.description) }))])
            metrics?.reload(ok: false)
            writeState()
            return
        }
        if newConfig.server.socket != config.server.socket {
            EventLog.emit("reload_warning", [("detail", .string("socket path changes need a restart; keeping \(config.server.socket)"))])
        }
        if newConfig.pluginsDirectory != config.pluginsDirectory { notePluginFiles(of: newConfig) }
        let next = generation + 1
        do {
            try writeBundle(bundle, generation: next)
        } catch {
            refuseReload(["\(error)"], event: "reload_failed")
            return
        }
        // Metric slots for the new names, before any worker maps them.
        metrics?.load(newConfig)
        // Two phases, so every worker serves the same configuration: each live worker builds
        // the new gateway beside the running one (opening logs, fetching JWKS keys) and says
        // whether it could; only when all could does every worker switch. Workers keep their
        // processes and their kept connections.
        let live = workers.filter { !$0.value.retiring }.map(\.key)
        for pid in live { workers[pid]?.control.send("prepare \(next) \(bundlePath(next))") }
        let outcome = awaitPrepared(live, generation: next, timeout: .seconds(newConfig.server.readyTimeoutSeconds))
        guard outcome.failures.isEmpty else {
            for pid in live { workers[pid]?.control.send("abort \(next)") }
            unlink(bundlePath(next))
            refuseReload(["the workers could not load the new configuration; the running configuration keeps serving"] + outcome.failures,
                         event: "reload_failed")
            return
        }
        for pid in live {
            workers[pid]?.control.send("commit \(next)")
            workers[pid]?.generation = next
        }
        generation = next
        config = newConfig
        // A new generation gets a fresh start: workers that could not boot the old one are
        // tried again at once.
        recentCrashes = 0
        respawnNotBefore = ContinuousClock.now
        upstreams?.configure(newConfig)
        if workersOverride == nil && newConfig.server.workers != desiredWorkers { resize(to: newConfig.server.workers) }
        if generation > 2 { unlink(bundlePath(generation - 2)) }
        lastReload = JSONObject([("ok", true), ("at", .string(RFC3339.format(Date(), milliseconds: true))), ("generation", .int(Int64(generation)))])
        EventLog.emit("reloaded", [("generation", .int(Int64(generation)))])
        metrics?.reload(ok: true)
        writeState()
    }

    private func refuseReload(_ errors: [String], event: String) {
        lastReload = JSONObject([("ok", false), ("at", .string(RFC3339.format(Date(), milliseconds: true))),
                                 ("errors", .array(errors.map { .string($0) }))])
        EventLog.emit(event, [("errors", .array(errors.map { .string($0) }))])
        metrics?.reload(ok: false)
        metrics?.load(config)
        writeState()
    }

    /// Sets the desired pool size. Growing is judged by `judgeGrowth` once the new workers are
    /// ready (or withdrawn); shrinking is done at once (the leaving workers retire gracefully).
    private func resize(to n: Int) {
        // A growth on top of a pending one still returns to the last size known to be ready.
        let base = growth?.from ?? desiredWorkers
        desiredWorkers = n
        if n > base {
            growth = PoolGrowth(from: base, to: n, timeoutSeconds: config.server.readyTimeoutSeconds, now: .now)
        } else {
            growth = nil
            recordScale(ok: true, workers: n, asked: n, reason: nil)
        }
    }

    /// A pending growth: reached once enough workers are ready; withdrawn when a new worker ends
    /// before it is ready or `ready_timeout_seconds` pass, and the pool returns to its size.
    private func judgeGrowth() {
        guard let pending = growth else { return }
        let ready = workers.values.filter { $0.generation == generation && $0.ready && !$0.retiring && !$0.recycling }.count
        switch pending.judge(ready: ready, now: .now) {
        case .waiting:
            return
        case .reached:
            growth = nil
            recordScale(ok: true, workers: pending.to, asked: pending.to, reason: nil)
        case .withdraw(let reason):
            growth = nil
            desiredWorkers = pending.from
            // The workers that are not ready leave first; `reconcile` retires any surplus left.
            let staying = workers.values.filter { $0.generation == generation && !$0.retiring && !$0.recycling }
            let unready = staying.filter { !$0.ready }.sorted { $0.startedAt > $1.startedAt }
            for worker in unready.prefix(max(0, staying.count - pending.from)) {
                workers[worker.pid]?.retiring = true
                kill(worker.pid, SIGTERM)
            }
            // Withdrawn, the failed workers are not a crash loop to back off from.
            recentCrashes = 0
            respawnNotBefore = .now
            EventLog.emit("scale_withdrawn", [("from", .int(Int64(pending.from))), ("asked", .int(Int64(pending.to))),
                                              ("reason", .string(reason))])
            recordScale(ok: false, workers: pending.from, asked: pending.to, reason: reason)
            reconcile()
        }
        writeState()
    }

    private func recordScale(ok: Bool, workers: Int, asked: Int, reason: String?) {
        var outcome = JSONObject([("ok", .bool(ok)), ("at", .string(RFC3339.format(Date(), milliseconds: true))),
                                  ("workers", .int(Int64(workers))), ("asked", .int(Int64(asked)))])
        if let reason { outcome["reason"] = .string(reason) }
        lastScale = outcome
    }

    /// Waits until each of `pids` answered `prepared`/`prepare_failed` for `generation` (or
    /// exited: a respawn starts from the new bundle anyway). Other control messages are
    /// handled meanwhile, so hand-overs never wait on a reload.
    private func awaitPrepared(_ pids: [pid_t], generation: Int, timeout: Duration) -> (prepared: Set<pid_t>, failures: [String]) {
        var waiting = Set(pids)
        var prepared = Set<pid_t>()
        var failures: [String] = []
        let deadline = ContinuousClock.now + timeout
        while !waiting.isEmpty {
            guard ContinuousClock.now < deadline else {
                failures.append("workers \(waiting.sorted()) did not answer within \(timeout)")
                break
            }
            waitForEvents(timeoutMs: 50) { pid, words in
                guard words.count >= 2, Int(words[1]) == generation, waiting.contains(pid) else { return false }
                switch words[0] {
                case "prepared":
                    waiting.remove(pid)
                    prepared.insert(pid)
                    return true
                case "prepare_failed":
                    waiting.remove(pid)
                    failures.append("worker \(pid): " + (words.count > 2 ? words[2] : "failed"))
                    return true
                default:
                    return false
                }
            }
            reap()
            waiting = waiting.filter { workers[$0] != nil }
        }
        return (prepared, failures)
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

    /// Reads every ready worker's slot (at most every 250 ms): a worker that stopped beating or
    /// whose loop is stuck in one request beyond `hard_timeout_seconds` is killed and replaced;
    /// one due for recycling is marked, and `reconcile` replaces it without a gap.
    private func supervise() {
        guard let workerTable, ContinuousClock.now >= nextSupervision else { return }
        nextSupervision = ContinuousClock.now + .milliseconds(250)
        let policy = WorkerSupervision(settings: config.server)
        let now = WorkerTable.nowMs()
        for (pid, worker) in workers where worker.ready && !worker.retiring && worker.killedBecause == nil {
            guard let entry = workerTable.read(slot: worker.slot), entry.pid == Int64(pid) else { continue }
            let rss = policy.recycleAboveBytes == nil ? nil : StatusReport.residentBytes(Int64(pid))
            let fields: [(String, JSONValue)] = [("worker_pid", .int(Int64(pid))), ("generation", .int(Int64(worker.generation)))]
            switch policy.judge(entry, rssBytes: rss, now: now) {
            case .healthy:
                continue
            case .unresponsive(let age):
                EventLog.emit("worker_unresponsive", fields + [("heartbeat_age_ms", .int(Int64(age)))])
                workers[pid]?.killedBecause = "unresponsive"
                kill(pid, SIGKILL)
            case .stuck(let busy):
                EventLog.emit("worker_stuck", fields + [("busy_ms", .int(Int64(busy))),
                                                        ("hard_timeout_ms", .int(Int64(policy.hardTimeoutMs)))])
                workers[pid]?.killedBecause = "stuck"
                kill(pid, SIGKILL)
            case .recycleAfterRequests(let served) where !worker.recycling:
                EventLog.emit("worker_recycling", fields + [("requests", .int(Int64(served)))])
                workers[pid]?.recycling = true
            case .recycleAboveMemory(let rss) where !worker.recycling:
                EventLog.emit("worker_recycling", fields + [("rss_bytes", .int(rss))])
                workers[pid]?.recycling = true
            default:
                continue
            }
        }
    }

    private func reconcile() {
        // A worker due for recycling does not count: its replacement starts now, and it retires
        // (handing its kept connections over) once enough others are ready.
        let current = workers.values.filter { $0.generation == generation && !$0.retiring && !$0.recycling }
        let recycling = workers.values.filter { $0.recycling && !$0.retiring }
        if !recycling.isEmpty && current.filter(\.ready).count >= desiredWorkers {
            for worker in recycling {
                workers[worker.pid]?.retiring = true
                kill(worker.pid, SIGTERM)
            }
        }
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
            metrics?.reaped(slot: worker.slot)
            upstreams?.workerExited(pid)
            // Hand-overs the worker sent just before exiting are still in the channel.
            var bootError = worker.bootError
            while case .message(let words, let passed)? = worker.control.receive() {
                if words.first == "handoff" { passConnections(passed, from: pid) } else { passed.forEach { close($0) } }
                if words.first == "boot_failed" { bootError = words.count > 2 ? words[2] : "" }
            }
            close(worker.control.fd)
            let exitCode = (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
            let signal = status & 0x7f
            let lived = Date().timeIntervalSince(worker.startedAt)
            EventLog.emit("worker_exited", [("worker_pid", .int(Int64(pid))), ("generation", .int(Int64(worker.generation))),
                                            ("exit_code", exitCode >= 0 ? .int(Int64(exitCode)) : .null),
                                            ("signal", signal != 0 ? .int(Int64(signal)) : .null),
                                            ("expected", .bool(worker.retiring || shuttingDown))])
            if let reason = worker.killedBecause {
                EventLog.emit("worker_replaced", [("worker_pid", .int(Int64(pid))), ("reason", .string(reason))])
                lastWorkerFailure = JSONObject([("at", .string(RFC3339.format(Date(), milliseconds: true))), ("pid", .int(Int64(pid))),
                                                ("generation", .int(Int64(worker.generation))), ("exit_code", .null),
                                                ("signal", .int(Int64(SIGKILL))), ("error", .string("killed by the master: \(reason)"))])
            } else if !worker.retiring && !shuttingDown {
                // A crash loop backs off (up to 10 s) instead of spinning; a worker that could not
                // load its generation (exit 78) will not do better at once: from 1 s up to 30 s.
                let bootFailure = exitCode == Int32(WorkerProcess.configErrorStatus)
                recentCrashes = lived < 2 || bootFailure ? recentCrashes + 1 : 0
                respawnDelayMs = recentCrashes == 0 ? 0
                    : bootFailure ? min(30_000, 1000 << min(recentCrashes - 1, 5)) : min(10_000, 100 << min(recentCrashes, 7))
                respawnNotBefore = ContinuousClock.now + .milliseconds(respawnDelayMs)
                var failure = JSONObject([("at", .string(RFC3339.format(Date(), milliseconds: true))), ("pid", .int(Int64(pid))),
                                          ("generation", .int(Int64(worker.generation))),
                                          ("exit_code", exitCode >= 0 ? .int(Int64(exitCode)) : .null),
                                          ("signal", signal != 0 ? .int(Int64(signal)) : .null)])
                if let bootError { failure["error"] = .string(bootError) }
                lastWorkerFailure = failure
                if !worker.ready && worker.generation == generation {
                    let how = bootFailure ? "could not start" : signal != 0 ? "was killed by signal \(signal)" : "exited with \(exitCode)"
                    growth?.workerEndedBeforeReady("worker \(pid) \(how) before it was ready" + (bootError.map { ": \($0)" } ?? ""))
                }
                if recentCrashes > 1 {
                    EventLog.emit("worker_crash_loop", [("failures_in_a_row", .int(Int64(recentCrashes))),
                                                        ("respawn_delay_ms", .int(Int64(respawnDelayMs))),
                                                        ("error", bootError.map { .string($0) } ?? .null)])
                }
            }
        }
    }

    private func spawnWorker() {
        let exe = executablePath()
        // The lowest slot no live worker holds.
        let taken = Set(workers.values.map(\.slot))
        guard let slot = (0..<(workerTable?.slots ?? WorkerTable.defaultSlots)).first(where: { !taken.contains($0) }) else {
            EventLog.emit("spawn_failed", [("error", .string("no free worker table slot"))])
            return
        }
        workerTable?.claim(slot: slot, now: WorkerTable.nowMs())
        var args = [exe, "worker", "--config", configPath, "--bundle", bundlePath(generation),
                    "--fd", "3", "--control", "4", "--generation", String(generation), "--slot", String(slot)]
        if let threadsOverride { args += ["--threads", String(threadsOverride)] }
        let channel: (master: ControlChannel, worker: ControlChannel)
        do {
            channel = try ControlChannel.pair()
        } catch {
            EventLog.emit("spawn_failed", [("error", .string("\(error)"))])
            respawnNotBefore = ContinuousClock.now + .seconds(1)
            return
        }
        _ = fcntl(channel.master.fd, F_SETFL, fcntl(channel.master.fd, F_GETFL) | O_NONBLOCK)
        let pid = spawn(exe, args, fds: [(listenFD, 3), (channel.worker.fd, 4)])
        close(channel.worker.fd)
        guard pid > 0 else {
            close(channel.master.fd)
            EventLog.emit("spawn_failed", [("error", .string(String(cString: strerror(-pid))))])
            respawnNotBefore = ContinuousClock.now + .seconds(1)
            return
        }
        workers[pid] = Worker(pid: pid, generation: generation, startedAt: Date(), control: channel.master, slot: slot)
    }

    // MARK: control channels

    /// Waits up to `timeoutMs` for a signal or a worker message and handles the messages:
    /// readiness, and idle connections a retiring worker hands over, passed on to a live worker.
    /// `intercept` sees each message first (a reload waiting for answers).
    private func waitForEvents(timeoutMs: Int32, intercept: ((pid_t, [String]) -> Bool)? = nil) {
        let pids = Array(workers.keys)
        var fds = [pollfd(fd: signalPipe[0], events: Int16(POLLIN), revents: 0)]
        fds += pids.map { pollfd(fd: workers[$0]!.control.fd, events: Int16(POLLIN), revents: 0) }
        _ = poll(&fds, nfds_t(fds.count), Int32(timeoutMs))
        for (i, pid) in pids.enumerated() where fds[i + 1].revents != 0 {
            while let worker = workers[pid], let received = worker.control.receive() {
                guard case .message(let words, let passed) = received else { break }
                if let intercept, intercept(pid, words) { continue }
                switch words.first {
                case "ready":
                    workers[pid]?.ready = true
                case "boot_failed":
                    workers[pid]?.bootError = words.count > 2 ? words[2] : ""
                case "handoff":
                    passConnections(passed, from: pid)
                default:
                    for fd in passed { close(fd) }
                }
            }
        }
    }

    /// Gives kept FastCGI connections of a retiring worker to a live one, so a request nginx
    /// writes on them is served; with no live worker (the pool is stopping) they are closed.
    private func passConnections(_ fds: [Int32], from pid: pid_t) {
        defer { for fd in fds { close(fd) } }
        // A worker due for recycling still serves (it hands the connections on when it retires):
        // it takes them only when no other ready worker can, rather than closing them.
        let ready = workers.values.filter { $0.ready && !$0.retiring && $0.pid != pid }.sorted { $0.startedAt < $1.startedAt }
        let staying = ready.filter { !$0.recycling }
        let candidates = staying.isEmpty ? ready : staying
        guard !shuttingDown, !candidates.isEmpty else { return }
        handoffCursor &+= 1
        let target = candidates[handoffCursor % candidates.count]
        if !target.control.send("adopt", fds: fds) {
            EventLog.emit("handoff_failed", [("from_pid", .int(Int64(pid))), ("to_pid", .int(Int64(target.pid))), ("connections", .int(Int64(fds.count)))])
        }
    }
    private var handoffCursor = 0

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

    /// Each generation's workers, respawned ones included, run the bundle the master validated
    /// for that generation (config, rule and key files), not whatever the disk holds when they start.
    private func bundlePath(_ generation: Int) -> String { paths.bundleFile(generation: generation) }

    private func writeBundle(_ bundle: ConfigBundle, generation: Int) throws {
        // It may hold secrets the config refers to (a Redis password file): owner only.
        let path = bundlePath(generation), temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(bundle.encoded()), attributes: [.posixPermissions: 0o600]),
              rename(temporary, path) == 0 else {
            unlink(temporary)
            throw RuntimeError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        if generation > 2 { unlink(bundlePath(generation - 2)) }
    }

    private func writePidFile() throws {
        try "\(getpid())\n".write(toFile: paths.pidFile, atomically: true, encoding: .utf8)
        if let extraPidFile { try "\(getpid())\n".write(toFile: extraPidFile, atomically: true, encoding: .utf8) }
    }

    private func writeState() {
        metrics?.publish(generation: generation, ready: workers.values.filter { $0.ready && !$0.retiring }.count, desired: desiredWorkers,
                         threads: threadsOverride ?? config.server.threadsPerWorker)
        let list: [JSONValue] = workers.values.sorted { $0.startedAt < $1.startedAt }.map { w in
            .object(JSONObject([("pid", .int(Int64(w.pid))), ("generation", .int(Int64(w.generation))),
                                ("started_at", .string(RFC3339.format(w.startedAt, milliseconds: true))), ("ready", .bool(w.ready)),
                                ("retiring", .bool(w.retiring)), ("recycling", .bool(w.recycling)), ("slot", .int(Int64(w.slot)))]))
        }
        var state = JSONObject([
            ("master_pid", .int(Int64(getpid()))), ("generation", .int(Int64(generation))),
            ("socket", .string(config.server.socket)), ("config", .string(configPath)),
            ("desired_workers", .int(Int64(desiredWorkers))),
            ("threads", .int(Int64(threadsOverride ?? config.server.threadsPerWorker))),
            ("started_at", .string(RFC3339.format(startedAt, milliseconds: true))), ("workers", .array(list)),
        ])
        if let lastReload { state["last_reload"] = .object(lastReload) }
        if let lastScale { state["last_scale"] = .object(lastScale) }
        state["ready_timeout_seconds"] = .int(Int64(config.server.readyTimeoutSeconds))
        if let lastWorkerFailure {
            state["worker_failures"] = .object(JSONObject([("in_a_row", .int(Int64(recentCrashes))),
                                                           ("respawn_delay_ms", .int(Int64(respawnDelayMs))),
                                                           ("last", .object(lastWorkerFailure))]))
        }
        state["upstreams"] = UpstreamSupervision.stateEntry(config)
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
        if let extraPidFile { unlink(extraPidFile) }
        unlink(paths.stateFile)
        unlink(SharedMemoryRateTable.defaultPath(runtimeDirectory: paths.directory))
        metrics?.remove()
        unlink(WorkerTable.defaultPath(runtimeDirectory: paths.directory))
        upstreams?.stop()
        for g in max(1, generation - 2)...generation { unlink(bundlePath(g)) }
    }
}
