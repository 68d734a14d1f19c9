import Foundation

/// The file the event log goes to with `serve --log-file`: the master's and its workers'
/// standard output and error. SIGUSR1 reopens it at its path, so logrotate can move it.
public struct EventLogFile: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    /// Opens the file for appending (created 0640 if missing); the descriptor, close-on-exec,
    /// is the caller's to close.
    public func open() throws -> Int32 {
        let fd = Foundation.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw RuntimeError("cannot open \(path): \(String(cString: strerror(errno)))") }
        return fd
    }

    /// Opens the file and puts it in place of standard output and error.
    public func redirectStandardStreams() throws {
        let fd = try open()
        defer { close(fd) }
        Self.redirectStandardStreams(to: fd)
    }

    /// Puts `fd`'s file in place of standard output and error. `dup2` swaps each atomically, so
    /// every line lands whole in the old file or the new one; children started later inherit
    /// the new one.
    public static func redirectStandardStreams(to fd: Int32) {
        dup2(fd, 1)
        dup2(fd, 2)
    }
}
