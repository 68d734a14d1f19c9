import CFastCGI
import CPortcullis
import Foundation
import Synchronization

/// Handles one request on a worker thread. Each thread owns one handler instance, so per-thread
/// resources (the upstream connection cache) need no locking.
public protocol ExchangeHandler: AnyObject {
    func handle(_ exchange: FastCGIExchange, params: [FastCGIParam])
}

/// Runs `threads` threads, each owning one `FCGX_Request` on the inherited listening socket.
///
/// No accept mutex: with `fastcgi_keep_conn` a thread keeps reading its connection between
/// requests, and a mutex held across `FCGX_Accept_r` would starve the pool (ARCHITECTURE.md).
///
/// A thread never blocks where shutdown cannot reach it: it waits in `poll` on either its kept
/// connection or the (non-blocking) listening socket, together with a shutdown pipe, and calls
/// `FCGX_Accept_r` only once there is something to read or accept. A thread blocked in `accept`
/// would take a fresh connection from nginx after the worker decided to exit, and the exit would
/// reset it; nginx retries a request only when it failed on a *cached* connection, so that
/// request would be a 502. Kept connections are closed by the thread that owns them, so no
/// thread ever touches another thread's descriptor (whose number may have been reused).
public final class FastCGIServer: @unchecked Sendable {
    private let listenFD: Int32
    private let threadCount: Int
    private let makeHandler: @Sendable () -> ExchangeHandler
    /// Requests currently being handled.
    public let inFlight = Atomic<Int>(0)
    /// Threads still in their serve loop; the worker exits when none is left.
    public let runningThreads = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    /// Written once by `beginShutdown` and never drained: wakes every thread waiting in `poll`.
    private let wakeRead: Int32
    private let wakeWrite: Int32

    public init(listenFD: Int32, threads: Int, makeHandler: @escaping @Sendable () -> ExchangeHandler) {
        self.listenFD = listenFD
        self.threadCount = threads
        self.makeHandler = makeHandler
        var wake: [Int32] = [-1, -1]
        if pipe(&wake) != 0 { fatalError("pipe: \(String(cString: strerror(errno)))") }
        (wakeRead, wakeWrite) = (wake[0], wake[1])
        // One open file description shared by every worker of every generation; all of them
        // poll before accepting, so losing the race for a connection is EAGAIN, not a block.
        _ = fcntl(listenFD, F_SETFL, fcntl(listenFD, F_GETFL) | O_NONBLOCK)
        FCGX_Init()
    }

    /// Starts the threads and returns.
    public func start() {
        runningThreads.store(threadCount, ordering: .sequentiallyConsistent)
        for _ in 0..<threadCount {
            let thread = Thread { [self] in self.serve() }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Stops taking new requests. Requests being handled finish (their connection is then
    /// closed); idle threads close their kept connections and leave, and nginx retries a request
    /// that meets such a closed cached connection.
    public func beginShutdown() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    private func serve() {
        let request = UnsafeMutablePointer<FCGX_Request>.allocate(capacity: 1)
        FCGX_InitRequest(request, listenFD, 0)
        let handler = makeHandler()
        // One epoll set per thread, the listening socket in it with EPOLLEXCLUSIVE: a new
        // connection wakes one idle thread of the whole pool, not all of them.
        let acceptWaiter = pc_accept_waiter_create(listenFD, wakeRead)
        if acceptWaiter < 0 { fatalError("epoll: \(String(cString: strerror(-acceptWaiter)))") }
        defer {
            close(acceptWaiter)
            runningThreads.subtract(1, ordering: .sequentiallyConsistent)
        }
        while true {
            let kept = request.pointee.ipcFd
            let ready = kept >= 0 ? waitReadable(kept) : (!stopping.load(ordering: .relaxed) && pc_accept_waiter_wait(acceptWaiter, wakeRead) == 1)
            guard ready, !stopping.load(ordering: .relaxed) || kept >= 0 else { break }
            // When the kept connection turns out closed, FCGX_Accept_r would go on to accept a
            // new one, blocking in `accept`: without a listening socket it returns instead, and
            // the next turn polls the listening socket.
            request.pointee.listen_sock = kept >= 0 ? -1 : listenFD
            // Failure: EAGAIN (another thread took the connection) or a kept connection closed.
            guard FCGX_Accept_r(request) == 0 else { continue }
            inFlight.add(1, ordering: .sequentiallyConsistent)
            let exchange = FastCGIExchange(request: request)
            let params = exchange.params()
            handler.handle(exchange, params: params)
            if stopping.load(ordering: .relaxed) {
                // Close rather than keep the connection: this worker is going away.
                request.pointee.keepConnection = 0
            }
            FCGX_Finish_r(request)
            inFlight.subtract(1, ordering: .sequentiallyConsistent)
        }
        if request.pointee.ipcFd >= 0 {
            close(request.pointee.ipcFd)
            request.pointee.ipcFd = -1
        }
    }

    /// Waits until the kept connection `fd` is readable or closed (true), or shutdown began (false).
    private func waitReadable(_ fd: Int32) -> Bool {
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
        while !stopping.load(ordering: .relaxed) {
            let n = poll(&fds, 2, -1)
            if n < 0 && errno != EINTR { fatalError("poll: \(String(cString: strerror(errno)))") }
            if n <= 0 { continue }
            if fds[1].revents != 0 { return false }
            if fds[0].revents != 0 { return true }
        }
        return false
    }
}
