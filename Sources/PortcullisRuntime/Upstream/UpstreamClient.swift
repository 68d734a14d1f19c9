import CCurl
import CPortcullis
import PortcullisCore

/// The upstream HTTP client of one event loop: libcurl's multi interface driven by the loop
/// (`CURLMOPT_SOCKETFUNCTION` / `TIMERFUNCTION`), so many exchanges are in flight at once and
/// none blocks the loop. Connections are reused across requests of the loop (the multi
/// handle's connection cache); easy handles are pooled with their constant options set once.
public final class UpstreamClient {
    private let loop: EventLoop
    private let multi: UnsafeMutableRawPointer
    private var idleHandles: [UnsafeMutableRawPointer] = []
    private var sockets: [Int32: CurlSocketWatch] = [:]
    private lazy var timer = LoopTimer { [unowned self] in self.socketAction(fd: curlSocketTimeout, events: 0) }

    public init(loop: EventLoop) {
        curl_global_init(Int(CURL_GLOBAL_ALL))
        self.loop = loop
        multi = curl_multi_init()!
        let me = Unmanaged.passUnretained(self).toOpaque()
        pc_curl_multi_set_socket_cb(multi, curlSocketCallback, me)
        pc_curl_multi_set_timer_cb(multi, curlTimerCallback, me)
    }

    deinit {
        loop.cancel(timer)
        for handle in idleHandles { curl_easy_cleanup(handle) }
        curl_multi_cleanup(multi)
    }

    private func makeHandle() -> UnsafeMutableRawPointer {
        if let h = idleHandles.popLast() { return h }
        let h = UnsafeMutableRawPointer(curl_easy_init()!)
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
        return h
    }

    /// Starts `request`, reading its body from `body` and relaying the answer to `sink`
    /// (or collecting it when the hooks ask). `completion` runs on the loop when the exchange
    /// ends, never before `start` returns.
    public func start(_ request: UpstreamRequest, body: BodySource?, sink: ResponseSink, hooks: ResponseHooks,
                      requestId: String, completion: @escaping (UpstreamOutcome, CollectedResponse?) -> Void) {
        let h = makeHandle()
        let transfer = CurlTransfer(ResponseRelay(sink: sink, body: body, hooks: hooks, requestId: requestId, url: request.url,
                                                  allowAccelBuffering: request.allowAccelBuffering, completion: completion))
        let ctx = Unmanaged.passRetained(transfer).toOpaque()

        // Every option a previous request may have changed is set again (method, body,
        // timeouts, headers).
        pc_curl_set_str(h, CURLOPT_URL, request.url)
        pc_curl_set_long(h, CURLOPT_CONNECTTIMEOUT_MS, request.connectTimeoutMs)
        pc_curl_set_long(h, CURLOPT_TIMEOUT_MS, request.timeoutMs)
        pc_curl_set_ptr(h, CURLOPT_HEADERDATA, ctx)
        pc_curl_set_ptr(h, CURLOPT_WRITEDATA, ctx)
        pc_curl_set_ptr(h, CURLOPT_READDATA, ctx)
        pc_curl_set_ptr(h, CURLOPT_PRIVATE, ctx)
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
        if let host = request.host { list = curl_slist_append(list, "Host: \(host)") }
        var sawAccept = false, sawContentType = false
        for (name, value) in request.headers {
            if name.caseInsensitiveEquals("host") || name.caseInsensitiveEquals("content-length") { continue }
            if name.caseInsensitiveEquals("accept") { sawAccept = true }
            if name.caseInsensitiveEquals("content-type") { sawContentType = true }
            if RawText.hasEscapes(value) {
                // Bytes that are not UTF-8 go out as the client sent them.
                var line = Array(name.utf8) + Array(": ".utf8)
                RawText.append(value, to: &line)
                line.append(0)
                list = line.withUnsafeBufferPointer { $0.withMemoryRebound(to: CChar.self) { curl_slist_append(list, $0.baseAddress) } }
            } else {
                list = curl_slist_append(list, "\(name): \(value)")
            }
        }
        // Suppress headers curl would invent: in POST mode it adds
        // `Content-Type: application/x-www-form-urlencoded`, and form-parsing upstreams would
        // then read a body the client sent without a type as form fields.
        if !sawAccept { list = curl_slist_append(list, "Accept:") }
        if !sawContentType { list = curl_slist_append(list, "Content-Type:") }
        list = curl_slist_append(list, "Expect:")
        pc_curl_set_slist(h, CURLOPT_HTTPHEADER, list)
        transfer.headerList = list

        curl_multi_add_handle(multi, h)
        // Start at once (connect or send on a kept connection) rather than one loop turn later.
        socketAction(fd: curlSocketTimeout, events: 0)
    }

    fileprivate func socketAction(fd: Int32, events: Int32) {
        var running: Int32 = 0
        curl_multi_socket_action(multi, fd, events, &running)
        var queued: Int32 = 0
        while let message = curl_multi_info_read(multi, &queued) {
            var easy: UnsafeMutableRawPointer?
            var code = CURLE_OK
            guard pc_curl_msg_done(message, &easy, &code) == 1, let easy else { continue }
            finish(easy, code: code)
        }
    }

    private func finish(_ h: UnsafeMutableRawPointer, code: CURLcode) {
        let transfer = Unmanaged<CurlTransfer>.fromOpaque(pc_curl_private(h)!).takeRetainedValue()
        let elapsedMs = pc_curl_total_time(h) * 1000
        curl_multi_remove_handle(multi, h)
        pc_curl_set_slist(h, CURLOPT_HTTPHEADER, nil)
        curl_slist_free_all(transfer.headerList)
        transfer.headerList = nil
        idleHandles.append(h)
        var failure: UpstreamOutcome.Failure?
        if code != CURLE_OK {
            let message = String(cString: curl_easy_strerror(code))
            failure = code == CURLE_OPERATION_TIMEDOUT ? .timedOut(message) : .unavailable(message)
        }
        let notSent = code == CURLE_COULDNT_CONNECT || code == CURLE_COULDNT_RESOLVE_HOST
        let (outcome, collected) = transfer.relay.result(failure: failure, elapsedMs: elapsedMs, notSent: notSent)
        transfer.relay.completion?(outcome, collected)
    }

    fileprivate func watch(_ fd: Int32, what: Int32) {
        if what == CURL_POLL_REMOVE {
            if sockets.removeValue(forKey: fd) != nil { loop.deregister(fd) }
            return
        }
        var events: UInt32 = 0
        if what == CURL_POLL_IN || what == CURL_POLL_INOUT { events |= EventLoop.readable }
        if what == CURL_POLL_OUT || what == CURL_POLL_INOUT { events |= EventLoop.writable }
        if sockets[fd] != nil, loop.isRegistered(fd) {
            loop.modify(fd, events: events)
        } else {
            let watch = CurlSocketWatch(fd: fd, client: self)
            sockets[fd] = watch
            do {
                try loop.register(fd, events: events, handler: watch)
            } catch {
                sockets[fd] = nil
            }
        }
    }

    fileprivate func setTimer(_ timeoutMs: Int) {
        if timeoutMs < 0 {
            loop.cancel(timer)
        } else {
            loop.schedule(timer, afterNanos: UInt64(timeoutMs) * 1_000_000)
        }
    }
}

/// Readiness of one socket libcurl asked the loop to watch.
private final class CurlSocketWatch: LoopHandler {
    let fd: Int32
    unowned let client: UpstreamClient
    init(fd: Int32, client: UpstreamClient) {
        self.fd = fd
        self.client = client
    }
    func ready(_ events: UInt32) {
        var mask: Int32 = 0
        if events & (EventLoop.readable | EventLoop.hangup) != 0 { mask |= CURL_CSELECT_IN }
        if events & EventLoop.writable != 0 { mask |= CURL_CSELECT_OUT }
        if events & EventLoop.hangup != 0 { mask |= CURL_CSELECT_ERR }
        client.socketAction(fd: fd, events: mask)
    }
}

private let curlSocketCallback: pc_curl_socket_cb = { _, fd, what, userp, _ in
    Unmanaged<UpstreamClient>.fromOpaque(userp!).takeUnretainedValue().watch(fd, what: what)
    return 0
}

private let curlTimerCallback: pc_curl_timer_cb = { _, timeoutMs, userp in
    Unmanaged<UpstreamClient>.fromOpaque(userp!).takeUnretainedValue().setTimer(timeoutMs)
    return 0
}

/// What the C callbacks of one transfer reach: the shared response relay and curl's header list.
private final class CurlTransfer {
    let relay: ResponseRelay
    var headerList: UnsafeMutablePointer<curl_slist>?
    init(_ relay: ResponseRelay) { self.relay = relay }
}

private let headerCallback: pc_curl_data_cb = { ptr, size, count, userdata in
    let n = size * count
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(userdata!).takeUnretainedValue()
    transfer.relay.headerLine(UnsafeRawBufferPointer(start: ptr, count: n))
    return n
}

private let writeCallback: pc_curl_data_cb = { ptr, size, count, userdata in
    let n = size * count
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(userdata!).takeUnretainedValue()
    return transfer.relay.bodyChunk(UnsafeRawBufferPointer(start: ptr, count: n)) ? n : 0
}

private let readCallback: pc_curl_data_cb = { ptr, size, count, userdata in
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(userdata!).takeUnretainedValue()
    guard let body = transfer.relay.body, let ptr else { return 0 }
    return body.read(into: UnsafeMutableRawBufferPointer(start: ptr, count: size * count))
}

/// libcurl's CURL_SOCKET_TIMEOUT (a macro Swift does not import): "no socket, a timeout fired".
private let curlSocketTimeout: Int32 = -1
