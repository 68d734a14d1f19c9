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
/// The kernel hands each new connection to exactly one blocked `accept`.
public final class FastCGIServer: @unchecked Sendable {
    private let listenFD: Int32
    private let threadCount: Int
    private let makeHandler: @Sendable () -> ExchangeHandler
    /// Requests currently being handled (for graceful shutdown).
    public let inFlight = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    /// Per thread: the connection fd it reads while idle between kept-alive requests, or -1.
    private let idleConnections: Mutex<[Int32]>

    public init(listenFD: Int32, threads: Int, makeHandler: @escaping @Sendable () -> ExchangeHandler) {
        self.listenFD = listenFD
        self.threadCount = threads
        self.makeHandler = makeHandler
        self.idleConnections = Mutex(Array(repeating: -1, count: threads))
        FCGX_Init()
    }

    /// Starts the threads and returns.
    public func start() {
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
        idleConnections.withLock { fds in
            for fd in fds where fd >= 0 { shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    private func serve(threadIndex: Int) {
        let request = UnsafeMutablePointer<FCGX_Request>.allocate(capacity: 1)
        FCGX_InitRequest(request, listenFD, 0)
        let handler = makeHandler()
        while !stopping.load(ordering: .relaxed) {
            guard FCGX_Accept_r(request) == 0 else {
                if stopping.load(ordering: .relaxed) { break }
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

    private func setIdle(_ index: Int, _ fd: Int32) {
        idleConnections.withLock { $0[index] = fd }
        if fd >= 0 && stopping.load(ordering: .relaxed) { shutdown(fd, Int32(SHUT_RDWR)) }
    }
}
