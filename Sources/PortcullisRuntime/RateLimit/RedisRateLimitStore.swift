#if canImport(Glibc)
import Glibc
#endif
import CHiredis
import CPortcullis
import PortcullisCore

/// Rate-limit counters in Redis, shared by every gateway instance: one `EVALSHA` of
/// ``RedisRateLimitScript`` per decision, keys `<namespace>:rl:<hash>` with a TTL.
///
/// Asynchronous on one event loop: one hiredis async connection per loop, attached to it, with
/// any number of requests in flight (Redis answers in order). Nothing waits: a command is
/// queued, written when the loop's current batch ends, and its callback runs when the answer
/// is read. hiredis 0.14 has no timeouts, so the store keeps its own: when the oldest
/// unanswered command is `timeout_ms` old (the connect included), Redis is taken for hung or
/// unreachable, every pending command fails at once and the connection is dropped; the next
/// command connects again (the limiter sends none during its `retry_ms` interval).
///
/// Every new connection starts with `AUTH` (when a password is configured) and `SCRIPT LOAD`,
/// pipelined ahead of the requests, so nothing waits for them and the script exists even on a
/// restarted Redis. An `AUTH` error gives the connection up: its requests fail with the reason
/// Redis gave. Until the first load has answered with the script's SHA1, requests carry the
/// script itself (`EVAL`); a `NOSCRIPT` answer (`SCRIPT FLUSH` mid-connection) is repaired by
/// loading again and retrying the request once. A `READONLY` answer (the server was demoted to
/// a replica) gives the connection up too.
///
/// With sentinels, each new connection is preceded by asking them in turn, on the loop, for
/// the master's address (`SENTINEL get-master-addr-by-name`); commands sent meanwhile wait in
/// the store, within their own deadlines. So after any loss of the connection the store
/// follows whatever master the sentinels name.
public final class RedisRateLimitStore: RemoteRateLimitStore {
    public let settings: RedisSettings
    /// The loop that runs the connection; the store is used only on its thread.
    public let loop: EventLoop
    let timeoutNanos: UInt64
    /// `<namespace>:rl:`, the start of every counter's key.
    private let keyPrefix: [UInt8]
    private var connection: RedisConnection?
    /// The sentinel being asked for the master (sentinel endpoint, no connection yet).
    private var discovery: RedisConnection?
    /// Commands sent while the master is being discovered, in order (their RESP text).
    private var waiting = Fifo<(text: [UInt8], command: Command, deadline: UInt64)>()
    /// The command being written (RESP), reused by every command of the store.
    private var commandText: [UInt8] = []
    /// The sentinel asked first: the one after the last that failed.
    private var sentinelIndex = 0
    /// From the first `SCRIPT LOAD` answer; the SHA1 of the script, the same on every Redis.
    fileprivate(set) var scriptSHA: String?

    /// A store whose connection runs on `loop` (the worker thread's).
    public init(settings: RedisSettings, loop: EventLoop) {
        self.settings = settings
        self.loop = loop
        self.timeoutNanos = UInt64(max(1, settings.timeoutMs)) * 1_000_000
        self.keyPrefix = Array((settings.namespace + ":rl:").utf8)
    }

    deinit {
        connection?.fail("the store was released")
        discovery?.fail("the store was released")
        failWaiting(RateLimitStoreError("redis: the store was released"))
    }

    /// The Redis key of a counter: `<namespace>:rl:` and its hash in 16 lower-case hex digits
    /// (what every script call writes as its key; for tests and diagnostics).
    public func redisKey(_ key: RateLimitKey) -> String {
        var text = keyPrefix
        RedisCommandText.appendHex(key.hash, to: &text)
        return String(decoding: text, as: UTF8.self)
    }

    public func acquire(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64,
                        completion: @escaping (Result<RateLimitDecision, RateLimitStoreError>) -> Void) {
        run(.acquire, key, params, now, cost) { answer in
            completion(answer.map { r in
                RateLimitDecision(allowed: r[0] == 1, limit: params.quota, remaining: r[1], resetAfterMicros: r[2], retryAfterMicros: r[3])
            })
        }
    }

    public func refund(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64) {
        run(.refund, key, params, now, cost, completion: nil)
    }

    /// Commands sent and not answered yet (those waiting for a sentinel's answer included).
    public var inFlight: Int { (connection?.pending.count ?? 0) + waiting.count }

    /// Drops the connection, failing every command in flight; the next command reconnects.
    public func disconnect() { connection?.fail("disconnected") }

    // MARK: commands

    /// One script call: its arguments (written as RESP when sent, and again for a retry), and
    /// who waits for its answer.
    struct ScriptCall {
        enum Operation { case acquire, refund }
        var operation: Operation
        var key: RateLimitKey
        var params: RateLimitParams
        var now: Int64
        var cost: Int64
        var retried: Bool
        var completion: ((Result<[Int64], RateLimitStoreError>) -> Void)?
    }

    /// What a command in flight is, so its answer goes to the right place.
    enum Command {
        case auth
        case load
        case script(ScriptCall)
        case raw((Result<Reply, RateLimitStoreError>) -> Void)
    }

    enum Reply: Equatable {
        case string(String)
        case integer(Int64)
        case array([Int64])
        case strings([String])
        case error(String)
        case other
    }

    private func run(_ operation: ScriptCall.Operation, _ key: RateLimitKey, _ p: RateLimitParams, _ now: Int64, _ cost: Int64,
                     completion: ((Result<[Int64], RateLimitStoreError>) -> Void)?) {
        sendScript(ScriptCall(operation: operation, key: key, params: p, now: now, cost: cost, retried: false, completion: completion),
                   deadline: EventLoop.monotonicNanos() &+ timeoutNanos)
    }

    /// Any command, answered through `completion` (tests and diagnostics: `PTTL`, `SCRIPT FLUSH`).
    func command(_ args: [String], completion: @escaping (Result<Reply, RateLimitStoreError>) -> Void) {
        if let error = send(args, .raw(completion), deadline: EventLoop.monotonicNanos() &+ timeoutNanos) {
            completion(.failure(error))
        }
    }

    /// `EVALSHA <sha> 1 <key> <op> <algorithm> <now> <limit> <window_us> <burst> <cost>` (`EVAL`
    /// with the script's source until its SHA1 is known), written straight into `commandText`.
    private func sendScript(_ call: ScriptCall, deadline: UInt64) {
        commandText.removeAll(keepingCapacity: true)
        RedisCommandText.appendCount(11, to: &commandText)
        if let sha = scriptSHA {
            RedisCommandText.appendBulk("EVALSHA", to: &commandText)
            var sha = sha
            sha.withUTF8 { RedisCommandText.appendBulk($0, to: &commandText) }
        } else {
            RedisCommandText.appendBulk("EVAL", to: &commandText)
            var source = RedisRateLimitScript.source
            source.withUTF8 { RedisCommandText.appendBulk($0, to: &commandText) }
        }
        RedisCommandText.appendBulk("1", to: &commandText)
        RedisCommandText.appendBulk(prefix: keyPrefix, hex: call.key.hash, to: &commandText)
        RedisCommandText.appendBulk(call.operation == .acquire ? "a" : "r", to: &commandText)
        RedisCommandText.appendBulk(RedisRateLimitScript.algorithmCode(call.params.algorithm), to: &commandText)
        RedisCommandText.appendBulk(decimal: call.now, to: &commandText)
        RedisCommandText.appendBulk(decimal: call.params.limit, to: &commandText)
        RedisCommandText.appendBulk(decimal: call.params.windowMicros, to: &commandText)
        RedisCommandText.appendBulk(decimal: call.params.burst, to: &commandText)
        RedisCommandText.appendBulk(decimal: call.cost, to: &commandText)
        if let error = sendText(.script(call), deadline: deadline) {
            call.completion?(.failure(error))
        }
    }

    /// Queues the command `args` (see ``sendText(_:deadline:)``).
    private func send(_ args: [String], _ command: Command, deadline: UInt64) -> RateLimitStoreError? {
        commandText.removeAll(keepingCapacity: true)
        RedisCommandText.append(args, to: &commandText)
        return sendText(command, deadline: deadline)
    }

    /// Queues the command written in `commandText` on the open connection, on a new one, or
    /// behind the sentinel being asked for the master; nil when queued, else why not (its
    /// completion is not called).
    private func sendText(_ command: Command, deadline: UInt64) -> RateLimitStoreError? {
        if let connection { return connection.send(commandText, command, deadline: deadline) }
        if discovery == nil {
            switch settings.endpoint {
            case .tcp, .unix:
                switch open(settings.endpoint) {
                case .success(let c): return c.send(commandText, command, deadline: deadline)
                case .failure(let error): return error
                }
            case .sentinel(let sentinels, let name):
                waiting.push((commandText, command, deadline))
                ask(sentinels, masterName: name, index: sentinelIndex % sentinels.count, remaining: sentinels.count,
                    deadline: deadline, reasons: [])
                return nil
            }
        }
        waiting.push((commandText, command, deadline))
        return nil
    }

    /// A new connection to the master, `AUTH` and `SCRIPT LOAD` already queued on it.
    private func open(_ endpoint: RedisEndpoint) -> Result<RedisConnection, RateLimitStoreError> {
        let c: RedisConnection
        switch RedisConnection.connect(endpoint, store: self) {
        case .success(let open): c = open
        case .failure(let error): return .failure(error)
        }
        connection = c
        // Pipelined ahead of every request of this connection: nothing waits for them.
        let deadline = EventLoop.monotonicNanos() &+ timeoutNanos
        if let auth = Self.auth(settings.username, settings.password) { _ = c.send(Self.text(auth), .auth, deadline: deadline) }
        _ = c.send(Self.text(["SCRIPT", "LOAD", RedisRateLimitScript.source]), .load, deadline: deadline)
        return .success(c)
    }

    /// Asks the sentinels in turn, from `sentinelIndex`, for the master's address, then connects
    /// to it with the commands that waited; all within `deadline` (the first waiting command's),
    /// else every waiting command fails with each sentinel's reason. A sentinel that fails moves
    /// `sentinelIndex` past itself, so a hung one is not the first asked again; the one that
    /// answers stays first.
    private func ask(_ sentinels: [RedisAddress], masterName: String, index: Int, remaining: Int, deadline: UInt64,
                     reasons: [String]) {
        guard remaining > 0, EventLoop.monotonicNanos() < deadline else {
            let why = reasons.isEmpty ? "no answer within \(settings.timeoutMs) ms" : reasons.joined(separator: "; ")
            return failWaiting(RateLimitStoreError("redis: no sentinel named the master \"\(masterName)\" (\(why))"))
        }
        let sentinel = sentinels[index]
        let next = { [unowned self] (reason: String) in
            let why = reason.hasPrefix("redis: ") ? reason.dropFirst(7) : Substring(reason)
            sentinelIndex = (index + 1) % sentinels.count
            ask(sentinels, masterName: masterName, index: sentinelIndex, remaining: remaining - 1, deadline: deadline,
                reasons: reasons + ["\(sentinel): \(why)"])
        }
        let c: RedisConnection
        switch RedisConnection.connect(.tcp(sentinel), store: self) {
        case .success(let open): c = open
        case .failure(let error): return next(error.message)
        }
        discovery = c
        // A refused AUTH gives the connection up, which fails the question with the reason.
        if let auth = Self.auth(settings.sentinelUsername, settings.sentinelPassword) { _ = c.send(Self.text(auth), .auth, deadline: deadline) }
        let question = Self.text(["SENTINEL", "get-master-addr-by-name", masterName])
        let error = c.send(question, .raw({ [weak self] answer in
            guard let self else { return }
            discovery = nil
            if case .success = answer { c.fail("asked") }  // a failure means hiredis is freeing it already
            switch answer {
            case .success(.strings(let parts)) where parts.count == 2:
                guard let port = Int(parts[1]), port > 0, port < 65_536 else { return next("unexpected answer \(parts)") }
                connectWaiting(RedisAddress(host: parts[0], port: port))
            case .success(.error(let message)):
                next(message)
            case .success:
                next("does not know the master \"\(masterName)\"")
            case .failure(let error):
                next(error.message)
            }
        }), deadline: deadline)
        if let error {
            discovery = nil
            c.fail("unused")
            next(error.message)
        }
    }

    /// The RESP text of `args` (commands sent once per connection).
    private static func text(_ args: [String]) -> [UInt8] {
        var text: [UInt8] = []
        RedisCommandText.append(args, to: &text)
        return text
    }

    /// `AUTH [username] password`, or nil without a password.
    private static func auth(_ username: String?, _ password: RedisPassword?) -> [String]? {
        guard let password else { return nil }
        return username.map { ["AUTH", $0, password.secret] } ?? ["AUTH", password.secret]
    }

    /// The sentinels named the master: the waiting commands go to a new connection to it.
    private func connectWaiting(_ master: RedisAddress) {
        switch open(.tcp(master)) {
        case .failure(let error):
            failWaiting(error)
        case .success(let c):
            var queued = waiting
            waiting = Fifo()
            while let (text, command, deadline) = queued.pop() {
                if let error = c.send(text, command, deadline: deadline) { answered(command, .failure(error), deadline: deadline, from: nil) }
            }
        }
    }

    private func failWaiting(_ error: RateLimitStoreError) {
        var queued = waiting
        waiting = Fifo()
        while let (_, command, deadline) = queued.pop() { answered(command, .failure(error), deadline: deadline, from: nil) }
    }

    /// Called once per connection, when it is closing.
    fileprivate func ended(_ c: RedisConnection) {
        if connection === c { connection = nil }
    }

    /// Routes one answer (or the failure that replaces it) to whoever waits for it; `from` is
    /// the connection that read it (nil when it never reached one).
    fileprivate func answered(_ command: Command, _ answer: Result<Reply, RateLimitStoreError>, deadline: UInt64,
                              from: RedisConnection?) {
        switch command {
        case .auth:
            // The reason Redis gives (WRONGPASS …, or an unknown user) never holds the password.
            if case .success(.error(let message)) = answer { from?.fail("authentication failed: \(message)") }
        case .load:
            if case .success(.string(let sha)) = answer { scriptSHA = sha }
        case .raw(let completion):
            completion(answer)
        case .script(var call):
            switch answer {
            case .success(.array(let values)) where values.count == 4:
                call.completion?(.success(values))
            case .success(.error(let message)) where message.hasPrefix("NOSCRIPT") && !call.retried:
                // The script was flushed: load it again ahead of the retry, which keeps the
                // request's deadline (no request waits longer than the timeout).
                call.retried = true
                _ = send(["SCRIPT", "LOAD", RedisRateLimitScript.source], .load, deadline: deadline)
                sendScript(call, deadline: deadline)
            case .success(.error(let message)):
                // A master demoted by a failover: reconnect (through the sentinels) rather than
                // keep writing to a replica.
                if message.hasPrefix("READONLY") { from?.fail("the server became a replica (READONLY)") }
                call.completion?(.failure(RateLimitStoreError("redis: \(message)")))
            case .success:
                call.completion?(.failure(RateLimitStoreError("redis: unexpected reply to EVALSHA")))
            case .failure(let error):
                call.completion?(.failure(error))
            }
        }
    }
}

/// One hiredis async connection attached to an event loop: hiredis's event hooks become epoll
/// interest, readiness becomes `redisAsyncHandleRead/Write`, and a loop timer enforces the
/// timeout hiredis 0.14 lacks. Lives from `redisAsyncConnect` until hiredis frees the context
/// (an error, end of stream, or ``fail(_:)``), then is dropped; the store opens a new one.
final class RedisConnection: LoopHandler {
    private weak var store: RedisRateLimitStore?
    private let loop: EventLoop
    /// nil once hiredis has freed it (its `cleanup` hook ran).
    private var context: UnsafeMutablePointer<redisAsyncContext>?
    private let fd: Int32
    /// Commands in the order they were sent, which is the order Redis answers them.
    private(set) var pending = Fifo<(command: RedisRateLimitStore.Command, deadline: UInt64)>()
    /// Why this side gave the connection up; the pending commands fail with it.
    private var failure: String?
    /// Set when epoll refused the socket (inside a hook, where the context cannot be freed).
    private var brokenReason: String?
    private var reading = false
    private var writing = false
    /// The epoll interest registered (nil: not registered).
    private var interest: UInt32?
    /// Writes queued commands once per loop iteration instead of waiting for EPOLLOUT.
    private var flushTimer: LoopTimer!
    private var flushing = false
    private var deadlineTimer: LoopTimer!
    /// When `deadlineTimer` fires; never later than the earliest pending deadline.
    private var armedFor: UInt64 = 0

    init(store: RedisRateLimitStore, context: UnsafeMutablePointer<redisAsyncContext>) {
        self.store = store
        self.loop = store.loop
        self.context = context
        self.fd = context.pointee.c.fd
        flushTimer = LoopTimer { [weak self] in self?.flush() }
        deadlineTimer = LoopTimer { [weak self] in self?.checkDeadlines() }
        // The hooks get this object back as their `privdata`; hiredis calls them only while
        // the context lives, and the context never outlives this object (see `fail`).
        context.pointee.ev.data = Unmanaged.passUnretained(self).toOpaque()
        context.pointee.ev.addRead = { RedisConnection.from($0).setRead(true) }
        context.pointee.ev.delRead = { RedisConnection.from($0).setRead(false) }
        context.pointee.ev.addWrite = { RedisConnection.from($0).addWrite() }
        context.pointee.ev.delWrite = { RedisConnection.from($0).setWrite(false) }
        context.pointee.ev.cleanup = { RedisConnection.from($0).cleanup() }
    }

    /// Starts connecting to `endpoint` (`.tcp` or `.unix`); a failure when hiredis refused at once.
    static func connect(_ endpoint: RedisEndpoint, store: RedisRateLimitStore) -> Result<RedisConnection, RateLimitStoreError> {
        let context: UnsafeMutablePointer<redisAsyncContext>?
        let label: String
        switch endpoint {
        case .tcp(let address):
            context = redisAsyncConnect(address.host, Int32(address.port))
            label = address.description
        case .unix(let path):
            context = redisAsyncConnectUnix(path)
            label = "unix:" + path
        case .sentinel:
            preconditionFailure("a sentinel endpoint is resolved to an address first")
        }
        guard let ac = context else { return .failure(RateLimitStoreError("redis: cannot allocate a connection")) }
        if ac.pointee.err != 0 {
            let message = ac.pointee.errstr.map { String(cString: $0) } ?? "error \(ac.pointee.err)"
            redisAsyncFree(ac)
            return .failure(RateLimitStoreError("redis: connect to \(label): \(message)"))
        }
        return .success(RedisConnection(store: store, context: ac))
    }

    private static func from(_ data: UnsafeMutableRawPointer?) -> RedisConnection {
        Unmanaged<RedisConnection>.fromOpaque(data!).takeUnretainedValue()
    }

    /// Queues one command, `text` in RESP (``RedisCommandText``; hiredis copies it into its
    /// output buffer); nil when queued, else why not.
    func send(_ text: [UInt8], _ command: RedisRateLimitStore.Command, deadline: UInt64) -> RateLimitStoreError? {
        guard let ac = context, failure == nil else { return RateLimitStoreError("redis: \(failure ?? "connection lost")") }
        let me = Unmanaged.passUnretained(self).toOpaque()
        let rc = text.withUnsafeBytes { bytes in
            redisAsyncFormattedCommand(ac, { ac, reply, me in RedisConnection.from(me).answer(ac, reply) }, me,
                                       bytes.baseAddress!.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        guard rc == REDIS_OK else { return RateLimitStoreError("redis: connection lost") }
        pending.push((command, deadline))
        if !deadlineTimer.isScheduled || deadline < armedFor { arm(deadline) }
        return nil
    }

    /// hiredis's callback: the next answer in order, or nil when the context is being freed.
    private func answer(_ ac: UnsafeMutablePointer<redisAsyncContext>?, _ reply: UnsafeMutableRawPointer?) {
        guard let (command, deadline) = pending.pop() else { return }
        let result: Result<RedisRateLimitStore.Reply, RateLimitStoreError>
        if let reply {
            result = .success(Self.parse(reply.assumingMemoryBound(to: redisReply.self).pointee))
        } else {
            let text = failure ?? ac?.pointee.errstr.map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "connection lost"
            result = .failure(RateLimitStoreError("redis: \(text)"))
        }
        if pending.isEmpty { loop.cancel(deadlineTimer) }
        if let store {
            store.answered(command, result, deadline: deadline, from: self)
        } else if case .script(let call) = command {
            // Only while the store is being released; its requests still get an answer.
            call.completion?(.failure(RateLimitStoreError("redis: the store was released")))
        }
    }

    /// Gives the connection up: every pending command fails with `reason`, in order, and the
    /// socket is closed. Not from inside a hiredis hook (hiredis defers it inside a callback).
    func fail(_ reason: String) {
        guard let ac = context, failure == nil else { return }
        failure = reason
        store?.ended(self)
        redisAsyncFree(ac)
    }

    // MARK: loop

    func ready(_ events: UInt32) {
        if let ac = context, events & (EventLoop.readable | EventLoop.hangup) != 0 { redisAsyncHandleRead(ac) }
        if let ac = context, writing, events & (EventLoop.writable | EventLoop.hangup) != 0 { redisAsyncHandleWrite(ac) }
    }

    private func flush() {
        guard let ac = context else { return }
        flushing = true
        redisAsyncHandleWrite(ac)
        flushing = false
    }

    private func arm(_ deadline: UInt64) {
        armedFor = deadline
        loop.schedule(deadlineTimer, afterNanos: deadline > loop.now ? deadline - loop.now : 0)
    }

    /// Runs at (or after) the earliest deadline it was armed for; answers that came in since
    /// are not looked at one by one (no timer work per answer), only the oldest pending is.
    private func checkDeadlines() {
        if let brokenReason { return fail(brokenReason) }
        var earliest = UInt64.max
        pending.forEach { earliest = min(earliest, $0.deadline) }
        guard earliest != .max else { return }
        if earliest <= EventLoop.monotonicNanos(), let ac = context, Self.hasInput(ac.pointee.c.fd) {
            // The loop itself ran late (a busy iteration): answers that arrived meanwhile are
            // read before anything is declared lost.
            redisAsyncHandleRead(ac)
            return checkDeadlines()
        }
        if earliest <= EventLoop.monotonicNanos() {
            fail("no answer within \(store?.settings.timeoutMs ?? 0) ms")
        } else {
            arm(earliest)
        }
    }

    private static func hasInput(_ fd: Int32) -> Bool {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&pfd, 1, 0) == 1 && pfd.revents & Int16(POLLIN) != 0
    }

    // MARK: hiredis hooks

    private func setRead(_ on: Bool) {
        reading = on
        updateInterest()
    }

    private func addWrite() {
        if let ac = context, ac.pointee.c.flags & REDIS_CONNECTED != 0, !flushing {
            // Connected: write at the end of this loop iteration, with everything else queued
            // by then, in one write and without an epoll change.
            if !flushTimer.isScheduled { loop.schedule(flushTimer, afterNanos: 0) }
        } else {
            // Connecting (EPOLLOUT reports the outcome), or the socket buffer is full.
            setWrite(true)
        }
    }

    private func setWrite(_ on: Bool) {
        writing = on
        updateInterest()
    }

    private func updateInterest() {
        let wanted = (reading ? EventLoop.readable : 0) | (writing ? EventLoop.writable : 0)
        if interest == wanted { return }
        if interest == nil {
            do {
                try loop.register(fd, events: wanted, handler: self)
                interest = wanted
            } catch {
                // Inside a hook the context cannot be freed: the deadline timer gives it up.
                brokenReason = "\(error)"
                arm(0)
            }
        } else {
            loop.modify(fd, events: wanted)
            interest = wanted
        }
    }

    /// hiredis is about to free the context and close the socket (called once or twice).
    private func cleanup() {
        guard context != nil else { return }
        // Deregistering and `ended` may drop the last references to this object.
        withExtendedLifetime(self) {
            context = nil
            if interest != nil { loop.deregister(fd) }
            interest = nil
            loop.cancel(flushTimer)
            store?.ended(self)
        }
    }

    // MARK: replies

    private static func parse(_ reply: redisReply) -> RedisRateLimitStore.Reply {
        switch reply.type {
        case REDIS_REPLY_STRING, REDIS_REPLY_STATUS:
            return .string(String(cString: reply.str))
        case REDIS_REPLY_INTEGER:
            return .integer(Int64(reply.integer))
        case REDIS_REPLY_ERROR:
            return .error(String(cString: reply.str))
        case REDIS_REPLY_ARRAY:
            var values: [Int64] = []
            values.reserveCapacity(reply.elements)
            for i in 0..<reply.elements {
                guard let e = reply.element[i]?.pointee, e.type == REDIS_REPLY_INTEGER else { return parseStrings(reply) }
                values.append(Int64(e.integer))
            }
            return .array(values)
        default:
            return .other
        }
    }

    /// An array of strings (a sentinel's answer), else `.other`.
    private static func parseStrings(_ reply: redisReply) -> RedisRateLimitStore.Reply {
        var values: [String] = []
        for i in 0..<reply.elements {
            guard let e = reply.element[i]?.pointee, e.type == REDIS_REPLY_STRING else { return .other }
            values.append(String(cString: e.str))
        }
        return .strings(values)
    }
}

/// First in, first out, without moving the elements on every pop.
struct Fifo<Element> {
    private var items: [Element?] = []
    private var head = 0

    var count: Int { items.count - head }
    var isEmpty: Bool { head == items.count }

    mutating func push(_ element: Element) { items.append(element) }

    mutating func pop() -> Element? {
        guard head < items.count else { return nil }
        let element = items[head]
        items[head] = nil
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64, head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
        return element
    }

    func forEach(_ body: (Element) -> Void) {
        for i in head..<items.count { body(items[i]!) }
    }
}
