import CFastCGI
import Foundation
import Synchronization

/// Handles one request on a worker thread. Each thread owns one handler instance, so per-thread
/// resources (the upstream connection cache) need no locking.
public protocol ExchangeHandler: AnyObject {
    func handle(_ exchange: FastCGIExchange, params: [(name: Substring, value: Substring)])
}

/// Runs `threads` threads, each owning one `FCGX_Request` on the inherited listening socket.
///
/// No accept mutex: with `fastcgi_keep_conn` a thread keeps reading its connection between
/// requests, and a mutex held across `FCGX_Accept_r` would starve the pool (ARCHITECTURE.md).
/// The kernel hands each new connection to exactly one `accept`.
///
/// The listening socket is non-blocking and a thread without a kept connection waits in `poll`
/// (on the socket and a shutdown pipe) before accepting. A thread blocked in `accept` could not
/// be woken on shutdown: it would take a connection from nginx after the worker decided to exit,
/// and the exit would reset that connection (nginx does not retry a fresh connection: a 502).
public final class FastCGIServer: @unchecked Sendable {
    private let listenFD: Int32
    private let threadCount: Int
    private let makeHandler: @Sendable () -> ExchangeHandler
    /// Requests currently being handled (for graceful shutdown).
    public let inFlight = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    /// Threads still in their serve loop; the worker exits when none is left.
    public let runningThreads = Atomic<Int>(0)
    /// Written once by `beginShutdown` and never drained: wakes every thread waiting in `poll`.
    private let wakeRead: Int32
    private let wakeWrite: Int32
    /// Per thread: the connection fd it reads while idle between kept-alive requests, or -1.
    private let idleConnections: Mutex<[Int32]>

    public init(listenFD: Int32, threads: Int, makeHandler: @escaping @Sendable () -> ExchangeHandler) {
        self.listenFD = listenFD
        self.threadCount = threads
        self.makeHandler = makeHandler
        self.idleConnections = Mutex(Array(repeating: -1, count: threads))
        var wake: [Int32] = [-1, -1]
        if pipe(&wake) != 0 { fatalError("pipe: \(String(cString: strerror(errno)))") }
        (wakeRead, wakeWrite) = (wake[0], wake[1])
        // Shared by every worker of every generation (one open file description); all of them
        // poll before accepting, so a lost race for a connection is EAGAIN, not a blocked thread.
        _ = fcntl(listenFD, F_SETFL, fcntl(listenFD, F_GETFL) | O_NONBLOCK)
        FCGX_Init()
    }

    /// Starts the threads and returns.
    public func start() {
        runningThreads.store(threadCount, ordering: .sequentiallyConsistent)
        for index in 0..<threadCount {
            let thread = Thread { [self] in self.serve(threadIndex: index) }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Stops taking new requests: kept-alive connections that are idle are shut down so nginx
    /// moves on (it retries a request that failed on a cached connection).
    public func beginShutdown() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
        idleConnections.withLock { fds in
            for fd in fds where fd >= 0 { shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    private func serve(threadIndex: Int) {
        let request = UnsafeMutablePointer<FCGX_Request>.allocate(capacity: 1)
        FCGX_InitRequest(request, listenFD, 0)
        let handler = makeHandler()
        defer { runningThreads.subtract(1, ordering: .sequentiallyConsistent) }
        while !stopping.load(ordering: .relaxed) {
            // Without a kept connection, FCGX_Accept_r accepts: only once one is pending.
            if request.pointee.ipcFd < 0 && !waitForConnection() { continue }
            guard FCGX_Accept_r(request) == 0 else {
                // EAGAIN (another thread took the connection) or a kept connection that closed.
                continue
            }
            setIdle(threadIndex, -1)
            inFlight.add(1, ordering: .sequentiallyConsistent)
            let exchange = FastCGIExchange(request: request)
            let params = exchange.params()
            handler.handle(exchange, params: params)
            if stopping.load(ordering: .relaxed) {
                // Close rather than keep the connection: this worker is going away.
                request.pointee.keepConnection = 0
            }
            FCGX_Finish_r(request)
            if request.pointee.ipcFd >= 0 { setIdle(threadIndex, request.pointee.ipcFd) }
            inFlight.subtract(1, ordering: .sequentiallyConsistent)
        }
    }

    /// Waits until the listening socket has a pending connection (true), or shutdown began or
    /// `poll` was interrupted (false).
    private func waitForConnection() -> Bool {
        var fds = [pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
        guard poll(&fds, 2, -1) > 0, fds[1].revents == 0 else { return false }
        return fds[0].revents & Int16(POLLIN) != 0
    }

    private func setIdle(_ index: Int, _ fd: Int32) {
        idleConnections.withLock { $0[index] = fd }
        if fd >= 0 && stopping.load(ordering: .relaxed) { shutdown(fd, Int32(SHUT_RDWR)) }
    }
}
