import PortcullisCore

/// One request in flight on the lean client: its bytes to write, its deadlines and its
/// response relay. It outlives a connection when it is retried on a fresh one.
final class HTTP1Exchange {
    /// Bodies up to this size are read whole before sending: one write with the head, and the
    /// request can be replayed on a fresh connection.
    static let inlineBodyLimit = 64 * 1024

    let endpoint: HTTP1Endpoint
    let relay: ResponseRelay
    let method: String
    let connectTimeoutMs: Int
    let timeoutMs: Int
    let started: UInt64
    /// Monotonic nanoseconds by which the whole exchange must be over.
    let deadline: UInt64
    /// What remains to write: the head and an inline body, or a chunk of a streamed body.
    var output: [UInt8] = []
    var written = 0
    /// Streamed body bytes not yet read from the source.
    private(set) var bodyToStream: Int64 = 0
    /// `output` holds the whole request, so it can be written again.
    let replayable: Bool
    var retried = false
    /// A response byte arrived; from then on a failure is never retried.
    var responseStarted = false
    /// The body source gave fewer bytes than announced (the exchange fails before sending).
    private(set) var bodyEndedEarly = false

    init(_ request: UpstreamRequest, endpoint: HTTP1Endpoint, target: Substring, relay: ResponseRelay, now: UInt64) {
        self.endpoint = endpoint
        self.relay = relay
        method = request.method
        connectTimeoutMs = request.connectTimeoutMs
        timeoutMs = request.timeoutMs
        started = EventLoop.monotonicNanos()
        deadline = now &+ UInt64(max(request.timeoutMs, 0)) * 1_000_000
        let bodyLength = HTTP1RequestHead.hasBody(request) ? Int(request.bodyLength ?? 0) : 0
        let inline = bodyLength <= Self.inlineBodyLimit
        output.reserveCapacity(512 + (inline ? bodyLength : 0))
        HTTP1RequestHead.write(request, target: target, hostHeader: request.host ?? endpoint.hostHeader, into: &output)
        replayable = inline
        if bodyLength > 0 {
            if inline {
                // nginx has buffered the body: these reads do not wait on the client.
                let head = output.count
                output.append(contentsOf: repeatElement(0, count: bodyLength))
                let got = read(into: head..<output.count)
                output.removeLast(bodyLength - got)
                bodyEndedEarly = got < bodyLength
            } else {
                bodyToStream = Int64(bodyLength)
            }
        }
    }

    /// The request is written whole.
    var fullySent: Bool { written == output.count && bodyToStream == 0 }

    /// Replaces the written output with the next chunk of a streamed body; false when the
    /// source ended before the announced length.
    func refill() -> Bool {
        let size = Int(min(bodyToStream, 64 * 1024))
        output.removeAll(keepingCapacity: true)
        output.append(contentsOf: repeatElement(0, count: size))
        let got = read(into: 0..<size)
        output.removeLast(size - got)
        written = 0
        bodyToStream -= Int64(got)
        return got > 0
    }

    /// Reads from the body source into `range` of `output` until it is full or the source ends.
    private func read(into range: Range<Int>) -> Int {
        guard let body = relay.body else { return 0 }
        var filled = 0
        output.withUnsafeMutableBytes { buffer in
            while filled < range.count {
                let n = body.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[(range.lowerBound + filled)..<range.upperBound]))
                if n <= 0 { break }
                filled += n
            }
        }
        return filled
    }
}
