import Synchronization

/// The request a loop last started (its request id and route), readable from another thread:
/// when a loop stays stuck in one batch of work past the hard timeout, the worker's heartbeat
/// thread logs which request it is. The loop writes it once per request into a fixed buffer
/// under a sequence counter (no lock, no allocation); a reader that raced a write sees an odd
/// or changed counter and reports nothing rather than a torn value.
final class LoopActivity: @unchecked Sendable {
    /// Bytes kept of each of the two texts (request ids are at most 128 bytes).
    static let fieldBytes = 128
    private let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: 2 * (fieldBytes + 1))
    private let sequence = Atomic<UInt64>(0)

    init() { buffer.initialize(repeating: 0, count: 2 * (Self.fieldBytes + 1)) }
    deinit { buffer.deallocate() }

    /// Loop thread only.
    func note(requestId: String, route: String) {
        let s = sequence.load(ordering: .relaxed)
        sequence.store(s &+ 1, ordering: .releasing)
        copy(requestId, to: buffer)
        copy(route, to: buffer + Self.fieldBytes + 1)
        sequence.store(s &+ 2, ordering: .releasing)
    }

    private func copy(_ text: String, to field: UnsafeMutablePointer<UInt8>) {
        var text = text
        text.withUTF8 { bytes in
            let n = min(bytes.count, Self.fieldBytes)
            field.pointee = UInt8(n)
            if n > 0 { (field + 1).update(from: bytes.baseAddress!, count: n) }
        }
    }

    /// Any thread: the last request started, nil if none or if a write was in progress.
    func read() -> (requestId: String, route: String)? {
        let before = sequence.load(ordering: .acquiring)
        guard before != 0, before & 1 == 0 else { return nil }
        let id = text(at: buffer), route = text(at: buffer + Self.fieldBytes + 1)
        guard sequence.load(ordering: .acquiring) == before else { return nil }
        return (id, route)
    }

    private func text(at field: UnsafeMutablePointer<UInt8>) -> String {
        String(decoding: UnsafeBufferPointer(start: field + 1, count: Int(min(field.pointee, UInt8(Self.fieldBytes)))), as: UTF8.self)
    }
}
