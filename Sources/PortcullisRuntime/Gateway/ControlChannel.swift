import CPortcullis
import Foundation

/// The master ↔ worker channel: a SOCK_SEQPACKET socketpair, one message per line of text,
/// descriptors (handed-over FastCGI connections) passed alongside with SCM_RIGHTS. Messages
/// are atomic, so loop threads and the main thread may send at once.
///
/// worker → master: `ready G`, `prepared G`, `prepare_failed G reason`, `boot_failed G reason`, `handoff` (+ fds)
/// master → worker: `prepare G bundle-path`, `commit G`, `abort G`, `adopt` (+ fds)
public struct ControlChannel: Sendable {
    public let fd: Int32

    public init(fd: Int32) { self.fd = fd }

    /// A connected pair: (master's end, worker's end).
    public static func pair() throws -> (ControlChannel, ControlChannel) {
        var fds: [Int32] = [-1, -1]
        let rc = pc_socketpair(&fds)
        guard rc == 0 else { throw RuntimeError("socketpair: \(String(cString: strerror(-rc)))") }
        return (ControlChannel(fd: fds[0]), ControlChannel(fd: fds[1]))
    }

    /// Sends `text` with `fds` (in batches of at most 64 descriptors, the text repeated).
    @discardableResult
    public func send(_ text: String, fds: [Int32] = []) -> Bool {
        var bytes = Array(text.utf8)
        if bytes.isEmpty { bytes = [0x20] }
        var start = 0
        repeat {
            let batch = Array(fds[start..<min(fds.count, start + Int(PC_MAX_PASSED_FDS))])
            let rc = bytes.withUnsafeBytes { b in
                batch.withUnsafeBufferPointer { f in pc_send_fds(fd, f.baseAddress, Int32(batch.count), b.baseAddress, b.count) }
            }
            if rc < 0 { return false }
            start += batch.count
        } while start < fds.count
        return true
    }

    /// One message, without blocking: nil when none is waiting; `closed` when the peer is gone.
    public func receive() -> Received? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        var fds = [Int32](repeating: -1, count: Int(PC_MAX_PASSED_FDS))
        var count: Int32 = 0
        let n = buffer.withUnsafeMutableBytes { b in
            fds.withUnsafeMutableBufferPointer { f in pc_recv_fds(fd, f.baseAddress, &count, b.baseAddress, b.count) }
        }
        if n == 0 { return .closed }
        if n < 0 { return -n == EAGAIN || -n == EWOULDBLOCK ? nil : .closed }
        let text = String(decoding: buffer[0..<Int(n)], as: UTF8.self).trimmingCharacters(in: .whitespaces)
        return .message(text.split(separator: " ", maxSplits: 2).map(String.init), Array(fds[0..<Int(count)]))
    }

    public enum Received {
        /// Words of the message (at most 3: verb, generation, rest) and the descriptors passed with it.
        case message([String], [Int32])
        case closed
    }
}
