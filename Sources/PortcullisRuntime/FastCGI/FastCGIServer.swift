import CFastCGI
import CPortcullis
import Foundation
import PortcullisCore
import Synchronization

/// A worker's request engine: `loops` threads, each running one event loop over its kept
/// FastCGI connections and its upstream connections. The listening socket sits in every loop
/// with `EPOLLEXCLUSIVE`, so a new connection wakes one idle loop of the whole pool.
///
/// The configuration is swapped inside the running loops: `publish` hands a new gateway to
/// every loop; each takes it for the next request it starts, requests in flight finish on the
/// one they began with.
///
/// Retiring (scale down, stop) never drops a request nginx has written: a loop stops accepting,
/// serves what it already accepted, and hands its idle kept connections to `handOff` (the
/// master passes them to a surviving worker) instead of closing them.
public final class WorkerServer: @unchecked Sendable {
    let listenFD: Int32
    private let loopCount: Int
    private let published: Mutex<Gateway>
    let publishedVersion = Atomic<Int>(0)
    let handOff: @Sendable ([Int32]) -> Void
    private var workers: [LoopWorker] = []
    private let nextAdopter = Atomic<Int>(0)
    /// Loops still running; the worker exits when none is left.
    public let runningLoops = Atomic<Int>(0)

    public init(listenFD: Int32, loops: Int, gateway: Gateway, handOff: @escaping @Sendable ([Int32]) -> Void) {
        self.listenFD = listenFD
        self.loopCount = max(1, loops)
        self.published = Mutex(gateway)
        self.handOff = handOff
        // One open file description shared by every worker: losing the race for a connection
        // is EAGAIN, never a block.
        _ = fcntl(listenFD, F_SETFL, fcntl(listenFD, F_GETFL) | O_NONBLOCK)
        FCGX_Init()
    }

    /// The gateway new requests use.
    var currentGateway: Gateway { published.withLock { $0 } }

    /// Starts the loop threads and returns once every loop accepts.
    public func start() {
        let ready = DispatchSemaphore(value: 0)
        runningLoops.store(loopCount, ordering: .sequentiallyConsistent)
        for index in 0..<loopCount {
            let thread = Thread { [self] in
                let worker = LoopWorker(index: index, server: self)
                Self.register(worker, in: self)
                ready.signal()
                worker.run()
                runningLoops.subtract(1, ordering: .sequentiallyConsistent)
            }
            thread.stackSize = 1 << 20
            thread.name = "loop-\(index)"
            thread.start()
        }
        for _ in 0..<loopCount { ready.wait() }
    }

    private let workersLock = NSLock()
    private static func register(_ worker: LoopWorker, in server: WorkerServer) {
        server.workersLock.withLock { server.workers.append(worker) }
    }
    private var allWorkers: [LoopWorker] { workersLock.withLock { workers } }

    /// Serves the next requests with `gateway` (config reload inside the running worker).
    public func publish(_ gateway: Gateway) {
        published.withLock { $0 = gateway }
        publishedVersion.add(1, ordering: .sequentiallyConsistent)
    }

    /// Takes over kept connections another worker handed over; spread over the loops.
    public func adopt(_ fds: [Int32]) {
        let workers = allWorkers
        guard !workers.isEmpty else {
            for fd in fds { close(fd) }
            return
        }
        for fd in fds {
            let worker = workers[nextAdopter.add(1, ordering: .relaxed).newValue % workers.count]
            worker.loop.post { worker.adopt(fd) }
        }
    }

    /// Requests answered by all loops, and since when (monotonic ns) the loop that has been
    /// busy longest has been inside one batch of work (0: every loop waits for events). Read
    /// by the worker's main thread for the master's worker table.
    public func health() -> Health {
        var health = Health()
        for worker in allWorkers {
            health.requests &+= worker.served.load(ordering: .relaxed)
            let since = worker.loop.busySince.load(ordering: .relaxed)
            if since != 0 { health.busyLoops += 1 }
            if since != 0 && (health.busySince == 0 || since < health.busySince) {
                health.busySince = since
                health.busiestLoop = worker.loop.index
            }
        }
        return health
    }

    public struct Health: Sendable {
        public var requests: UInt64 = 0
        public var busySince: UInt64 = 0
        /// The loop that has been busy longest (meaningful when `busySince` is not 0).
        public var busiestLoop = 0
        /// Loops inside a batch of work right now.
        public var busyLoops: UInt64 = 0
    }

    /// The request id and route of the request loop `index` last started.
    public func lastStarted(loop index: Int) -> (requestId: String, route: String)? {
        allWorkers.first { $0.loop.index == index }?.activity.read()
    }

    /// Stops accepting; each loop ends once its requests are done (or `graceSeconds` passed),
    /// handing its idle connections to `handOff`.
    public func beginShutdown(graceSeconds: Int) {
        for worker in allWorkers {
            worker.loop.post { worker.retire(graceSeconds: graceSeconds) }
        }
    }
}

/// The listening socket's readiness in one loop.
private final class Listener: LoopHandler {
    unowned let owner: LoopWorker
    init(owner: LoopWorker) { self.owner = owner }
    func ready(_ events: UInt32) { owner.acceptPending(limit: 64) }
}

/// Everything one loop thread owns: its loop, its connections, its upstream client and the
/// per-loop view of the gateway (rate limiter, target rotation).
/// Touched only on its loop's thread; other threads reach it through `loop.post`.
final class LoopWorker: @unchecked Sendable {
    let loop: EventLoop
    unowned let server: WorkerServer
    let upstream: Upstreams
    private var connections: [ObjectIdentifier: FastCGIConnection] = [:]
    private var listener: Listener!
    private(set) var retiring = false
    private var busy = 0
    /// Requests answered; written by this loop only (a plain load and store), read by the
    /// worker's main thread.
    let served = Atomic<UInt64>(0)
    /// The request this loop last started, for the hard-timeout log.
    let activity = LoopActivity()
    private var context: LoopContext
    private var contextVersion: Int
    private var graceTimer: LoopTimer?
    private let scoreboard: LoopScoreboard

    init(index: Int, server: WorkerServer) {
        loop = EventLoop(index: index)
        self.server = server
        upstream = Upstreams(loop: loop)
        scoreboard = LoopScoreboard(loop: index)
        contextVersion = server.publishedVersion.load(ordering: .sequentiallyConsistent)
        context = LoopContext(gateway: server.currentGateway, loop: loop)
        listener = Listener(owner: self)
        do {
            try loop.register(server.listenFD, events: EventLoop.readable | EventLoop.exclusive, handler: listener)
        } catch {
            fatalError("cannot watch the FastCGI socket: \(error)")
        }
        loop.afterBatch.append { [unowned self] in self.context.gateway.accessLog.handOff(loop: self.loop.index) }
    }

    func run() {
        loop.run()
        // The loop ended: hand the log lines over before the thread goes.
        context.gateway.accessLog.handOff(loop: loop.index)
    }

    /// The gateway view for a request starting now (a published reload is taken here).
    var currentContext: LoopContext {
        let version = server.publishedVersion.load(ordering: .relaxed)
        if version != contextVersion {
            let previous = context.gateway.accessLog
            context = LoopContext(gateway: server.currentGateway, loop: loop)
            contextVersion = version
            // Lines already queued under the old gateway still reach its log.
            previous.handOff(loop: loop.index)
            loop.afterBatch = [{ [unowned self] in self.context.gateway.accessLog.handOff(loop: self.loop.index) }]
        }
        return context
    }

    func acceptPending(limit: Int) {
        for _ in 0..<limit {
            let fd = pc_accept(server.listenFD)
            guard fd >= 0 else { return }
            adopt(fd)
        }
    }

    func adopt(_ fd: Int32) {
        FastCGIConnection.boundBlockingIO(fd)
        let connection = FastCGIConnection(fd: fd, owner: self)
        do {
            try loop.register(fd, events: EventLoop.readable, handler: connection)
        } catch {
            close(fd)
            return
        }
        connections[ObjectIdentifier(connection)] = connection
        if let metrics = context.gateway.metrics {
            metrics.connectionOpened()
            connection.countedIn = metrics
        }
    }

    func forget(_ connection: FastCGIConnection) {
        loop.deregister(connection.fd)
        connections.removeValue(forKey: ObjectIdentifier(connection))
        uncount(connection)
    }

    private func uncount(_ connection: FastCGIConnection) {
        connection.countedIn?.connectionClosed()
        connection.countedIn = nil
    }

    /// A request arrived on `connection`.
    func serve(_ connection: FastCGIConnection) {
        busy += 1
        let started = EventLoop.monotonicNanos()
        let context = currentContext
        let exchange = connection.exchange
        let decoded = RequestDecoder.decode(entries: exchange.paramEntries)
        // The gateway's own pages stay off the scoreboard: a scrape would otherwise see itself.
        if let metrics = context.gateway.metrics, !decoded.request.adminPages {
            scoreboard.started(connection, metrics: metrics, at: started)
        }
        RequestTask(context: context, decoded: decoded, exchange: exchange, environment: connection, started: started).start()
    }

    /// The request on `connection` was routed (route slot `slot` of the metrics file).
    func routed(_ connection: FastCGIConnection, slot: Int) { scoreboard.routed(connection, slot: slot) }

    /// The request on `connection` has been answered.
    func requestEnded(_ connection: FastCGIConnection, unreadBody: Int64) {
        scoreboard.ended(connection)
        connection.finish(unreadBody: unreadBody)
        busy -= 1
        served.store(served.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
        if retiring { finishRetiring(force: false) }
    }

    func retire(graceSeconds: Int) {
        guard !retiring else { return }
        retiring = true
        loop.deregister(server.listenFD)
        // A connection the kernel already signalled to this loop is served, not stranded.
        acceptPending(limit: Int.max)
        let timer = LoopTimer { [unowned self] in self.finishRetiring(force: true) }
        graceTimer = timer
        loop.schedule(timer, afterNanos: UInt64(max(graceSeconds, 0)) * 1_000_000_000)
        finishRetiring(force: false)
    }

    /// Once no request runs (or the grace period is over), hands the idle kept connections
    /// over and ends the loop.
    private func finishRetiring(force: Bool) {
        guard busy == 0 || force else { return }
        var idle: [Int32] = []
        for connection in connections.values where !connection.busy {
            idle.append(connection.detach())
            uncount(connection)
        }
        connections.removeAll()
        if !idle.isEmpty { server.handOff(idle) }
        if let graceTimer { loop.cancel(graceTimer) }
        loop.stop()
    }
}

/// A request's environment in production is its connection: the loop's upstream client, and
/// the FastCGI connection to finish when the answer is complete (no extra object per request).
extension FastCGIConnection: RequestEnvironment {
    var loopIndex: Int { owner.loop.index }
    func startUpstream(_ request: UpstreamRequest, body: BodySource?, sink: ResponseSink, hooks: ResponseHooks,
                       requestId: String, completion: @escaping (UpstreamOutcome, CollectedResponse?) -> Void) {
        owner.upstream.start(request, body: body, sink: sink, hooks: hooks, requestId: requestId, completion: completion)
    }
    func requestEnded(unreadBody: Int64) { owner.requestEnded(self, unreadBody: unreadBody) }
    func routed(metricsSlot: Int) { owner.routed(self, slot: metricsSlot) }
    var draining: Bool { owner.retiring }
    func after(nanoseconds: UInt64, _ work: @escaping () -> Void) {
        // Rare (retry backoff): a timer of its own, held by the loop's queue until it fires.
        owner.loop.schedule(LoopTimer(work), afterNanos: nanoseconds)
    }
    func noteStarted(requestId: String, route: String) { owner.activity.note(requestId: requestId, route: route) }
}
