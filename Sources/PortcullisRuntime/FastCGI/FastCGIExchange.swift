import CFastCGI
import Foundation
import PortcullisCore

/// One FastCGI param (`REQUEST_METHOD`, `HTTP_ACCEPT`, ...).
public struct FastCGIParam: Sendable {
    public var name: String
    public var value: String
    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// Where a response goes: the head once, then body chunks. FastCGI in production; tests may
/// collect into memory.
public protocol ResponseSink: AnyObject {
    /// False once the client side is gone; further writes are dropped.
    var isOpen: Bool { get }
    var headSent: Bool { get }
    var bytesSent: Int { get }
    var status: Int { get }
    func sendHead(status: Int, headers: HTTPHeaders)
    /// Sends an upstream's head as it arrived, cleaned as `HeaderHygiene.downstreamResponseHeaders`
    /// cleans it (the streaming path: no hook looks at the headers).
    func sendUpstreamHead(status: Int, fields: RawHeaderFields, allowAccelBuffering: Bool)
    /// The same, then the RateLimit fields of `adding` (the upstream's head holds none of their names).
    func sendUpstreamHead(status: Int, fields: RawHeaderFields, allowAccelBuffering: Bool, adding: RateLimitOutcome)
    func sendBody(_ bytes: UnsafeRawBufferPointer)
}

/// Source of the request body (FastCGI stdin).
public protocol BodySource: AnyObject {
    /// Reads up to `buffer.count` bytes; 0 at the end.
    func read(into buffer: UnsafeMutableRawBufferPointer) -> Int
}

extension ResponseSink {
    public func sendBody(_ bytes: [UInt8]) { bytes.withUnsafeBytes { sendBody($0) } }

    public func sendUpstreamHead(status: Int, fields: RawHeaderFields, allowAccelBuffering: Bool) {
        sendHead(status: status, headers: HeaderHygiene.downstreamResponseHeaders(fields.headers(), allowAccelBuffering: allowAccelBuffering))
    }

    public func sendUpstreamHead(status: Int, fields: RawHeaderFields, allowAccelBuffering: Bool, adding: RateLimitOutcome) {
        var headers = HeaderHygiene.downstreamResponseHeaders(fields.headers(), allowAccelBuffering: allowAccelBuffering)
        for (name, value) in adding.headers { headers.set(name, value) }
        sendHead(status: status, headers: headers)
    }

    /// Answers a gateway error as problem+json.
    public func sendProblem(_ problem: ProblemDetails, requestId: String) {
        let body = problem.body(requestId: requestId)
        var headers = problem.headers
        headers.set("Content-Type", ProblemDetails.contentType)
        headers.set("Content-Length", String(body.count))
        headers.set("Cache-Control", "no-store")
        sendHead(status: problem.status, headers: headers)
        sendBody(body)
    }
}

/// One FastCGI request: its params, its stdin and its stdout. A kept connection has one and
/// reuses it for each of its requests (`begin` resets it).
public final class FastCGIExchange: ResponseSink, BodySource {
    private let request: UnsafeMutablePointer<FCGX_Request>
    /// Where the answer stands, kept as one stored value: `begin` resets it with one access
    /// (four stored properties were four exclusivity checks per request).
    private struct Answer {
        var isOpen = true
        var headSent = false
        var bytesSent = 0
        var status = 0
    }
    private var answer = Answer()
    public var isOpen: Bool { answer.isOpen }
    public var headSent: Bool { answer.headSent }
    public var bytesSent: Int { answer.bytesSent }
    public var status: Int { answer.status }
    /// The correlation id, added to every response head; set by the handler once decided.
    public var requestId = ""
    /// Where heads are written, reused by the connection's requests.
    private var head = ByteBuffer(capacity: 512)

    init(request: UnsafeMutablePointer<FCGX_Request>) {
        self.request = request
    }

    deinit { head.deallocate() }

    /// A new request arrived on the connection: nothing of the previous answer remains.
    func begin() {
        answer = Answer()
        requestId = ""
    }

    /// The params as libfcgi holds them (`NAME=VALUE` C strings), read in place.
    public var paramEntries: ParamEntries { ParamEntries(envp: request.pointee.envp) }

    /// The entries of a FastCGI environment, without copying them.
    public struct ParamEntries: Sequence, IteratorProtocol {
        var envp: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        public mutating func next() -> UnsafeBufferPointer<UInt8>? {
            guard let current = envp, let entry = current.pointee else { return nil }
            envp = current + 1
            return UnsafeBufferPointer(start: UnsafeRawPointer(entry).assumingMemoryBound(to: UInt8.self), count: strlen(entry))
        }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        let n = FCGX_GetStr(base.assumingMemoryBound(to: CChar.self), Int32(min(buffer.count, Int(Int32.max))), request.pointee.in)
        return n > 0 ? Int(n) : 0
    }

    public func sendHead(status: Int, headers: HTTPHeaders) {
        writeHead(status: status) { HeaderHygiene.appendFields(headers, to: &$0) }
    }

    public func sendUpstreamHead(status: Int, fields: RawHeaderFields, allowAccelBuffering: Bool) {
        writeHead(status: status) { HeaderHygiene.appendDownstreamFields(fields, allowAccelBuffering: allowAccelBuffering, to: &$0) }
    }

    public func sendUpstreamHead(status: Int, fields: RawHeaderFields, allowAccelBuffering: Bool, adding: RateLimitOutcome) {
        writeHead(status: status) { out in
            HeaderHygiene.appendDownstreamFields(fields, allowAccelBuffering: allowAccelBuffering, to: &out)
            adding.appendHeaderFields(to: &out)
        }
    }

    /// The status line, the fields `appendFields` writes, then the request id.
    private func writeHead(status: Int, _ appendFields: (inout ByteBuffer) -> Void) {
        guard !answer.headSent else { return }
        answer = Answer(isOpen: answer.isOpen, headSent: true, bytesSent: answer.bytesSent, status: status)
        // Bytes straight into the connection's head buffer, through a local copy of it: each
        // append to the stored property would be an exclusivity check. The copy shares the
        // storage and is stored back (it may have grown into new storage).
        var head = self.head
        defer { self.head = head }
        head.removeAll()
        head.appendASCII("Status: ")
        head.appendDecimal(status)
        head.append(0x20)
        head.appendUTF8(HTTPStatus.reason(status))
        head.appendASCII("\r\n")
        appendFields(&head)
        head.appendASCII("X-Request-ID: ")
        head.appendUTF8(requestId)
        head.appendASCII("\r\n\r\n")
        write(UnsafeRawBufferPointer(head.bytes))
    }

    public func sendBody(_ bytes: UnsafeRawBufferPointer) {
        guard answer.headSent else { return }
        write(bytes)
        answer.bytesSent += bytes.count
    }

    private func write(_ bytes: UnsafeRawBufferPointer) {
        guard answer.isOpen, let base = bytes.baseAddress, bytes.count > 0 else { return }
        let n = FCGX_PutStr(base.assumingMemoryBound(to: CChar.self), Int32(bytes.count), request.pointee.out)
        if n < 0 { answer.isOpen = false }
    }
}
