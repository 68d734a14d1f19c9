import CCurl
import CPortcullis
import PortcullisCore

/// What happened to one upstream exchange.
public struct UpstreamOutcome: Sendable {
    public enum Failure: Sendable, Equatable {
        /// Refused, unreachable, reset, or an invalid answer: 502.
        case unavailable(String)
        /// Connect or total timeout: 504.
        case timedOut(String)
        /// The client went away while the body was being relayed.
        case clientGone
        /// A response hook answered a problem instead of the upstream's response.
        case refused
    }
    public var status: Int
    public var failure: Failure?
    public var target: String
    public var elapsedMs: Double
}

/// How the upstream's response reaches the client: streamed as it arrives, or collected whole
/// (up to a limit) so a response transform can rewrite it.
public enum ResponseMode {
    case stream
    case collect(limit: Int)
}

/// Decisions taken when the upstream's status and headers are known.
public struct ResponseHooks {
    /// Stream or collect this response.
    public var mode: (_ status: Int, _ headers: HTTPHeaders) -> ResponseMode
    /// Rewrites a streamed response's status and headers before they are sent; a returned
    /// problem is answered instead and the upstream body discarded.
    public var head: ((_ status: inout Int, _ headers: inout HTTPHeaders) -> ProblemDetails?)?

    public init(mode: @escaping (Int, HTTPHeaders) -> ResponseMode = { _, _ in .stream },
                head: ((inout Int, inout HTTPHeaders) -> ProblemDetails?)? = nil) {
        self.mode = mode
        self.head = head
    }

    public static var streaming: ResponseHooks { ResponseHooks() }
}

/// One request to send upstream.
public struct UpstreamRequest {
    public var method: String
    public var url: String
    public var headers: HTTPHeaders
    /// Body length announced by nginx; nil or 0 means no body.
    public var bodyLength: Int64?
    public var connectTimeoutMs: Int
    public var timeoutMs: Int

    public init(method: String, url: String, headers: HTTPHeaders, bodyLength: Int64?, connectTimeoutMs: Int, timeoutMs: Int) {
        self.method = method
        self.url = url
        self.headers = headers
        self.bodyLength = bodyLength
        self.connectTimeoutMs = connectTimeoutMs
        self.timeoutMs = timeoutMs
    }
}

/// A libcurl easy handle owned by one worker thread. Reusing it keeps upstream connections
/// alive between requests; options that never change are set once, the rest on every request.
public final class UpstreamClient {
    private let handle: UnsafeMutableRawPointer

    public init() {
        curl_global_init(Int(CURL_GLOBAL_ALL))
        handle = UnsafeMutableRawPointer(curl_easy_init()!)
        let h = handle
        pc_curl_set_long(h, CURLOPT_NOSIGNAL, 1)
        // Never route through a proxy from the environment (http_proxy, ALL_PROXY ...).
        pc_curl_set_str(h, CURLOPT_PROXY, "")
        pc_curl_set_str(h, CURLOPT_PROTOCOLS_STR, "http,https")
        pc_curl_set_long(h, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1)
        pc_curl_set_long(h, CURLOPT_TCP_NODELAY, 1)
        pc_curl_set_long(h, CURLOPT_FOLLOWLOCATION, 0)
        pc_curl_set_header_cb(h, headerCallback, nil)
        pc_curl_set_write_cb(h, writeCallback, nil)
        pc_curl_set_read_cb(h, readCallback, nil)
    }

    deinit { curl_easy_cleanup(handle) }

    /// Sends `request`, reading its body from `body` and relaying the answer to `sink`
    /// (or collecting it into the returned context when `mode` is `.collect`).
    public func perform(_ request: UpstreamRequest, body: BodySource?, sink: ResponseSink, hooks: ResponseHooks,
                        requestId: String) -> (UpstreamOutcome, CollectedResponse?) {
        let h = handle
        let transfer = Transfer(sink: sink, body: body, hooks: hooks, requestId: requestId)
        let ctx = Unmanaged.passUnretained(transfer).toOpaque()

        // Only what varies per request is set here; `init` set the rest once. Every option a
        // previous request may have changed is set again (method, body, timeouts, headers).
        pc_curl_set_str(h, CURLOPT_URL, request.url)
        pc_curl_set_long(h, CURLOPT_CONNECTTIMEOUT_MS, request.connectTimeoutMs)
        pc_curl_set_long(h, CURLOPT_TIMEOUT_MS, request.timeoutMs)
        pc_curl_set_ptr(h, CURLOPT_HEADERDATA, ctx)
        pc_curl_set_ptr(h, CURLOPT_WRITEDATA, ctx)
        pc_curl_set_ptr(h, CURLOPT_READDATA, ctx)
        pc_curl_set_str(h, CURLOPT_CUSTOMREQUEST, nil)
        pc_curl_set_long(h, CURLOPT_NOBODY, 0)

        let hasBody = (request.bodyLength ?? 0) > 0
        switch request.method {
        case "GET" where !hasBody:
            pc_curl_set_long(h, CURLOPT_HTTPGET, 1)
        case "HEAD":
            pc_curl_set_long(h, CURLOPT_HTTPGET, 1)
            pc_curl_set_long(h, CURLOPT_NOBODY, 1)
        case "POST", "PUT", "PATCH":
            fallthrough
        case _ where hasBody:
            pc_curl_set_long(h, CURLOPT_POST, 1)
            pc_curl_set_off(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(request.bodyLength ?? 0))
            if request.method != "POST" { pc_curl_set_str(h, CURLOPT_CUSTOMREQUEST, request.method) }
        default:
            pc_curl_set_long(h, CURLOPT_HTTPGET, 1)
            pc_curl_set_str(h, CURLOPT_CUSTOMREQUEST, request.method)
        }

        var list: UnsafeMutablePointer<curl_slist>?
        var sawAccept = false
        for (name, value) in request.headers {
            if name.caseInsensitiveEquals("host") || name.caseInsensitiveEquals("content-length") { continue }
            if name.caseInsensitiveEquals("accept") { sawAccept = true }
            list = curl_slist_append(list, "\(name): \(value)")
        }
        // Suppress headers curl would invent.
        if !sawAccept { list = curl_slist_append(list, "Accept:") }
        list = curl_slist_append(list, "Expect:")
        pc_curl_set_slist(h, CURLOPT_HTTPHEADER, list)
        defer {
            pc_curl_set_slist(h, CURLOPT_HTTPHEADER, nil)
            curl_slist_free_all(list)
        }

        let code = curl_easy_perform(h)
        let elapsedMs = pc_curl_total_time(h) * 1000
        var outcome = UpstreamOutcome(status: transfer.status, failure: nil, target: request.url, elapsedMs: elapsedMs)
        if code != CURLE_OK {
            if transfer.overflowed {
                return (outcome, CollectedResponse(status: transfer.status, headers: transfer.headers, body: [], overflowed: true))
            }
            if transfer.answeredProblem {
                outcome.failure = .refused
            } else if transfer.clientGone {
                outcome.failure = .clientGone
            } else {
                let message = String(cString: curl_easy_strerror(code))
                switch code {
                case CURLE_OPERATION_TIMEDOUT: outcome.failure = .timedOut(message)
                default: outcome.failure = .unavailable(message)
                }
            }
            return (outcome, nil)
        }
        if transfer.collecting {
            return (outcome, CollectedResponse(status: transfer.status, headers: transfer.headers, body: transfer.collected,
                                               overflowed: false))
        }
        // A response with no body (204, HEAD, empty 200) never reached the write callback.
        transfer.sendHeadIfNeeded()
        if transfer.answeredProblem { outcome.failure = .refused }
        return (outcome, nil)
    }
}

/// A response collected whole for transformation.
public struct CollectedResponse {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]
    /// True when the body exceeded the collection limit; `body` then holds only its start.
    public var overflowed: Bool
}

/// State shared with the C callbacks of one transfer.
private final class Transfer {
    let sink: ResponseSink
    let body: BodySource?
    let hooks: ResponseHooks
    let requestId: String
    var status = 0
    var headers = HTTPHeaders()
    var clientGone = false
    /// A head hook refused the response and a problem was sent instead.
    var answeredProblem = false
    var collecting = false
    var collectLimit = 0
    var collected: [UInt8] = []
    var overflowed = false

    init(sink: ResponseSink, body: BodySource?, hooks: ResponseHooks, requestId: String) {
        self.sink = sink
        self.body = body
        self.hooks = hooks
        self.requestId = requestId
    }

    /// One raw header line from libcurl, parsed on bytes (no Character handling on the hot path).
    func headerLine(_ raw: UnsafeRawBufferPointer) {
        var line = raw.bindMemory(to: UInt8.self)[...]
        while let last = line.last, last == 0x0D || last == 0x0A { line = line.dropLast() }
        if line.isEmpty {
            if status >= 200, case .collect(let limit) = hooks.mode(status, headers) {
                collecting = true
                collectLimit = limit
            }
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
                        String(decoding: UnsafeBufferPointer(rebasing: value), as: UTF8.self))
        }
    }

    /// Sends the (hooked) head once; false when a problem was answered instead.
    @discardableResult
    func sendHeadIfNeeded() -> Bool {
        if answeredProblem { return false }
        guard !sink.headSent else { return true }
        var outgoing = HeaderHygiene.downstreamResponseHeaders(headers)
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
        if collecting {
            if collected.count + bytes.count > collectLimit {
                overflowed = true
                return false
            }
            collected.append(contentsOf: bytes)
            return true
        }
        guard sendHeadIfNeeded() else { return false }
        sink.sendBody(bytes)
        if !sink.isOpen { clientGone = true; return false }
        return true
    }
}


private let headerCallback: pc_curl_data_cb = { ptr, size, count, userdata in
    let n = size * count
    let transfer = Unmanaged<Transfer>.fromOpaque(userdata!).takeUnretainedValue()
    transfer.headerLine(UnsafeRawBufferPointer(start: ptr, count: n))
    return n
}

private let writeCallback: pc_curl_data_cb = { ptr, size, count, userdata in
    let n = size * count
    let transfer = Unmanaged<Transfer>.fromOpaque(userdata!).takeUnretainedValue()
    return transfer.bodyChunk(UnsafeRawBufferPointer(start: ptr, count: n)) ? n : 0
}

private let readCallback: pc_curl_data_cb = { ptr, size, count, userdata in
    let transfer = Unmanaged<Transfer>.fromOpaque(userdata!).takeUnretainedValue()
    guard let body = transfer.body, let ptr else { return 0 }
    return body.read(into: UnsafeMutableRawBufferPointer(start: ptr, count: size * count))
}
