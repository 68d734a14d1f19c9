import Glibc
import PortcullisCore

/// The lean upstream client of one event loop, for plain-HTTP targets reachable without DNS
/// (`http://` with an IP literal or `localhost`): the request head written directly (one
/// `send` with a small body), the response parsed by http-parser from a per-loop read buffer,
/// kept connections reused per target (LIFO, bounded). Same contract as `UpstreamClient`,
/// which keeps https and host names.
public final class HTTP1Client {
    /// Idle kept connections per target and loop beyond which a finished one is closed.
    public static let idleLimit = 64

    let loop: EventLoop
    /// Where every connection of the loop reads (the parser consumes it before the next read).
    let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    /// Per URL authority; nil for one that needs curl.
    private var endpoints: [String: HTTP1Endpoint?] = [:]
    /// Completions that must not run inside `start`, run from a zero-delay timer.
    private var deferred: [() -> Void] = []
    private lazy var deferTimer = LoopTimer { [unowned self] in self.runDeferred() }
    private var starting = false
    /// Completed exchanges kept for the next requests (object, relay and output buffer reused).
    private var spare: [HTTP1Exchange] = []
    static let spareLimit = 64
    /// Exchange objects created so far (completed ones are reused instead).
    public private(set) var exchangesCreated = 0
    /// Connections opened so far (kept connections are reused instead).
    public private(set) var connectionsOpened = 0

    public init(loop: EventLoop) { self.loop = loop }

    deinit {
        for case let endpoint? in endpoints.values {
            for connection in endpoint.idle { close(connection) }
        }
        readBuffer.deallocate()
    }

    /// True when this client carries requests to `url` (else they need curl).
    public func handles(_ url: String) -> Bool { route(url) != nil }

    private var lastRoute: (authority: String, endpoint: HTTP1Endpoint)?

    private func route(_ url: String) -> (HTTP1Endpoint, Substring)? {
        guard let parsed = HTTP1URL(url) else { return nil }
        // The last target asked for, without hashing: a route's requests repeat it.
        if let last = lastRoute, last.authority == parsed.authority { return (last.endpoint, parsed.target) }
        let key = String(parsed.authority)
        if let known = endpoints[key] {
            if let known { lastRoute = (key, known) }
            guard let known else { return nil }
            return (known, parsed.target)
        }
        let endpoint = HTTP1Endpoint(authority: parsed.authority)
        endpoints[key] = .some(endpoint)
        if let endpoint { lastRoute = (key, endpoint) }
        return endpoint.map { ($0, parsed.target) }
    }

    /// Starts `request` (its URL must satisfy `handles`), reading its body from `body` and
    /// relaying the answer to `sink` (or collecting it when the hooks ask). `completion` runs
    /// on the loop when the exchange ends, never before `start` returns.
    public func start(_ request: UpstreamRequest, body: BodySource?, sink: ResponseSink, hooks: ResponseHooks,
                      requestId: String, completion: @escaping (UpstreamOutcome, CollectedResponse?) -> Void) {
        if startIfHandled(request, body: body, sink: sink, hooks: hooks, requestId: requestId, completion: completion) { return }
        let relay = ResponseRelay(sink: sink, body: body, hooks: hooks, requestId: requestId, url: request.url,
                                  allowAccelBuffering: request.allowAccelBuffering, completion: completion)
        let started = EventLoop.monotonicNanos()
        later { self.finish(relay, started: started, failure: .unavailable("not a plain-HTTP address: \(request.url)")) }
    }

    /// `start` when this client carries `request` (`handles` its URL); false, with nothing
    /// started, when it needs curl. The URL is looked at once (`handles` then `start` split it
    /// twice per request).
    public func startIfHandled(_ request: UpstreamRequest, body: BodySource?, sink: ResponseSink, hooks: ResponseHooks,
                               requestId: String, completion: @escaping (UpstreamOutcome, CollectedResponse?) -> Void) -> Bool {
        guard let (endpoint, target) = route(request.url) else { return false }
        starting = true
        defer { starting = false }
        let exchange = spare.popLast() ?? newExchange()
        exchange.relay.begin(sink: sink, body: body, hooks: hooks, requestId: requestId, url: request.url,
                             allowAccelBuffering: request.allowAccelBuffering, completion: completion)
        exchange.begin(request, endpoint: endpoint, target: target, now: loop.now)
        if exchange.bodyEndedEarly {
            complete(exchange, failure: .unavailable("the request body ended before its announced length"))
        } else {
            dispatch(exchange, fresh: false)
        }
        return true
    }

    private func newExchange() -> HTTP1Exchange {
        exchangesCreated += 1
        return HTTP1Exchange()
    }

    // MARK: connections

    private func dispatch(_ exchange: HTTP1Exchange, fresh: Bool) {
        if !fresh, let kept = exchange.endpoint.idle.popLast() {
            return kept.begin(exchange)
        }
        switch open(exchange.endpoint) {
        case .success(let connection): connection.begin(exchange)
        case .failure(let error): complete(exchange, failure: .unavailable(error.description), notSent: true)
        }
    }

    /// A kept connection failed before answering: the exchange is written again on a new one.
    func retry(_ exchange: HTTP1Exchange) {
        exchange.retried = true
        exchange.written = 0
        dispatch(exchange, fresh: true)
    }

    /// A non-blocking connect with TCP_NODELAY; completes on writability unless immediate.
    private func open(_ endpoint: HTTP1Endpoint) -> Result<HTTP1Connection, RuntimeError> {
        let family = Int32(endpoint.address.ss_family)
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(RuntimeError("socket: \(String(cString: strerror(errno)))")) }
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let rc = withUnsafePointer(to: endpoint.address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, endpoint.addressLength) }
        }
        let pending = rc != 0 && errno == EINPROGRESS
        if rc != 0 && !pending {
            let message = "connect to \(endpoint.label): \(String(cString: strerror(errno)))"
            Glibc.close(fd)
            return .failure(RuntimeError(message))
        }
        let connection = HTTP1Connection(fd: fd, endpoint: endpoint, client: self, connecting: pending)
        do {
            try loop.register(fd, events: pending ? EventLoop.readable | EventLoop.writable : EventLoop.readable, handler: connection)
        } catch {
            Glibc.close(fd)
            return .failure(error)
        }
        connectionsOpened += 1
        return .success(connection)
    }

    /// Keeps a connection that finished cleanly for the next request to its target.
    func park(_ connection: HTTP1Connection) {
        guard connection.endpoint.idle.count < Self.idleLimit else { return close(connection) }
        connection.endpoint.idle.append(connection)
    }

    /// An idle connection turned readable: the upstream closed it (or misbehaves).
    func dropIdle(_ connection: HTTP1Connection) {
        if let i = connection.endpoint.idle.lastIndex(where: { $0 === connection }) {
            connection.endpoint.idle.remove(at: i)
        }
        close(connection)
    }

    func close(_ connection: HTTP1Connection) {
        loop.deregister(connection.fd)
        Glibc.close(connection.fd)
    }

    // MARK: completion

    /// `notSent`: the failure came before a byte of the request reached the upstream.
    func complete(_ exchange: HTTP1Exchange, failure: UpstreamOutcome.Failure?, notSent: Bool = false) {
        if starting {
            return later { self.finish(exchange, failure: failure, notSent: notSent) }
        }
        finish(exchange, failure: failure, notSent: notSent)
    }

    /// Ends `exchange` and keeps it for a later request: its outcome and completion are taken
    /// first, so the completion may start the next try (on this very object).
    private func finish(_ exchange: HTTP1Exchange, failure: UpstreamOutcome.Failure?, notSent: Bool) {
        let completion = exchange.relay.completion
        let (outcome, collected) = result(exchange.relay, started: exchange.started, failure: failure, notSent: notSent)
        exchange.clear()
        if spare.count < Self.spareLimit { spare.append(exchange) }
        completion?(outcome, collected)
    }

    private func finish(_ relay: ResponseRelay, started: UInt64, failure: UpstreamOutcome.Failure?, notSent: Bool = false) {
        let (outcome, collected) = result(relay, started: started, failure: failure, notSent: notSent)
        relay.completion?(outcome, collected)
    }

    private func result(_ relay: ResponseRelay, started: UInt64, failure: UpstreamOutcome.Failure?, notSent: Bool) -> (UpstreamOutcome, CollectedResponse?) {
        let elapsedMs = Double(EventLoop.monotonicNanos() &- started) / 1_000_000
        return relay.result(failure: failure, elapsedMs: elapsedMs, notSent: notSent)
    }

    private func later(_ work: @escaping () -> Void) {
        deferred.append(work)
        loop.schedule(deferTimer, afterNanos: 0)
    }

    private func runDeferred() {
        let work = deferred
        deferred.removeAll()
        for item in work { item() }
    }
}
