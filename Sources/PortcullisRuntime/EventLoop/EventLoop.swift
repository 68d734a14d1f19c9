import CPortcullis
import Foundation
import Synchronization

/// Something the loop calls when the descriptor it registered is ready.
public protocol LoopHandler: AnyObject {
    /// `events` is epoll's mask (EPOLLIN, EPOLLOUT, EPOLLHUP, EPOLLERR ...).
    func ready(_ events: UInt32)
}

/// One epoll loop on one thread: descriptors with their handlers, timers, and tasks posted from
/// other threads. Nothing here locks on the request path: handlers and timers are touched only
/// by the loop's own thread; `post` (reloads, handed-over connections) takes a lock that only
/// such rare events contend.
public final class EventLoop: @unchecked Sendable {
    public static let readable = UInt32(EPOLLIN.rawValue)
    public static let writable = UInt32(EPOLLOUT.rawValue)
    public static let exclusive = UInt32(EPOLLEXCLUSIVE.rawValue)
    public static let hangup = UInt32(EPOLLHUP.rawValue) | UInt32(EPOLLERR.rawValue)

    /// Index of this loop within its worker (0-based).
    public let index: Int
    private let epfd: Int32
    private let wakeFD: Int32
    /// Handler and registration number per descriptor. The number travels in epoll's token, so
    /// an event for a descriptor that was closed and reused within one batch is recognised
    /// and dropped instead of reaching the new owner.
    private var handlers: [LoopHandler?] = []
    private var registrations: [UInt32] = []
    private var nextRegistration: UInt32 = 1
    private var timers = TimerQueue()
    private let posted = Mutex<[@Sendable () -> Void]>([])
    private var running = false
    private var tokens = [UInt64](repeating: 0, count: 256)
    private var events = [UInt32](repeating: 0, count: 256)
    /// Monotonic time of the current iteration (nanoseconds); read by handlers instead of
    /// asking the kernel again.
    public private(set) var now: UInt64 = EventLoop.monotonicNanos()
    /// Called once per iteration after the batch of events and timers (log hand-off).
    public var afterBatch: [() -> Void] = []
    /// Since when (`now`, nanoseconds) the loop has been working on its current batch; 0 while
    /// it waits for events. Read by the worker's watchdog: a loop stuck in one request's work
    /// never gets back to waiting. Written twice per iteration (relaxed stores, no lock).
    public let busySince = Atomic<UInt64>(0)

    public init(index: Int) {
        self.index = index
        epfd = pc_epoll_create()
        wakeFD = pc_eventfd()
        precondition(epfd >= 0 && wakeFD >= 0, "epoll/eventfd: \(String(cString: strerror(errno)))")
        _ = pc_epoll_ctl(epfd, EPOLL_CTL_ADD, wakeFD, Self.readable, 0)
    }

    deinit {
        close(epfd)
        close(wakeFD)
    }

    public static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    // MARK: descriptors

    /// Watches `fd` for `events`; throws the errno text when epoll refuses.
    public func register(_ fd: Int32, events: UInt32, handler: LoopHandler) throws(RuntimeError) {
        let index = Int(fd)
        if index >= handlers.count {
            let size = max(index + 1, handlers.count * 2, 64)
            handlers += Array(repeating: nil, count: size - handlers.count)
            registrations += Array(repeating: 0, count: size - registrations.count)
        }
        let number = nextRegistration
        nextRegistration = nextRegistration &+ 1 == 0 ? 1 : nextRegistration &+ 1
        let rc = pc_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, events, Self.token(fd, number))
        guard rc == 0 else { throw RuntimeError("epoll add \(fd): \(String(cString: strerror(-rc)))") }
        handlers[index] = handler
        registrations[index] = number
    }

    /// Changes what `fd` is watched for.
    public func modify(_ fd: Int32, events: UInt32) {
        let index = Int(fd)
        guard index < handlers.count, handlers[index] != nil else { return }
        _ = pc_epoll_ctl(epfd, EPOLL_CTL_MOD, fd, events, Self.token(fd, registrations[index]))
    }

    /// Stops watching `fd` (call before closing it).
    public func deregister(_ fd: Int32) {
        let index = Int(fd)
        guard index < handlers.count, handlers[index] != nil else { return }
        _ = pc_epoll_ctl(epfd, EPOLL_CTL_DEL, fd, 0, 0)
        handlers[index] = nil
        registrations[index] = 0
    }

    public func isRegistered(_ fd: Int32) -> Bool { Int(fd) < handlers.count && handlers[Int(fd)] != nil }

    private static func token(_ fd: Int32, _ number: UInt32) -> UInt64 { UInt64(number) << 32 | UInt64(UInt32(bitPattern: fd)) }

    // MARK: timers

    /// Runs `timer` after `nanoseconds` (replacing an earlier schedule of the same timer).
    public func schedule(_ timer: LoopTimer, afterNanos nanoseconds: UInt64) {
        timers.schedule(timer, at: now &+ nanoseconds)
    }

    public func cancel(_ timer: LoopTimer) { timers.cancel(timer) }

    // MARK: other threads

    /// Runs `task` on the loop's thread at its next iteration; callable from any thread.
    public func post(_ task: @escaping @Sendable () -> Void) {
        posted.withLock { $0.append(task) }
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    // MARK: running

    /// Runs until `stop()`; returns on the loop's thread.
    public func run() {
        running = true
        while running { runOnce(maxWaitMs: -1) }
    }

    /// Ends `run()` after the current iteration (call on the loop's thread, e.g. from a task).
    public func stop() { running = false }

    /// One iteration: waits for events (at most until the next timer), handles them, fires due
    /// timers and posted tasks.
    public func runOnce(maxWaitMs: Int) {
        var timeout = maxWaitMs
        if let deadline = timers.nextDeadline() {
            let current = Self.monotonicNanos()
            let waitMs = deadline <= current ? 0 : Int((deadline - current + 999_999) / 1_000_000)
            timeout = timeout < 0 ? waitMs : min(timeout, waitMs)
        }
        dispatch(waitMs: timeout)
        if !timers.isEmpty {
            var current = Self.monotonicNanos()
            if current &- now > Self.lateBatchNanos, let deadline = timers.nextDeadline(), deadline <= current {
                // This batch ran long (a slow handler): what became ready meanwhile is handled
                // before any deadline is judged, or a timeout would fire for an answer that is
                // already waiting in its socket.
                dispatch(waitMs: 0)
                current = Self.monotonicNanos()
            }
            for timer in timers.popDue(now: current) { timer.action() }
        }
        for hook in afterBatch { hook() }
    }

    /// A batch longer than this is checked for readiness again before timers fire.
    static let lateBatchNanos: UInt64 = 1_000_000

    /// Waits up to `waitMs` for events and hands them to their handlers.
    private func dispatch(waitMs: Int) {
        if waitMs != 0 { busySince.store(0, ordering: .relaxed) }
        let n = tokens.withUnsafeMutableBufferPointer { t in
            events.withUnsafeMutableBufferPointer { e in
                pc_epoll_wait(epfd, t.baseAddress, e.baseAddress, 256, Int32(waitMs))
            }
        }
        now = Self.monotonicNanos()
        if waitMs != 0 { busySince.store(now, ordering: .relaxed) }
        guard n > 0 else { return }
        for i in 0..<Int(n) {
            let token = tokens[i]
            if token == 0 {
                drainPosted()
                continue
            }
            let fd = Int(UInt32(truncatingIfNeeded: token))
            let number = UInt32(truncatingIfNeeded: token >> 32)
            guard fd < handlers.count, registrations[fd] == number, let handler = handlers[fd] else { continue }
            handler.ready(events[i])
        }
    }

    private func drainPosted() {
        var counter: UInt64 = 0
        _ = read(wakeFD, &counter, 8)
        let tasks = posted.withLock { list -> [@Sendable () -> Void] in
            let out = list
            list.removeAll()
            return out
        }
        for task in tasks { task() }
    }
}
