import Glibc
import PortcullisCore

/// One upstream TCP connection of the lean client. It stays registered for readability for its
/// whole life (an idle one that turns readable was closed or sent garbage and is dropped);
/// writability is watched only while a write would block.
final class HTTP1Connection: LoopHandler {
    let fd: Int32
    unowned let endpoint: HTTP1Endpoint
    private unowned let client: HTTP1Client
    private(set) var exchange: HTTP1Exchange?
    private var connecting: Bool
    private var watchingWrites: Bool
    /// Exchanges completed on this connection: a failure on a used one may be a kept
    /// connection the upstream closed meanwhile.
    private var served = 0
    private let parser = HTTP1ResponseParser()
    private lazy var timer = LoopTimer { [unowned self] in self.timedOut() }

    init(fd: Int32, endpoint: HTTP1Endpoint, client: HTTP1Client, connecting: Bool) {
        self.fd = fd
        self.endpoint = endpoint
        self.client = client
        self.connecting = connecting
        watchingWrites = connecting
    }

    /// Takes `exchange` and starts writing it (once connected).
    func begin(_ exchange: HTTP1Exchange) {
        self.exchange = exchange
        parser.reset(relay: exchange.relay, method: exchange.method)
        armTimer(exchange)
        if !connecting { send(exchange) }
    }

    func ready(_ events: UInt32) {
        guard let x = exchange else {
            // Idle and readable: closed by the upstream, or bytes nobody asked for.
            client.dropIdle(self)
            return
        }
        if connecting {
            guard events & (EventLoop.writable | EventLoop.hangup) != 0 else { return }
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            if error != 0 {
                return finish(.unavailable("connect to \(endpoint.label): \(String(cString: strerror(error)))"), reusable: false, notSent: true)
            }
            connecting = false
            armTimer(x)
            return send(x)
        }
        if events & EventLoop.writable != 0 {
            send(x)
            guard exchange === x else { return }
        }
        if events & (EventLoop.readable | EventLoop.hangup) != 0 { receive(x) }
    }

    // MARK: writing

    private func send(_ x: HTTP1Exchange) {
        while true {
            if x.written < x.output.count {
                let out = x.output.bytes
                let n = Glibc.send(fd, out.baseAddress! + x.written, out.count - x.written, Int32(MSG_NOSIGNAL))
                if n > 0 {
                    x.written += n
                    continue
                }
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { return watchWrites(true) }
                return lost(x, "sending to \(endpoint.label): \(String(cString: strerror(errno)))")
            }
            guard !x.fullySent else { return watchWrites(false) }
            guard x.refill() else {
                return finish(.unavailable("the request body ended before its announced length"), reusable: false)
            }
        }
    }

    private func watchWrites(_ on: Bool) {
        guard on != watchingWrites else { return }
        watchingWrites = on
        client.loop.modify(fd, events: on ? EventLoop.readable | EventLoop.writable : EventLoop.readable)
    }

    // MARK: reading

    private func receive(_ x: HTTP1Exchange) {
        let buffer = client.readBuffer
        while true {
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n > 0 {
                x.responseStarted = true
                switch parser.feed(UnsafeRawBufferPointer(rebasing: buffer[..<n])) {
                case .incomplete:
                    if n < buffer.count { return }
                case .complete(let keepAlive):
                    return finish(nil, reusable: keepAlive && x.fullySent)
                case .stopped:
                    // The relay's own flags (overflow, client gone, refused) decide the outcome.
                    return finish(.unavailable("response relay stopped"), reusable: false)
                case .invalid(let why):
                    return finish(.unavailable("invalid response from \(endpoint.label): \(why)"), reusable: false)
                }
            } else if n == 0 {
                guard x.responseStarted else { return lost(x, "\(endpoint.label) closed the connection without answering") }
                switch parser.feedEOF() {
                case .complete: return finish(nil, reusable: false)
                case .stopped: return finish(.unavailable("response relay stopped"), reusable: false)
                case .incomplete, .invalid: return finish(.unavailable("\(endpoint.label) closed the connection mid-response"), reusable: false)
                }
            } else {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { return }
                return lost(x, "connection to \(endpoint.label): \(String(cString: strerror(errno)))")
            }
        }
    }

    // MARK: ending

    /// The connection failed before any response byte: a kept connection the upstream had
    /// closed is replaced once if the request can be written again (nginx does the same);
    /// anything else is a 502.
    private func lost(_ x: HTTP1Exchange, _ message: String) {
        if !x.responseStarted && served > 0 && x.replayable && !x.retried {
            end(reusable: false)
            client.retry(x)
        } else {
            // Nothing written on this connection: the upstream never saw the request.
            finish(.unavailable(message), reusable: false, notSent: x.written == 0 && !x.responseStarted)
        }
    }

    private func timedOut() {
        guard let x = exchange else { return }
        if connecting && client.loop.now < x.deadline {
            finish(.timedOut("connect to \(endpoint.label) timed out after \(x.connectTimeoutMs) ms"), reusable: false, notSent: true)
        } else {
            finish(.timedOut("\(endpoint.label) did not answer within \(x.timeoutMs) ms"), reusable: false)
        }
    }

    private func armTimer(_ x: HTTP1Exchange) {
        let now = client.loop.now
        var deadline = x.deadline
        if connecting { deadline = min(deadline, now &+ UInt64(max(x.connectTimeoutMs, 0)) * 1_000_000) }
        client.loop.schedule(timer, afterNanos: deadline > now ? deadline - now : 0)
    }

    /// Ends the exchange: the connection is parked or closed first, so the completion may
    /// start the next request on it.
    private func finish(_ failure: UpstreamOutcome.Failure?, reusable: Bool, notSent: Bool = false) {
        guard let x = exchange else { return }
        end(reusable: reusable)
        client.complete(x, failure: failure, notSent: notSent)
    }

    private func end(reusable: Bool) {
        exchange = nil
        parser.release()
        client.loop.cancel(timer)
        if reusable {
            served += 1
            client.park(self)
        } else {
            client.close(self)
        }
    }
}
