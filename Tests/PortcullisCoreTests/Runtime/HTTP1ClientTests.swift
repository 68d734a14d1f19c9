import Foundation
import Synchronization
import XCTest
@testable import PortcullisCore
@testable import PortcullisRuntime

/// The lean HTTP/1.1 client on a real event loop against a scripted local server (blocking
/// sockets, one thread per connection): framing, interim responses, bodiless answers, kept
/// connections and their retry, and every failure mapped to its outcome.
final class HTTP1ClientTests: XCTestCase {
    func testURLSplitOnBytes() throws {
        let plain = try XCTUnwrap(HTTP1URL("http://127.0.0.1:8080/a/b?q=1#frag"))
        XCTAssertEqual(plain.authority, "127.0.0.1:8080")
        XCTAssertEqual(plain.target, "/a/b?q=1")
        XCTAssertEqual(HTTP1URL("http://[::1]:9?x")?.target, "?x")
        XCTAssertEqual(HTTP1URL("http://h")?.authority, "h")
        XCTAssertEqual(HTTP1URL("http://h")?.target, "")
        XCTAssertEqual(HTTP1URL("http://h/caf\u{E9}#x")?.target, "/caf\u{E9}")
        for bad in ["", "http://", "http:///path", "https://h/", "HTTP://h/", "http://user@h/", "http:/h", "ftp://h"] {
            XCTAssertNil(HTTP1URL(bad), bad)
        }
    }

    /// Answers by request path; counts accepted connections.
    final class ScriptedServer: @unchecked Sendable {
        let port: UInt16
        private let fd: Int32
        private let accepted = Atomic<Int>(0)
        var accepts: Int { accepted.load(ordering: .sequentiallyConsistent) }

        init() throws {
            (fd, port) = try LoopbackSocket.bind(listen: 64)
            Thread.detachNewThread { [self] in acceptLoop() }
        }

        func stop() {
            shutdown(fd, Int32(SHUT_RDWR))
            close(fd)
        }

        private func acceptLoop() {
            while true {
                let connection = accept(fd, nil, nil)
                guard connection >= 0 else { return }
                accepted.add(1, ordering: .sequentiallyConsistent)
                Thread.detachNewThread { [self] in serve(connection) }
            }
        }

        private func serve(_ fd: Int32) {
            defer { close(fd) }
            var pending: [UInt8] = []
            while true {
                guard let (method, path, raw) = readRequest(fd, &pending) else { return }
                let (answer, keep) = respond(method: method, path: path, raw: raw)
                if answer.isEmpty {
                    // Silent: hold the connection until the client goes.
                    var byte: UInt8 = 0
                    _ = Glibc.read(fd, &byte, 1)
                    return
                }
                _ = answer.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if !keep { return }
            }
        }

        /// One request head and its Content-Length body, as raw bytes.
        private func readRequest(_ fd: Int32, _ pending: inout [UInt8]) -> (String, String, [UInt8])? {
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let text = String(decoding: pending, as: UTF8.self)
                if let end = text.range(of: "\r\n\r\n") {
                    let headLength = text.utf8.distance(from: text.startIndex, to: end.upperBound)
                    let head = String(text[..<end.lowerBound])
                    var bodyLength = 0
                    for line in head.split(separator: "\r\n") where line.lowercased().hasPrefix("content-length:") {
                        bodyLength = Int(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) ?? 0
                    }
                    if pending.count >= headLength + bodyLength {
                        let raw = Array(pending[..<(headLength + bodyLength)])
                        pending.removeFirst(headLength + bodyLength)
                        let parts = head.split(separator: " ")
                        return (String(parts[0]), String(parts[1]), raw)
                    }
                }
                let n = Glibc.read(fd, &chunk, chunk.count)
                if n <= 0 { return nil }
                pending += chunk[..<n]
            }
        }

        private func respond(method: String, path: String, raw: [UInt8]) -> ([UInt8], keep: Bool) {
            let ok = "HTTP/1.1 200 OK\r\n"
            switch path {
            case "/cl": return (Array("\(ok)Content-Length: 5\r\nX-Up: 1\r\nConnection: keep-alive\r\n\r\nhello".utf8), true)
            case "/chunked": return (Array("\(ok)Transfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n".utf8), true)
            case "/until-close": return (Array("\(ok)Content-Type: text/plain\r\n\r\nhello".utf8), false)
            case "/conn-close": return (Array("\(ok)Content-Length: 2\r\nConnection: close\r\n\r\nok".utf8), false)
            case "/interim":
                return (Array("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\(ok)Content-Length: 2\r\n\r\nok".utf8), true)
            case "/head": return (Array("\(ok)Content-Length: 100\r\n\r\n".utf8), true)
            case "/204": return (Array("HTTP/1.1 204 No Content\r\nX-Up: 1\r\n\r\n".utf8), true)
            case "/once": return (Array("\(ok)Content-Length: 2\r\n\r\nok".utf8), false)  // closes without saying so
            case "/silent": return ([], false)
            case "/garbage": return (Array("NOT HTTP AT ALL\r\n\r\n".utf8), false)
            case "/huge": return (Array("\(ok)X-Big: \(String(repeating: "a", count: 100_000))\r\nContent-Length: 0\r\n\r\n".utf8), false)
            case "/big": return (Array("\(ok)Content-Length: 200000\r\n\r\n".utf8) + [UInt8](repeating: 0x61, count: 200_000), true)
            default:  // echo: the request as received
                return (Array("\(ok)Content-Length: \(raw.count)\r\n\r\n".utf8) + raw, true)
            }
        }
    }

    final class Bytes: BodySource {
        private var bytes: [UInt8]
        init(_ bytes: [UInt8]) { self.bytes = bytes }
        func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
            let n = min(buffer.count, bytes.count)
            buffer.copyBytes(from: bytes[..<n])
            bytes.removeFirst(n)
            return n
        }
    }

    var server: ScriptedServer!
    var loop: EventLoop!
    var client: HTTP1Client!

    override func setUpWithError() throws {
        server = try ScriptedServer()
        loop = EventLoop(index: 0)
        client = HTTP1Client(loop: loop)
    }

    override func tearDown() {
        client = nil
        server.stop()
    }

    struct Result {
        var outcome: UpstreamOutcome
        var collected: CollectedResponse?
        var sink: RecordingSink
    }

    /// Runs one exchange on the loop to its end.
    func exchange(_ path: String, method: String = "GET", port: UInt16? = nil, body: [UInt8]? = nil,
                  headers: HTTPHeaders = HTTPHeaders([("X-A", "b")]), hooks: ResponseHooks = .streaming,
                  timeoutMs: Int = 2_000) -> Result {
        let sink = RecordingSink()
        var result: (UpstreamOutcome, CollectedResponse?)?
        let request = UpstreamRequest(method: method, url: "http://127.0.0.1:\(port ?? server.port)\(path)", headers: headers,
                                      bodyLength: body.map { Int64($0.count) }, connectTimeoutMs: 1_000, timeoutMs: timeoutMs)
        XCTAssertTrue(client.handles(request.url))
        client.start(request, body: body.map(Bytes.init), sink: sink, hooks: hooks, requestId: "r1") { result = ($0, $1) }
        XCTAssertNil(result, "completion ran inside start")
        let giveUp = Date().addingTimeInterval(10)
        while result == nil && Date() < giveUp { loop.runOnce(maxWaitMs: 50) }
        guard let result else {
            XCTFail("no completion")
            return Result(outcome: UpstreamOutcome(status: 0, failure: .unavailable("none"), target: "", elapsedMs: 0), sink: sink)
        }
        return Result(outcome: result.0, collected: result.1, sink: sink)
    }

    func testContentLengthResponsesReuseOneConnection() {
        for _ in 0..<5 {
            let r = exchange("/cl")
            XCTAssertNil(r.outcome.failure)
            XCTAssertEqual(r.sink.status, 200)
            XCTAssertEqual(r.sink.text, "hello")
            XCTAssertEqual(r.sink.headers["X-Up"], "1")
            XCTAssertNil(r.sink.headers["Connection"], "hop-by-hop headers are stripped by HeaderHygiene")
        }
        XCTAssertEqual(server.accepts, 1)
        XCTAssertEqual(client.connectionsOpened, 1)
    }

    func testChunkedBodyIsDecodedAndTheConnectionKept() {
        XCTAssertEqual(exchange("/chunked").sink.text, "hello")
        XCTAssertEqual(exchange("/chunked").sink.text, "hello")
        XCTAssertEqual(server.accepts, 1)
    }

    func testBodyUntilCloseAndConnectionCloseAreNotReused() {
        let r = exchange("/until-close")
        XCTAssertNil(r.outcome.failure)
        XCTAssertEqual(r.sink.text, "hello")
        XCTAssertEqual(exchange("/conn-close").sink.text, "ok")
        XCTAssertEqual(exchange("/cl").sink.text, "hello")
        XCTAssertEqual(server.accepts, 3)
    }

    func testInterimResponsesAreSkipped() {
        let r = exchange("/interim")
        XCTAssertEqual(r.sink.status, 200)
        XCTAssertEqual(r.sink.text, "ok")
        XCTAssertNil(r.sink.headers["Link"])
    }

    func testHeadAnd204HaveNoBodyAndKeepTheConnection() {
        let head = exchange("/head", method: "HEAD")
        XCTAssertNil(head.outcome.failure)
        XCTAssertEqual(head.sink.status, 200)
        XCTAssertEqual(head.sink.headers["Content-Length"], "100")
        XCTAssertTrue(head.sink.body.isEmpty)
        let empty = exchange("/204")
        XCTAssertEqual(empty.sink.status, 204)
        XCTAssertEqual(empty.sink.headers["X-Up"], "1")
        XCTAssertEqual(exchange("/cl").sink.text, "hello")
        XCTAssertEqual(server.accepts, 1)
    }

    func testRequestBytesMatchWhatCurlSends() {
        let put = exchange("/echo?q=1", method: "PUT", body: Array("abc".utf8), headers: HTTPHeaders([("X-A", "b"), ("X-Empty", " "), ("Host", "x"), ("Content-Length", "9")]))
        XCTAssertEqual(put.sink.text, "PUT /echo?q=1 HTTP/1.1\r\nHost: 127.0.0.1:\(server.port)\r\nX-A: b\r\nContent-Length: 3\r\n\r\nabc",
                       "a body without Content-Type is forwarded without one (none invented)")
        let post = exchange("/echo", method: "POST", headers: HTTPHeaders([("Content-Type", "text/plain")]))
        XCTAssertEqual(post.sink.text, "POST /echo HTTP/1.1\r\nHost: 127.0.0.1:\(server.port)\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n")
        let get = exchange("/echo", method: "GET")
        XCTAssertEqual(get.sink.text, "GET /echo HTTP/1.1\r\nHost: 127.0.0.1:\(server.port)\r\nX-A: b\r\n\r\n")
    }

    func testLargeBodyIsStreamedAndLargeResponseRelayed() {
        let body = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 % 251) }
        let r = exchange("/echo", method: "POST", body: body)
        XCTAssertNil(r.outcome.failure)
        XCTAssertEqual(Array(r.sink.body.suffix(body.count)), body)
        XCTAssertEqual(exchange("/big").sink.body.count, 200_000)
    }

    func testCollectModeAndOverflow() {
        let collect = ResponseHooks(mode: { _, _ in .collect(limit: 10) })
        let small = exchange("/chunked", hooks: collect)
        XCTAssertEqual(small.collected.map { String(decoding: $0.body, as: UTF8.self) }, "hello")
        XCTAssertFalse(small.sink.headSent)
        let big = exchange("/big", hooks: collect)
        XCTAssertEqual(big.collected?.overflowed, true)
    }

    /// The client reuses a completed exchange (object, relay, output buffer) for the next
    /// request: nothing of one request (body, headers, swallow/collect/overflow state, status)
    /// may show in the next.
    func testReusedExchangeCarriesNothingOverFromThePreviousRequest() {
        var swallow = ResponseHooks.streaming
        swallow.swallow = { _ in true }
        let a = exchange("/echo", method: "POST", body: Array("secret-body-of-a".utf8), headers: HTTPHeaders([("X-Only-A", "a")]), hooks: swallow)
        XCTAssertTrue(a.outcome.swallowed)
        XCTAssertFalse(a.sink.headSent)
        let b = exchange("/echo", headers: HTTPHeaders([("X-B", "b")]))
        XCTAssertFalse(b.outcome.swallowed)
        XCTAssertNil(b.outcome.failure)
        XCTAssertNil(b.collected)
        XCTAssertEqual(b.sink.status, 200)
        XCTAssertEqual(b.sink.text, "GET /echo HTTP/1.1\r\nHost: 127.0.0.1:\(server.port)\r\nX-B: b\r\n\r\n")

        let collect = ResponseHooks(mode: { _, _ in .collect(limit: 10) })
        XCTAssertEqual(exchange("/chunked", hooks: collect).collected.map { String(decoding: $0.body, as: UTF8.self) }, "hello")
        let c = exchange("/204")
        XCTAssertNil(c.collected)
        XCTAssertEqual(c.sink.status, 204)
        XCTAssertEqual(c.sink.headers["X-Up"], "1")
        XCTAssertTrue(c.sink.body.isEmpty)

        XCTAssertEqual(exchange("/big", hooks: collect).collected?.overflowed, true)
        let d = exchange("/cl")
        XCTAssertNil(d.outcome.failure)
        XCTAssertNil(d.collected)
        XCTAssertEqual(d.sink.text, "hello")
        XCTAssertEqual(d.outcome.status, 200)
        XCTAssertEqual(client.exchangesCreated, 1, "one exchange object served every request")
    }

    /// The output buffer of a reused exchange: a large inline body (its buffer given back,
    /// above `keptOutputCapacity`), then a request without one, then a small body: each request
    /// is sent byte for byte, nothing of the previous one before or after it.
    func testReusedOutputBufferHoldsOnlyTheCurrentRequest() {
        let large = (0..<20_000).map { UInt8(truncatingIfNeeded: $0 % 251) }
        let a = exchange("/echo", method: "POST", body: large)
        XCTAssertNil(a.outcome.failure)
        XCTAssertEqual(a.sink.body.count, "POST /echo HTTP/1.1\r\nHost: 127.0.0.1:\(server.port)\r\nX-A: b\r\nContent-Length: 20000\r\n\r\n".utf8.count + large.count)
        XCTAssertEqual(Array(a.sink.body.suffix(large.count)), large)
        let b = exchange("/echo", headers: HTTPHeaders([("X-B", "b")]))
        XCTAssertEqual(b.sink.text, "GET /echo HTTP/1.1\r\nHost: 127.0.0.1:\(server.port)\r\nX-B: b\r\n\r\n")
        let c = exchange("/echo", method: "PUT", body: Array("xyz".utf8))
        XCTAssertEqual(c.sink.text, "PUT /echo HTTP/1.1\r\nHost: 127.0.0.1:\(server.port)\r\nX-A: b\r\nContent-Length: 3\r\n\r\nxyz")
        XCTAssertEqual(client.exchangesCreated, 1, "one exchange object served every request")
    }

    func testKeptConnectionClosedByTheUpstreamIsReplacedOnce() {
        XCTAssertEqual(exchange("/once").sink.text, "ok")
        usleep(20_000)  // the upstream's FIN has arrived, the loop has not looked yet
        let r = exchange("/cl")
        XCTAssertNil(r.outcome.failure)
        XCTAssertEqual(r.sink.text, "hello")
        XCTAssertEqual(server.accepts, 2)
    }

    func testIdleConnectionClosedByTheUpstreamIsDropped() {
        XCTAssertEqual(exchange("/once").sink.text, "ok")
        usleep(20_000)
        loop.runOnce(maxWaitMs: 50)  // the idle socket turns readable: dropped
        XCTAssertEqual(exchange("/cl").sink.text, "hello")
        XCTAssertEqual(client.connectionsOpened, 2)
    }

    func testRefusedIsUnavailable() throws {
        let closed = try ScriptedServer()
        let port = closed.port
        closed.stop()
        let r = exchange("/cl", port: port)
        XCTAssertEqual(r.outcome.failure, .unavailable("connect to 127.0.0.1:\(port): Connection refused"))
    }

    func testNoAnswerTimesOutWithinTheTotalTimeout() {
        let started = Date()
        let r = exchange("/silent", timeoutMs: 300)
        guard case .timedOut? = r.outcome.failure else { return XCTFail("\(String(describing: r.outcome.failure))") }
        XCTAssertLessThan(Date().timeIntervalSince(started), 1.5)
        XCTAssertGreaterThanOrEqual(r.outcome.elapsedMs, 290)
    }

    func testGarbageAndHugeHeadersAreUnavailable() {
        for path in ["/garbage", "/huge"] {
            guard case .unavailable(let why)? = exchange(path).outcome.failure else { return XCTFail(path) }
            XCTAssertTrue(why.hasPrefix("invalid response from 127.0.0.1:"), why)
        }
    }

    func testClientGoneStopsTheRelay() {
        final class ClosingSink: ResponseSink {
            var isOpen = true, headSent = false, bytesSent = 0, status = 0
            func sendHead(status: Int, headers: HTTPHeaders) { headSent = true }
            func sendBody(_ bytes: UnsafeRawBufferPointer) { isOpen = false }
        }
        let sink = ClosingSink()
        var outcome: UpstreamOutcome?
        let request = UpstreamRequest(method: "GET", url: "http://127.0.0.1:\(server.port)/big", headers: HTTPHeaders(), bodyLength: nil,
                                      connectTimeoutMs: 1_000, timeoutMs: 2_000)
        client.start(request, body: nil, sink: sink, hooks: .streaming, requestId: "r") { o, _ in outcome = o }
        while outcome == nil { loop.runOnce(maxWaitMs: 50) }
        XCTAssertEqual(outcome?.failure, .clientGone)
    }

    func testTargetsNeedingCurlAreNotTaken() {
        XCTAssertFalse(client.handles("https://127.0.0.1/x"))
        XCTAssertFalse(client.handles("http://example.com/x"))
        XCTAssertFalse(client.handles("http://user@127.0.0.1/x"))
        XCTAssertTrue(client.handles("http://localhost:8080/x"))
        XCTAssertTrue(client.handles("http://[::1]:8080"))
        XCTAssertEqual(HTTP1Endpoint(authority: "127.0.0.1:80")?.hostHeader, "127.0.0.1")
        XCTAssertEqual(HTTP1Endpoint(authority: "[::1]:8080")?.hostHeader, "[::1]:8080")
        // Such a request is left to curl untouched: no exchange, no completion.
        let request = UpstreamRequest(method: "GET", url: "https://127.0.0.1/x", headers: HTTPHeaders(), bodyLength: nil,
                                      connectTimeoutMs: 1_000, timeoutMs: 1_000)
        var completed = false
        XCTAssertFalse(client.startIfHandled(request, body: nil, sink: RecordingSink(), hooks: .streaming, requestId: "r") { _, _ in completed = true })
        loop.runOnce(maxWaitMs: 10)
        XCTAssertFalse(completed)
        XCTAssertEqual(client.exchangesCreated, 0)
    }
}
