import PortcullisCore

/// The response side of one upstream exchange, shared by both clients: takes the upstream's
/// status and headers (as curl's raw header lines or as parsed fields), applies the hooks
/// (stream or collect, head rewrite) and `HeaderHygiene` once, relays or collects the body,
/// and turns the end of the exchange into an `UpstreamOutcome`. The single place of response
/// hygiene whichever client carried the bytes.
final class ResponseRelay {
    /// The exchange's parts, set by `begin` and dropped by `clear` (a relay is reused by the
    /// lean client's next exchange: nothing of one request may reach the next).
    private var _sink: ResponseSink?
    private(set) var body: BodySource?
    private(set) var hooks = ResponseHooks.streaming
    private(set) var requestId = ""
    private(set) var url = ""
    private(set) var allowAccelBuffering = true
    private(set) var completion: ((UpstreamOutcome, CollectedResponse?) -> Void)?
    private(set) var status = 0
    private(set) var headers = HTTPHeaders()
    /// The head as the lean client parsed it, while `hooks.streamsPlainly` lets it go out as
    /// bytes (`headers` stays empty then).
    private var rawHead: RawHeaderFields?
    private(set) var clientGone = false
    /// A head hook refused the response and a problem was sent instead.
    private(set) var answeredProblem = false
    private var collecting = false
    private var discarding = false
    private var collectLimit = 0
    private var collected: [UInt8] = []
    private(set) var overflowed = false
    /// The response is swallowed for a retry (`ResponseHooks.swallow`).
    private(set) var swallowing = false

    var sink: ResponseSink { _sink! }

    /// An idle relay: `begin` gives it an exchange.
    init() {}

    convenience init(sink: ResponseSink, body: BodySource?, hooks: ResponseHooks, requestId: String, url: String, allowAccelBuffering: Bool = true,
                     completion: @escaping (UpstreamOutcome, CollectedResponse?) -> Void) {
        self.init()
        begin(sink: sink, body: body, hooks: hooks, requestId: requestId, url: url, allowAccelBuffering: allowAccelBuffering, completion: completion)
    }

    /// Starts an exchange: every field is set, none is left from a previous one.
    func begin(sink: ResponseSink, body: BodySource?, hooks: ResponseHooks, requestId: String, url: String, allowAccelBuffering: Bool,
               completion: @escaping (UpstreamOutcome, CollectedResponse?) -> Void) {
        _sink = sink
        self.body = body
        self.hooks = hooks
        self.requestId = requestId
        self.url = url
        self.allowAccelBuffering = allowAccelBuffering
        self.completion = completion
        status = 0
        headers = HTTPHeaders()
        rawHead = nil
        clientGone = false
        answeredProblem = false
        collecting = false
        discarding = false
        collectLimit = 0
        collected = []
        overflowed = false
        swallowing = false
    }

    /// Drops what the finished exchange held (its sink, body, hooks and completion keep the
    /// request alive), so an idle relay pins nothing.
    func clear() {
        _sink = nil
        body = nil
        hooks = .streaming
        completion = nil
        rawHead = nil
        headers = HTTPHeaders()
        collected = []
    }

    /// What the finished exchange amounts to. `failure` is the transport's verdict (nil: the
    /// response arrived whole); an abort the relay itself caused (collect overflow, client
    /// gone, refused head) takes precedence over it.
    func result(failure: UpstreamOutcome.Failure?, elapsedMs: Double, notSent: Bool = false) -> (UpstreamOutcome, CollectedResponse?) {
        var outcome = UpstreamOutcome(status: status, failure: nil, target: url, elapsedMs: elapsedMs)
        outcome.notSent = notSent && failure != nil
        if swallowing {
            outcome.swallowed = true
            return (outcome, nil)
        }
        if let failure {
            if overflowed {
                return (outcome, CollectedResponse(status: status, headers: headers, body: [], overflowed: true))
            }
            if answeredProblem {
                outcome.failure = .refused
            } else if clientGone {
                outcome.failure = .clientGone
            } else {
                outcome.failure = failure
            }
            return (outcome, nil)
        }
        if collecting || discarding {
            return (outcome, CollectedResponse(status: status, headers: headers, body: collected, overflowed: false, discarded: discarding))
        }
        // A response with no body (204, HEAD, empty 200) never reached `bodyChunk`.
        sendHeadIfNeeded()
        if answeredProblem { outcome.failure = .refused }
        return (outcome, nil)
    }

    /// The final (non-1xx) response's status and header fields, as the lean client's parser
    /// produced them.
    func head(status: Int, fields: RawHeaderFields) {
        self.status = status
        if hooks.streamsPlainly, hooks.rateLimitFields == nil || !fields.containsName(where: RateLimitOutcome.isFieldName) {
            if hooks.swallow?(status) == true {
                swallowing = true
            } else {
                rawHead = fields
            }
        } else {
            headers = fields.headers()
            headComplete()
        }
    }

    /// One raw header line from libcurl, parsed on bytes (no Character handling on the hot path).
    func headerLine(_ raw: UnsafeRawBufferPointer) {
        var line = raw.bindMemory(to: UInt8.self)[...]
        while let last = line.last, last == 0x0D || last == 0x0A { line = line.dropLast() }
        if line.isEmpty {
            if status >= 200 { headComplete() }
        } else if line.starts(with: "HTTP/".utf8) {
            // A new status line: a previous 1xx block is discarded.
            status = 502
            if let space = line.firstIndex(of: 0x20) {
                var code = 0, digits = 0
                for c in line[(space + 1)...] {
                    guard c >= 0x30 && c <= 0x39, digits < 3 else { break }
                    code = code * 10 + Int(c - 0x30)
                    digits += 1
                }
                if digits == 3 { status = code }
            }
            headers = HTTPHeaders()
        } else if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
            var value = line[(colon + 1)...]
            while let f = value.first, f == 0x20 || f == 0x09 { value = value.dropFirst() }
            while let l = value.last, l == 0x20 || l == 0x09 { value = value.dropLast() }
            headers.add(String(decoding: UnsafeBufferPointer(rebasing: line[..<colon]), as: UTF8.self),
                        RawText.decode(UnsafeBufferPointer(rebasing: value)))
        }
    }

    /// The head is known: stream or collect.
    private func headComplete() {
        if hooks.swallow?(status) == true {
            swallowing = true
            return
        }
        switch hooks.mode(status, headers) {
        case .collect(let limit):
            collecting = true
            collectLimit = limit
        case .discard:
            discarding = true
        case .stream:
            break
        }
    }

    /// Sends the (hooked) head once; false when a problem was answered instead.
    @discardableResult
    func sendHeadIfNeeded() -> Bool {
        if answeredProblem { return false }
        guard !sink.headSent else { return true }
        if let rawHead {
            if let added = hooks.rateLimitFields {
                sink.sendUpstreamHead(status: status, fields: rawHead, allowAccelBuffering: allowAccelBuffering, adding: added.outcome)
            } else {
                sink.sendUpstreamHead(status: status, fields: rawHead, allowAccelBuffering: allowAccelBuffering)
            }
            self.rawHead = nil
            return true
        }
        var outgoing = HeaderHygiene.downstreamResponseHeaders(headers, allowAccelBuffering: allowAccelBuffering)
        if let added = hooks.rateLimitFields {
            for (name, value) in added.outcome.headers { outgoing.set(name, value) }
        }
        var code = status
        if let hook = hooks.head, let problem = hook(&code, &outgoing) {
            sink.sendProblem(problem, requestId: requestId)
            answeredProblem = true
            return false
        }
        sink.sendHead(status: code, headers: outgoing)
        return true
    }

    /// Returns false to abort the transfer.
    func bodyChunk(_ bytes: UnsafeRawBufferPointer) -> Bool {
        if discarding || swallowing { return true }
        if collecting {
            let size = collected.count + bytes.count
            if size > collectLimit {
                switch hooks.overflow?(status, headers, size) {
                case .collect(let limit)? where limit >= size:
                    collectLimit = limit
                case .stream?:
                    collecting = false
                    guard sendHeadIfNeeded() else { return false }
                    if !collected.isEmpty { collected.withUnsafeBytes { sink.sendBody($0) } }
                    collected = []
                    return relay(bytes)
                case .discard?:
                    collecting = false
                    discarding = true
                    collected = []
                    return true
                default:
                    overflowed = true
                    return false
                }
            }
            collected.append(contentsOf: bytes)
            return true
        }
        guard sendHeadIfNeeded() else { return false }
        return relay(bytes)
    }

    private func relay(_ bytes: UnsafeRawBufferPointer) -> Bool {
        sink.sendBody(bytes)
        if !sink.isOpen { clientGone = true; return false }
        return true
    }
}
