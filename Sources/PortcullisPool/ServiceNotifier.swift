import CPortcullis
import Foundation
import PortcullisRuntime

/// Tells a service manager (systemd, `Type=notify`) what the master is doing, as `sd_notify(3)`
/// does but without libsystemd: one datagram per state change to the unix socket named by
/// `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). Without that variable every
/// call does nothing.
public struct ServiceNotifier: Sendable {
    /// The socket address, nil when no service manager listens.
    public let address: String?

    public init(address: String?) { self.address = address?.isEmpty == false ? address : nil }

    /// The notifier `NOTIFY_SOCKET` names. With `unsetting`, the variable is removed from this
    /// process's environment, so the workers it starts do not inherit it (only the main
    /// process may notify).
    public static func fromEnvironment(unsetting: Bool) -> ServiceNotifier {
        let notifier = ServiceNotifier(address: ProcessInfo.processInfo.environment["NOTIFY_SOCKET"])
        if unsetting { unsetenv("NOTIFY_SOCKET") }
        return notifier
    }

    /// The pool serves: `READY=1`, a human-readable `STATUS=`, and this process as the main one.
    public func ready(status: String) {
        send([("READY", "1"), ("STATUS", status), ("MAINPID", String(getpid()))])
    }

    /// A reload begins; `ready` ends it, whatever its outcome.
    public func reloading() {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        send([("RELOADING", "1"), ("MONOTONIC_USEC", String(Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000))])
    }

    public func stopping() { send([("STOPPING", "1")]) }

    /// `serve --daemon`: the master it started is the service's main process from now on.
    public func mainProcess(_ pid: pid_t) { send([("MAINPID", String(pid))]) }

    /// The datagram for `fields`: one `KEY=value` line each (a value never spans lines).
    static func message(_ fields: [(String, String)]) -> String {
        fields.map { "\($0.0)=\($0.1.replacingOccurrences(of: "\n", with: " "))" }.joined(separator: "\n")
    }

    private func send(_ fields: [(String, String)]) {
        guard let address else { return }
        let result = pc_notify_socket_send(address, Self.message(fields))
        if result < 0 {
            EventLog.emit("notify_failed", [("socket", .string(address)), ("error", .string(String(cString: strerror(-result))))])
        }
    }
}
