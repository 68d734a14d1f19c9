import PortcullisCore

/// One request in flight on the lean client: its bytes to write, its deadlines and its
/// response relay. It outlives a connection when it is retried on a fresh one. The client
/// reuses an exchange (its object, its relay and its output buffer) for a later request once
/// this one has completed: `begin` sets every field.
final class HTTP1Exchange {
    /// Bodies up to this size are read whole before sending: one write with the head, and the
    /// request can be replayed on a fresh connection.
    static let inlineBodyLimit = 64 * 1024
    /// Output capacity kept for the next request (a larger buffer, from a big inline body or
    /// a streamed chunk, is given back).
    static let keptOutputCapacity = 4096

    private(set) var endpoint: HTTP1Endpoint!
    let relay = ResponseRelay()
    private(set) var method = ""
    private(set) var connectTimeoutMs = 0
    private(set) var timeoutMs = 0
    private(set) var started: UInt64 = 0
    /// Monotonic nanoseconds by which the whole exchange must be over.
    private(set) var deadline: UInt64 = 0
    /// What remains to write: the head and an inline body, or a chunk of a streamed body. A
    /// `ByteBuffer`: the head's short pieces appended to an array cost several times more.
    private(set) var output = ByteBuffer(capacity: 512)
    var written = 0
    /// Streamed body bytes not yet read from the source.
    private(set) var bodyToStream: Int64 = 0
    /// `output` holds the whole request, so it can be written again.
    private(set) var replayable = false
    var retried = false
    /// A response byte arrived; from then on a failure is never retried.
    var responseStarted = false
    /// The body source gave fewer bytes than announced (the exchange fails before sending).
    private(set) var bodyEndedEarly = false

    init() {}

    deinit { output.deallocate() }

    /// Starts `request` to `endpoint`; the relay must have been begun for it.
    func begin(_ request: UpstreamRequest, endpoint: HTTP1Endpoint, target: Substring, now: UInt64) {
        self.endpoint = endpoint
        method = request.method
        connectTimeoutMs = request.connectTimeoutMs
        timeoutMs = request.timeoutMs
        started = EventLoop.monotonicNanos()
        deadline = now &+ UInt64(max(request.timeoutMs, 0)) * 1_000_000
        written = 0
        bodyToStream = 0
        retried = false
        responseStarted = false
        bodyEndedEarly = false
        let bodyLength = HTTP1RequestHead.hasBody(request) ? Int(request.bodyLength ?? 0) : 0
        let inline = bodyLength <= Self.inlineBodyLimit
        output.removeAll()
        output.reserveCapacity(512 + (inline ? bodyLength : 0))
        HTTP1RequestHead.write(request, target: target, hostHeader: request.host ?? endpoint.hostHeader, into: &output)
        replayable = inline
        if bodyLength > 0 {
            if inline {
                // nginx has buffered the body: these reads do not wait on the client.
                var got = 0
                output.append(upTo: bodyLength) { space in
                    got = read(into: space)
                    return got
                }
                bodyEndedEarly = got < bodyLength
            } else {
                bodyToStream = Int64(bodyLength)
            }
        }
    }

    /// The exchange completed: drops what belongs to its request before the object waits for
    /// the next one.
    func clear() {
        relay.clear()
        endpoint = nil
        if output.capacity > Self.keptOutputCapacity {
            output.deallocate()
            output = ByteBuffer(capacity: 512)
        } else {
            output.removeAll()
        }
    }

    /// The request is written whole.
    var fullySent: Bool { written == output.count && bodyToStream == 0 }

    /// Replaces the written output with the next chunk of a streamed body; false when the
    /// source ended before the announced length.
    func refill() -> Bool {
        let size = Int(min(bodyToStream, 64 * 1024))
        output.removeAll()
        var got = 0
        output.append(upTo: size) { space in
            got = read(into: space)
            return got
        }
        written = 0
        bodyToStream -= Int64(got)
        return got > 0
    }

    /// Reads from the body source into `space` until it is full or the source ends.
    private func read(into space: UnsafeMutableRawBufferPointer) -> Int {
        guard let body = relay.body else { return 0 }
        var filled = 0
        while filled < space.count {
            let n = body.read(into: UnsafeMutableRawBufferPointer(rebasing: space[filled...]))
            if n <= 0 { break }
            filled += n
        }
        return filled
    }
}
