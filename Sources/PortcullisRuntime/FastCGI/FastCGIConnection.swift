import CFastCGI
import CPortcullis
import Foundation

/// One FastCGI connection from nginx, owned by one event loop and kept alive between requests
/// (`fastcgi_keep_conn on`). libfcgi parses and writes the records: `FCGX_Accept_r` runs only
/// when the loop reports the connection readable (nginx writes a request's BEGIN_REQUEST,
/// PARAMS and STDIN together, so the read does not wait), `FCGX_Finish_r` ends the answer.
/// An idle connection costs its descriptor and this object, nothing else.
final class FastCGIConnection: LoopHandler {
    let fd: Int32
    let request: UnsafeMutablePointer<FCGX_Request>
    /// The answer side of the request being served, reused by every request of the connection.
    let exchange: FastCGIExchange
    unowned let owner: LoopWorker
    /// A request is being served: readiness now means an abort or a close by nginx, handled
    /// once the request ends.
    private(set) var busy = false
    /// Whether the loop watches the descriptor (it stops while busy if nginx closes).
    private var watched = true
    /// Longest request body left unread that is drained to keep the connection; above it the
    /// connection is closed instead.
    static let drainLimit = 1 << 20
    /// The loop's scoreboard list (`LoopScoreboard`): the block the running request is counted
    /// in (nil: not counted), its start and route slot + 1, and its neighbours in start order.
    var board: WorkerMetrics?
    var boardSince: UInt64 = 0
    var boardRoute: UInt64 = 0
    var older: FastCGIConnection?
    var newer: FastCGIConnection?
    /// The block whose kept-connection gauge counts this connection.
    var countedIn: WorkerMetrics?

    init(fd: Int32, owner: LoopWorker) {
        self.fd = fd
        self.owner = owner
        request = .allocate(capacity: 1)
        FCGX_InitRequest(request, -1, 0)
        // Before the first FCGX_Accept_r: it starts with FCGX_Finish_r, which would close a
        // descriptor whose keepConnection is 0. From then on nginx's FCGI_KEEP_CONN decides.
        request.pointee.ipcFd = fd
        request.pointee.keepConnection = 1
        // libfcgi's default close lingers: it shuts down writing and waits up to 2 s for the
        // peer to close. A "detached" request closes at once, which the loop needs; nginx has
        // read END_REQUEST by then, so no answer is cut short.
        request.pointee.detached = 1
        exchange = FastCGIExchange(request: request)
    }

    deinit { request.deallocate() }

    /// libfcgi reads and writes with blocking calls. nginx writes a whole request at once and
    /// reads answers promptly (`fastcgi_buffering on`), so these calls return at once; the
    /// timeouts bound what anything else on the socket (a stuck or hostile local client that
    /// sends half a request) can make the loop wait: the call fails and the connection closes.
    static func boundBlockingIO(_ fd: Int32) {
        var receive = timeval(tv_sec: Self.receiveTimeoutSeconds, tv_usec: 0)
        var send = timeval(tv_sec: Self.sendTimeoutSeconds, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &receive, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send, socklen_t(MemoryLayout<timeval>.size))
    }
    static let receiveTimeoutSeconds = 2
    static let sendTimeoutSeconds = 10

    func ready(_ events: UInt32) {
        if busy {
            // nginx closed or aborted mid-request; level-triggered readiness would spin.
            owner.loop.deregister(fd)
            watched = false
            return
        }
        guard FCGX_Accept_r(request) == 0 else {
            // nginx closed the connection (or sent garbage): libfcgi has closed the descriptor.
            request.pointee.ipcFd = -1
            owner.forget(self)
            return
        }
        busy = true
        exchange.begin()
        owner.serve(self)
    }

    /// Ends the current request: drains what nginx sent and nobody read, writes END_REQUEST, and
    /// keeps the connection if nginx asked to.
    func finish(unreadBody: Int64) {
        // libfcgi's stream, not the pipeline's accounting, says whether body bytes are left: an
        // upstream that failed mid-body leaves the rest unread too, and stale STDIN records
        // would be read as the next request.
        // A request whose body was read (or that had none) usually has only its empty STDIN
        // record left: reading one byte tells the end from bytes left without the drain's
        // scratch buffer (a heap allocation of its own).
        if let input = request.pointee.in, FCGX_HasSeenEOF(input) == 0, unreadBody > 0 || FCGX_GetChar(input) >= 0 {
            if unreadBody > Int64(Self.drainLimit) || !Self.drain(input, budget: Self.drainLimit) {
                request.pointee.keepConnection = 0
            }
        }
        FCGX_Finish_r(request)
        busy = false
        if request.pointee.ipcFd < 0 || owner.retiring && !watched {
            owner.forget(self)
            return
        }
        if !watched {
            // nginx hung up while the request ran: the next read sees it and the loop drops us.
            try? owner.loop.register(fd, events: EventLoop.readable, handler: self)
            watched = true
        }
    }

    /// Reads and discards the rest of a request body; false when more than `budget` bytes are left.
    private static func drain(_ input: UnsafeMutablePointer<FCGX_Stream>, budget: Int) -> Bool {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: 16 * 1024) { scratch in
            var total = 0
            while true {
                let n = FCGX_GetStr(scratch.baseAddress, Int32(scratch.count), input)
                if n <= 0 { return true }
                total += Int(n)
                if total > budget { return false }
            }
        }
    }

    /// Releases the connection without closing its descriptor (handed to another worker).
    func detach() -> Int32 {
        if watched { owner.loop.deregister(fd) }
        watched = false
        request.pointee.ipcFd = -1
        return fd
    }

    /// Closes an idle connection (shutdown without a survivor to hand it to).
    func closeIdle() {
        let fd = detach()
        close(fd)
    }
}
