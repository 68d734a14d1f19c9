import Foundation
import PortcullisCore
import Synchronization

/// One JSON line per request. Each event loop appends to its own buffer without any lock and,
/// once per loop iteration, moves what it gathered into its own hand-off slot (a lock only
/// that loop and the writer ever take); a background thread writes the slots out, so a slow
/// disk or pipe never blocks a loop and no lock is shared between loops. When a loop's share
/// of the buffer is full, lines are dropped and counted (the count is logged once space
/// returns). Lines never interleave: each is appended whole and written in pieces cut at line
/// ends of at most PIPE_BUF bytes.
public final class AccessLog: @unchecked Sendable {
    private struct Pending {
        var bytes: [UInt8] = []
        var dropped = 0
    }

    /// One loop's buffers: `local` is touched only by the loop's thread, `shared` by the loop
    /// (hand-off) and the writer (drain).
    private final class Slot: @unchecked Sendable {
        /// A `ByteBuffer`: a line's many short appends into an array cost a third of writing it.
        var local = ByteBuffer(capacity: 4096)
        var localDropped = 0
        let shared = Mutex(Pending())

        deinit { local.deallocate() }
    }

    public let path: String
    public let bufferBytes: Int
    private let fd: Int32
    private let slots: [Slot]
    private let slotCapacity: Int
    /// Slots beyond the loops: lines recorded by other threads (tools, tests) go through here.
    private let otherThreads = Mutex(Pending())
    private let wake = NSCondition()
    private let stopped = Atomic<Bool>(false)
    /// Told how many lines were dropped each time the writer finds some (the metrics file's
    /// counter).
    private let onDropped: (@Sendable (Int) -> Void)?

    /// Opens `path` for appending ("-" is standard output) and starts the writer thread;
    /// `loops` hand-off slots share `bufferBytes`.
    public init(path: String, bufferBytes: Int, loops: Int = 1, onDropped: (@Sendable (Int) -> Void)? = nil) throws {
        self.onDropped = onDropped
        if path == "-" {
            fd = 1
        } else {
            let opened = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            guard opened >= 0 else { throw RuntimeError("cannot open access log \(path): \(String(cString: strerror(errno)))") }
            fd = opened
        }
        self.path = path
        self.bufferBytes = bufferBytes
        slots = (0..<max(1, loops)).map { _ in Slot() }
        slotCapacity = max(4096, bufferBytes / max(1, loops))
        let thread = Thread { [self] in self.writerLoop() }
        thread.start()
    }

    /// Lets `write` append one newline-terminated line straight into loop `loop`'s buffer (its
    /// own thread only); a line that does not fit is taken back out and counted as dropped.
    public func record(loop: Int, _ write: (inout ByteBuffer) -> Void) {
        guard loop < slots.count else {
            var line = ByteBuffer(capacity: 512)
            defer { line.deallocate() }
            write(&line)
            return record(line: line.array)
        }
        let slot = slots[loop]
        let before = slot.local.count
        write(&slot.local)
        if slot.local.count > slotCapacity {
            slot.local.removeLast(slot.local.count - before)
            slot.localDropped += 1
        }
    }

    /// Queues one line from a thread that is not a loop.
    public func record(line: [UInt8]) {
        otherThreads.withLock { p in
            if p.bytes.count + line.count > slotCapacity { p.dropped += 1 } else { p.bytes.append(contentsOf: line) }
        }
    }

    /// Moves loop `loop`'s gathered lines to its hand-off slot (once per loop iteration).
    public func handOff(loop: Int) {
        guard loop < slots.count else { return }
        let slot = slots[loop]
        guard !slot.local.isEmpty || slot.localDropped > 0 else { return }
        let total = slot.shared.withLock { p -> Int in
            if p.bytes.count + slot.local.count > slotCapacity {
                p.dropped += slot.localDropped + slot.local.bytes.reduce(0) { $1 == 0x0A ? $0 + 1 : $0 }
            } else {
                p.bytes.append(contentsOf: slot.local.bytes)
                p.dropped += slot.localDropped
            }
            return p.bytes.count
        }
        slot.local.removeAll()
        slot.localDropped = 0
        if total > 64 * 1024 { wake.signal() }
    }

    /// Writes whatever has been handed off now (used before a worker exits).
    public func flush() {
        var dropped = 0
        for slot in slots {
            let (bytes, d) = slot.shared.withLock { p -> ([UInt8], Int) in
                let out = (p.bytes, p.dropped)
                p.bytes = []
                p.dropped = 0
                return out
            }
            dropped += d
            writeLines(bytes)
        }
        let (bytes, d) = otherThreads.withLock { p -> ([UInt8], Int) in
            let out = (p.bytes, p.dropped)
            p.bytes = []
            p.dropped = 0
            return out
        }
        writeLines(bytes)
        dropped += d
        if dropped > 0 {
            onDropped?(dropped)
            writeLines(Array("{\"event\":\"access_log_dropped\",\"lines\":\(dropped)}\n".utf8))
        }
    }

    /// Opens `path` again and puts the new file in place of the old one under the same
    /// descriptor (`dup2`, atomic for the writer thread), so after logrotate moved the file the
    /// next lines land in a new one at `path`, and lines written before land in the moved one:
    /// none is lost. Standard output is left alone. Throws the reason when `path` cannot be
    /// opened (the old file keeps being written).
    public func reopen() throws {
        guard path != "-" else { return }
        let opened = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard opened >= 0 else { throw RuntimeError("cannot reopen access log \(path): \(String(cString: strerror(errno)))") }
        defer { Foundation.close(opened) }
        // dup2 clears FD_CLOEXEC on the target; children must not inherit the log.
        guard dup2(opened, fd) >= 0, fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 else {
            throw RuntimeError("cannot reopen access log \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Flushes, stops the writer and closes the file (a reload that opened another log).
    public func close() {
        guard !stopped.exchange(true, ordering: .sequentiallyConsistent) else { return }
        wake.signal()
    }

    private func writerLoop() {
        while !stopped.load(ordering: .relaxed) {
            wake.lock()
            _ = wake.wait(until: Date().addingTimeInterval(0.1))
            wake.unlock()
            flush()
        }
        flush()
        if fd > 2 { Foundation.close(fd) }
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
