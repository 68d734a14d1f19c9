import ArgumentParser
import CPortcullis
import Foundation
import PortcullisCore
import PortcullisPool
import PortcullisRuntime

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Run the master and its worker pool (in the foreground, or --daemon).")

    @OptionGroup var options: ConfigOption
    @Option(help: "Worker processes (overrides server.workers).") var workers: Int?
    @Option(help: "Threads per worker (overrides server.threads).") var threads: Int?
    @Flag(help: "Run in the background: returns once the pool serves (exit 0) or could not start (exit 1).") var daemon = false
    @Option(name: .customLong("pid-file"), help: "Also write the master's pid to this file (removed when it stops).")
    var pidFile: String?
    @Option(name: .customLong("log-file"), help: "Where the master's and workers' event log goes, reopened on SIGUSR1 (default: standard error; with --daemon runtime_dir/portcullis.log).")
    var logFile: String?

    func run() throws {
        let loaded = try options.load()
        if let workers, !(1...256).contains(workers) { throw ValidationError("--workers must be 1...256") }
        if let threads, !(1...1024).contains(threads) { throw ValidationError("--threads must be 1...1024") }
        if daemon { throw ExitCode(try startDaemon(loaded)) }
        do {
            let status = try Master(loaded: loaded, workers: workers, threads: threads, pidFile: pidFile, logFile: logFile).run()
            throw ExitCode(status)
        } catch let error as RuntimeError {
            printError("portcullis: \(error.description)")
            throw ExitCode(1)
        }
    }

    /// Starts `serve` (without --daemon) in a session of its own and waits until its workers
    /// are ready; the exit status of `serve --daemon`.
    private func startDaemon(_ loaded: LoadedGateway) throws -> Int32 {
        let control = MasterControl(configPath: options.config)
        if let running = control.paths.runningMasterPid() {
            printError("portcullis: already running (master \(running))")
            return 1
        }
        let log = logFile ?? loaded.config.server.runtimeDirectory + "/portcullis.log"
        try? FileManager.default.createDirectory(atPath: (log as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let fd: Int32
        do {
            fd = try EventLogFile(path: log).open()
        } catch {
            printError("portcullis: \(error)")
            return 1
        }
        defer { close(fd) }
        var arguments = [executablePath(), "serve", "--config", options.config, "--log-file", log]
        if let workers { arguments += ["--workers", String(workers)] }
        if let threads { arguments += ["--threads", String(threads)] }
        if let pidFile { arguments += ["--pid-file", pidFile] }
        var cArgs = arguments.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        let pid = pc_spawn_detached(arguments[0], &cArgs, environ, fd)
        guard pid > 0 else {
            printError("portcullis: cannot start the master: \(String(cString: strerror(-pid)))")
            return 1
        }
        // Under systemd (Type=notify) the master becomes the main process now, so its READY=1
        // is accepted; it inherits NOTIFY_SOCKET for that.
        ServiceNotifier.fromEnvironment(unsetting: false).mainProcess(pid)
        let desired = workers ?? loaded.config.server.workers
        // The master's own start-up comes before the workers' readiness, which the
        // configuration bounds as it bounds a growth of the pool.
        let waitSeconds = loaded.config.server.readyTimeoutSeconds + Self.masterStartSeconds
        let deadline = ContinuousClock.now + .seconds(waitSeconds)
        while ContinuousClock.now < deadline {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                printError("portcullis: the master exited during start-up; see \(log)")
                return 1
            }
            let ready = control.state()?["workers"]?.arrayValue?.filter { $0["ready"]?.boolValue == true }.count ?? 0
            if control.paths.runningMasterPid() == pid && ready >= desired {
                print("started master \(pid) (\(ready) workers); log: \(log)")
                return 0
            }
            usleep(50_000)
        }
        // A failed start leaves nothing running: a supervisor that sees exit 1 would otherwise
        // start a second master beside this one.
        kill(pid, SIGTERM)
        let stopDeadline = ContinuousClock.now + .seconds(Self.masterStartSeconds)
        var status: Int32 = 0
        var reaped = false
        while !reaped && ContinuousClock.now < stopDeadline {
            reaped = waitpid(pid, &status, WNOHANG) == pid
            if !reaped { usleep(50_000) }
        }
        if !reaped {
            kill(pid, SIGKILL)
            waitpid(pid, &status, 0)
        }
        printError("portcullis: master \(pid) did not get \(desired) workers ready within \(waitSeconds) s "
                   + "(server.ready_timeout_seconds + \(Self.masterStartSeconds) s), stopped; see \(log)")
        return 1
    }

    /// What `serve --daemon` allows the master itself, before its workers' readiness, and for
    /// stopping when they were not ready in time.
    private static let masterStartSeconds = 5

    private func executablePath() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
