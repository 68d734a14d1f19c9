import Foundation
import PortcullisCore
import Synchronization

/// One JSON line per request, appended to an in-memory buffer by request threads and written
/// out by a background thread, so a slow disk or pipe never blocks the request path. When the
/// buffer is full, lines are dropped and counted (the count is logged once space returns).
public final class AccessLog: @unchecked Sendable {
    private struct State {
        var pending: [UInt8] = []
        var dropped = 0
    }

    private let fd: Int32
    private let capacity: Int
    private let state = Mutex(State())
    private let wake = NSCondition()

    /// Opens `path` for appending ("-" is standard output) and starts the writer thread.
    public init(path: String, bufferBytes: Int) throws {
        if path == "-" {
            fd = 1
        } else {
            let opened = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            guard opened >= 0 else { throw RuntimeError("cannot open access log \(path): \(String(cString: strerror(errno)))") }
            fd = opened
        }
        capacity = bufferBytes
        let thread = Thread { [self] in self.writerLoop() }
        thread.start()
    }

    /// Queues one newline-terminated JSON line.
    public func record(line: [UInt8]) {
        let pending = state.withLock { s -> Int in
            if s.pending.count + line.count > capacity {
                s.dropped += 1
                return 0
            }
            s.pending.append(contentsOf: line)
            return s.pending.count
        }
        if pending > 64 * 1024 { wake.signal() }
    }

    /// Writes whatever is pending now (used before a worker exits).
    public func flush() {
        let (bytes, dropped) = state.withLock { s -> ([UInt8], Int) in
            let out = (s.pending, s.dropped)
            s.pending.removeAll(keepingCapacity: true)
            s.dropped = 0
            return out
        }
        if dropped > 0 {
            writeLines(Array("{\"event\":\"access_log_dropped\",\"lines\":\(dropped)}\n".utf8))
        }
        writeLines(bytes)
    }

    private func writerLoop() {
        while true {
            wake.lock()
            _ = wake.wait(until: Date().addingTimeInterval(0.1))
            wake.unlock()
            flush()
        }
    }

    /// Writes in pieces of at most PIPE_BUF bytes cut at line ends, so lines from several
    /// worker processes sharing one pipe never interleave.
    private func writeLines(_ bytes: [UInt8]) {
        var start = 0
        while start < bytes.count {
            var end = min(start + 4096, bytes.count)
            if end < bytes.count, let nl = bytes[start..<end].lastIndex(of: 0x0A) { end = nl + 1 }
            bytes[start..<end].withUnsafeBytes { chunk in
                var off = 0
                while off < chunk.count {
                    let n = Foundation.write(fd, chunk.baseAddress! + off, chunk.count - off)
                    if n <= 0 { if errno == EINTR { continue }; return }
                    off += n
                }
            }
            start = end
        }
    }
}

/// A failure of the runtime's own setup (files, sockets), with a message for the operator.
public struct RuntimeError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Structured operational messages (not access lines) to standard error.
public enum EventLog {
    public static func emit(_ event: String, _ fields: [(String, JSONValue)] = []) {
        var object = JSONObject([("time", .string(RFC3339.format(Date(), milliseconds: true))), ("event", .string(event)),
                                 ("pid", .int(Int64(getpid())))])
        for (k, v) in fields { object[k] = v }
        var line = JSONCodec.serialize(.object(object))
        line += "\n"
        line.withUTF8 { _ = Foundation.write(2, $0.baseAddress, $0.count) }
    }
}
