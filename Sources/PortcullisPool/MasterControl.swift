import Foundation
import PortcullisCore

/// The operator's side of the master: finds it through the pid file, signals it, and waits for
/// the outcome it publishes in `state.json`. Every CLI command that talks to a running master
/// (reload, scale, stop, status, reopen) goes through this one type.
public struct MasterControl: Sendable {
    public let paths: RuntimePaths

    public init(configPath: String) { self.paths = RuntimePaths.locate(configPath: configPath) }
    public init(paths: RuntimePaths) { self.paths = paths }

    /// Why a command could not do what it was asked.
    public enum Failure: Error, Equatable {
        /// No live master (exit status 3).
        case notRunning(String)
        /// The master answered no, or not in time (exit status 1).
        case failed(String)

        public var exitStatus: Int32 {
            switch self {
            case .notRunning: return 3
            case .failed: return 1
            }
        }

        public var message: String {
            switch self {
            case .notRunning(let m), .failed(let m): return m
            }
        }
    }

    /// The running master's pid.
    public func masterPid() throws(Failure) -> pid_t {
        guard let pid = paths.runningMasterPid() else { throw .notRunning("portcullis: not running (no live master in \(paths.pidFile))") }
        return pid
    }

    /// What the master last published (nil while it has not written it yet).
    public func state() -> JSONValue? { paths.readState() }

    /// SIGHUP, then waits for the master's verdict; returns the new generation.
    /// `readyTimeoutSeconds` is the new configuration's `ready_timeout_seconds`: the master
    /// waits up to that long for its workers to prepare it.
    public func reload(readyTimeoutSeconds: Int? = nil) throws(Failure) -> Int {
        let current = state()
        let before = current?["last_reload"]
        let timeout = Self.verdictTimeout(current, readyTimeoutSeconds: readyTimeoutSeconds)
        let outcome = try signalAndWait(SIGHUP, timeout: timeout, what: "reload result") { (state: JSONValue) -> JSONValue? in
            guard let result = state["last_reload"], result != before else { return nil }
            return result
        }
        if outcome["ok"]?.boolValue == true { return Int(outcome["generation"]?.intValue ?? 0) }
        let errors = outcome["errors"]?.arrayValue?.compactMap { $0.stringValue } ?? []
        throw .failed("reload refused by the master:\n" + errors.joined(separator: "\n"))
    }

    /// How `scale` changes the pool: an absolute size, or a change of the current desired size.
    public enum ScaleTarget: Equatable, Sendable {
        case absolute(Int)
        case relative(Int)

        /// "3", "+2" or "-1"; nil otherwise.
        public init?(_ text: String) {
            guard let n = Int(text) else { return nil }
            self = text.hasPrefix("+") || text.hasPrefix("-") ? .relative(n) : .absolute(n)
        }
    }

    /// Largest pool the master runs.
    public static let maxWorkers = 256

    /// Sets the desired number of workers and waits for the master's verdict: a growth is
    /// answered once the new workers are ready, or refused when they are not ready within the
    /// master's `ready_timeout_seconds` (it withdraws them and keeps the size it had; the
    /// reason is thrown). Then waits until exactly that many workers serve. Returns the size.
    public func scale(_ target: ScaleTarget) throws(Failure) -> Int {
        _ = try masterPid()  // not running: exit 3 before anything is written
        let before = state()
        let workers: Int
        switch target {
        case .absolute(let n): workers = n
        case .relative(let delta): workers = Int(before?["desired_workers"]?.intValue ?? 0) + delta
        }
        guard (1...Self.maxWorkers).contains(workers) else {
            throw .failed("portcullis: the pool must have 1...\(Self.maxWorkers) workers (asked for \(workers))")
        }
        do {
            try "\(workers)\n".write(toFile: paths.scaleFile, atomically: true, encoding: .utf8)
        } catch {
            throw .failed("portcullis: cannot write \(paths.scaleFile): \(error)")
        }
        let timeout = Self.verdictTimeout(before)
        let start = ContinuousClock.now
        let outcome = try signalAndWait(SIGUSR2, timeout: timeout, what: "scale result") { (state: JSONValue) -> JSONValue? in
            guard let result = state["last_scale"], result != before?["last_scale"] else { return nil }
            return result
        }
        guard outcome["ok"]?.boolValue == true else {
            throw .failed("portcullis: scale to \(workers) workers withdrawn, the pool keeps \(outcome["workers"]?.intValue ?? 0): "
                          + (outcome["reason"]?.stringValue ?? "no reason given"))
        }
        // Shrinking is answered at once: wait until the leaving workers are out of the count.
        _ = try waitForState(timeout: timeout - (ContinuousClock.now - start), what: "\(workers) ready workers") { state -> Bool? in
            let live = state["workers"]?.arrayValue?.filter { $0["retiring"]?.boolValue != true } ?? []
            let ready = live.filter { $0["ready"]?.boolValue == true }
            return state["desired_workers"]?.intValue == Int64(workers) && live.count == workers && ready.count == workers ? true : nil
        }
        return workers
    }

    /// How long to wait for the master's verdict on a change that waits for readiness: its
    /// `ready_timeout_seconds` (published in `state.json`), plus time to carry it out.
    static func verdictTimeout(_ state: JSONValue?, readyTimeoutSeconds: Int? = nil) -> Duration {
        let published = state?["ready_timeout_seconds"]?.intValue.map(Int.init) ?? ServerSettings().readyTimeoutSeconds
        return .seconds(max(published, readyTimeoutSeconds ?? 0) + 10)
    }

    /// SIGTERM (graceful) or SIGQUIT (fast), then waits until the master has exited.
    public func stop(fast: Bool = false, timeout: Duration) throws(Failure) -> pid_t {
        let pid = try masterPid()
        kill(pid, fast ? SIGQUIT : SIGTERM)
        let deadline = ContinuousClock.now + timeout
        while RuntimePaths.isAlive(pid) && ContinuousClock.now < deadline { usleep(50_000) }
        if RuntimePaths.isAlive(pid) { throw .failed("portcullis: master \(pid) still running after \(timeout)") }
        return pid
    }

    /// Signals the master, then polls `state.json` until `outcome` returns a value.
    func signalAndWait<T>(_ signal: Int32, timeout: Duration, what: String,
                          _ outcome: (JSONValue) -> T?) throws(Failure) -> T {
        kill(try masterPid(), signal)
        return try waitForState(timeout: timeout, what: what, outcome)
    }

    /// Polls `state.json` until `outcome` returns a value; fails if the master exits or
    /// `timeout` passes first.
    func waitForState<T>(timeout: Duration, what: String, _ outcome: (JSONValue) -> T?) throws(Failure) -> T {
        let pid = try masterPid()
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            usleep(50_000)
            if let state = state(), let result = outcome(state) { return result }
            guard RuntimePaths.isAlive(pid) else { throw .failed("portcullis: master \(pid) exited while waiting for the \(what)") }
        }
        throw .failed("portcullis: no \(what) from master \(pid) within \(timeout)")
    }
}
