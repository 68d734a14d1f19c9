import CHTTPParser
import PortcullisCore

/// One connection's response parser: nodejs http-parser (Debian's libhttp-parser) fed with
/// the bytes as they arrive. It frames the body (Content-Length, chunked, until close),
/// skips 1xx interim responses and knows keep-alive; status and header fields (bytes, `RawHeaderFields`) go to the exchange's
/// `ResponseRelay` once the final head is complete, body bytes straight from the read buffer.
final class HTTP1ResponseParser {
    enum Progress: Equatable {
        case incomplete
        /// The final response ended; `keepAlive` when the connection may carry another request.
        case complete(keepAlive: Bool)
        /// The relay stopped the body (collect overflow, client gone, refused head).
        case stopped
        case invalid(String)
    }

    private let parser = UnsafeMutablePointer<http_parser>.allocate(capacity: 1)
    private var relay: ResponseRelay?
    private var skipsBody = false
    private var status = 0
    /// The head's fields as bytes, reused from one response to the next. Behind a pointer:
    /// a stored property of the class would be checked for exclusive access on every
    /// callback (several per header field).
    private let fields: UnsafeMutablePointer<RawHeaderFields> = {
        let p = UnsafeMutablePointer<RawHeaderFields>.allocate(capacity: 1)
        p.initialize(to: RawHeaderFields())
        return p
    }()
    private var complete = false
    private var keepAlive = false
    /// Bytes followed the final response: the connection is not in a known state.
    private var trailing = false
    private var relayStopped = false

    init() {}

    deinit {
        parser.deallocate()
        fields.deinitialize(count: 1)
        fields.deallocate()
    }

    /// Starts a response to a request sent with `method`.
    func reset(relay: ResponseRelay, method: String) {
        http_parser_init(parser, HTTP_RESPONSE)
        parser.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        self.relay = relay
        skipsBody = method == "HEAD"
        complete = false
        keepAlive = false
        trailing = false
        relayStopped = false
        beginMessage()
    }

    /// Drops the exchange's relay (and what it holds) once the exchange is over.
    func release() { relay = nil }

    /// Parses `bytes` as they arrived.
    func feed(_ bytes: UnsafeRawBufferPointer) -> Progress {
        _ = http_parser_execute(parser, Self.settings, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
        return progress()
    }

    /// The connection reached its end: completes a response delimited by the close.
    func feedEOF() -> Progress {
        _ = http_parser_execute(parser, Self.settings, nil, 0)
        if case .incomplete = progress() { return .invalid("connection closed before the response ended") }
        return progress()
    }

    private func progress() -> Progress {
        if complete { return .complete(keepAlive: keepAlive && !trailing) }
        if relayStopped { return .stopped }
        let code = parser.pointee.http_errno
        if code != 0 { return .invalid(String(cString: http_errno_description(http_errno(rawValue: code)))) }
        if parser.pointee.upgrade != 0 { return .invalid("switching protocols is not supported") }
        return .incomplete
    }

    // MARK: callbacks

    private func beginMessage() {
        status = 0
        fields.pointee.removeAll()
    }

    /// 1 tells http-parser the response has no body (HEAD, 204, 304, 1xx) whatever its
    /// framing headers say, as curl treats them.
    private func headersComplete() -> Int32 {
        fields.pointee.finish()
        status = Int(parser.pointee.status_code)
        if status < 200 { return 1 }
        relay?.head(status: status, fields: fields.pointee)
        return skipsBody || status == 204 || status == 304 ? 1 : 0
    }

    private func messageComplete() -> Int32 {
        // An interim response ended: the final one follows on the same bytes.
        guard status >= 200 else { return 0 }
        complete = true
        keepAlive = http_should_keep_alive(parser) != 0
        return 0
    }

    nonisolated(unsafe) private static let settings: UnsafeMutablePointer<http_parser_settings> = {
        let s = UnsafeMutablePointer<http_parser_settings>.allocate(capacity: 1)
        http_parser_settings_init(s)
        s.pointee.on_message_begin = { p in
            let me = HTTP1ResponseParser.of(p)
            if me.complete {
                me.trailing = true
                return 1
            }
            me.beginMessage()
            return 0
        }
        s.pointee.on_header_field = { p, at, length in
            HTTP1ResponseParser.of(p).fields.pointee.appendName(UnsafeRawBufferPointer(start: at, count: length))
            return 0
        }
        s.pointee.on_header_value = { p, at, length in
            HTTP1ResponseParser.of(p).fields.pointee.appendValue(UnsafeRawBufferPointer(start: at, count: length))
            return 0
        }
        s.pointee.on_headers_complete = { p in HTTP1ResponseParser.of(p).headersComplete() }
        s.pointee.on_body = { p, at, length in
            let me = HTTP1ResponseParser.of(p)
            if me.relay?.bodyChunk(UnsafeRawBufferPointer(start: at, count: length)) == false {
                me.relayStopped = true
                return 1
            }
            return 0
        }
        s.pointee.on_message_complete = { p in HTTP1ResponseParser.of(p).messageComplete() }
        return s
    }()

    private static func of(_ p: UnsafeMutablePointer<http_parser>?) -> HTTP1ResponseParser {
        Unmanaged<HTTP1ResponseParser>.fromOpaque(p!.pointee.data).takeUnretainedValue()
    }
}
