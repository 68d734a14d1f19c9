import Foundation
import XCTest
@testable import PortcullisCore
@testable import PortcullisRuntime

/// The request pipeline as a chain of steps, driven without sockets: params in, a recording
/// exchange and a scripted upstream, the loop's role played by the test.
final class RequestTaskTests: XCTestCase {
    /// Records what the pipeline answers.
    final class RecordingExchange: RecordingSink, GatewayExchange {
        var requestId = ""
        let requestBody: [UInt8]
        var bodyOffset = 0
        init(body: [UInt8] = []) { requestBody = body }
        func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
            let n = min(buffer.count, requestBody.count - bodyOffset)
            guard n > 0 else { return 0 }
            requestBody.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + bodyOffset, byteCount: n) }
            bodyOffset += n
            return n
        }
    }

    /// Plays the loop: holds upstream exchanges until the test answers them.
    final class ScriptedEnvironment: RequestEnvironment {
        var loopIndex = 0
        var sent: [(request: UpstreamRequest, sink: ResponseSink, hooks: ResponseHooks,
                    completion: (UpstreamOutcome, CollectedResponse?) -> Void)] = []
        var ended: [Int64] = []
        func startUpstream(_ request: UpstreamRequest, body: BodySource?, sink: ResponseSink, hooks: ResponseHooks,
                           requestId: String, completion: @escaping (UpstreamOutcome, CollectedResponse?) -> Void) {
            sent.append((request, sink, hooks, completion))
        }
        func requestEnded(unreadBody: Int64) { ended.append(unreadBody) }
        /// Backoffs run at once: the test is the clock.
        func after(nanoseconds: UInt64, _ work: @escaping () -> Void) { work() }
        var draining = false

        /// Fails the oldest exchange as a client would (`notSent`: before the upstream saw it).
        func fail(_ failure: UpstreamOutcome.Failure, notSent: Bool) {
            let exchange = sent.removeFirst()
            var outcome = UpstreamOutcome(status: 0, failure: failure, target: exchange.request.url, elapsedMs: 1)
            outcome.notSent = notSent
            exchange.completion(outcome, nil)
        }

        /// Answers the oldest exchange as a streaming upstream would.
        func answer(status: Int, headers: HTTPHeaders, body: String) {
            let exchange = sent.removeFirst()
            // As the relay asks, by status before anything else.
            if exchange.hooks.swallow?(status) == true {
                var outcome = UpstreamOutcome(status: status, failure: nil, target: exchange.request.url, elapsedMs: 1)
                outcome.swallowed = true
                return exchange.completion(outcome, nil)
            }
            var outgoing = HeaderHygiene.downstreamResponseHeaders(headers)
            var code = status
            if let problem = exchange.hooks.head?(&code, &outgoing) {
                exchange.sink.sendProblem(problem, requestId: "")
            } else {
                exchange.sink.sendHead(status: code, headers: outgoing)
                exchange.sink.sendBody(Array(body.utf8))
            }
            exchange.completion(UpstreamOutcome(status: status, failure: nil, target: exchange.request.url, elapsedMs: 1), nil)
        }
    }

    private var directory: URL!
    private var context: LoopContext!
    private var configText = ""
    private let loop = EventLoop(index: 0)

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("rt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        _ = try SharedMemoryRateTable.create(path: SharedMemoryRateTable.defaultPath(runtimeDirectory: directory.path), slots: 1024)
        _ = try UpstreamStateTable.create(path: UpstreamStateTable.defaultPath(runtimeDirectory: directory.path))
        let config = """
        {"server": {"runtime_dir": "\(directory.path)"}, "log": {"access_log": "\(directory.path)/access.log"},
         "upstreams": {"svc": {"targets": ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]}},
         "consumers": [{"id": "demo", "api_keys": [{"id": "k1", "sha256": "090d1548c9d65f413a1a2c828a0bee3a7ae02d2137caf51e6029e6c3cb1f1fa4"}]}],
         "routes": [
           {"name": "open", "match": {"prefix": "/open/"}, "upstream": "svc"},
           {"name": "keyed", "match": {"prefix": "/keyed/"}, "upstream": "svc", "auth": {"methods": ["api_key"]},
            "limits": [{"name": "two", "algorithm": "fixed_window", "limit": 2, "window_seconds": 60, "key": ["consumer"]}]},
           {"name": "ws", "match": {"prefix": "/ws/"}, "upstream": "svc", "protocol": "websocket", "strip_prefix": true},
           {"name": "rpc", "match": {"prefix": "/pkg.Svc/"}, "upstream": "svc", "protocol": "grpc", "auth": {"methods": ["api_key"]}}
         ]}
        """
        configText = config
        let loaded = try GatewayLoader.load(bundle: ConfigBundle(configPath: directory.path + "/portcullis.json", configBytes: Array(config.utf8)))
        context = LoopContext(gateway: try Gateway.build(loaded, loops: 1, previous: nil), loop: loop)
    }

    override func tearDownWithError() throws {
        context.gateway.accessLog.close()
        try? FileManager.default.removeItem(at: directory)
    }

    private func params(_ method: String, _ uri: String, headers: [String: String] = [:]) -> [FastCGIParam] {
        var list = [FastCGIParam(name: "REQUEST_METHOD", value: method), FastCGIParam(name: "REQUEST_URI", value: uri),
                    FastCGIParam(name: "DOCUMENT_URI", value: String(uri.split(separator: "?")[0])),
                    FastCGIParam(name: "QUERY_STRING", value: uri.split(separator: "?").dropFirst().first.map(String.init) ?? ""),
                    FastCGIParam(name: "REMOTE_ADDR", value: "192.0.2.7"), FastCGIParam(name: "PORTCULLIS_REQUEST_ID", value: "rid-1")]
        for (name, value) in headers { list.append(FastCGIParam(name: name, value: value)) }
        return list
    }

    private func run(_ params: [FastCGIParam], exchange: RecordingExchange, environment: ScriptedEnvironment) {
        RequestTask(context: context, decoded: RequestDecoder.decode(params), exchange: exchange, environment: environment).start()
    }

    func testRoutedRequestWaitsForTheUpstreamThenEnds() throws {
        let exchange = RecordingExchange(), environment = ScriptedEnvironment()
        run(params("GET", "/open/a?x=1", headers: ["HTTP_ACCEPT": "text/plain"]), exchange: exchange, environment: environment)
        XCTAssertEqual(environment.sent.count, 1, "the request goes upstream")
        XCTAssertEqual(environment.ended, [], "and is not over before the upstream answers")
        let upstream = environment.sent[0].request
        XCTAssertEqual(upstream.url, "http://10.0.0.1:8080/open/a?x=1")
        XCTAssertEqual(upstream.headers["X-Request-ID"], "rid-1")
        XCTAssertEqual(upstream.headers["X-Forwarded-For"], "192.0.2.7")
        environment.answer(status: 201, headers: HTTPHeaders([("Content-Type", "text/plain"), ("Connection", "x-hop"), ("X-Hop", "1")]),
                           body: "made")
        XCTAssertEqual(exchange.status, 201)
        XCTAssertEqual(String(decoding: exchange.body, as: UTF8.self), "made")
        XCTAssertNil(exchange.headers["X-Hop"], "hop-by-hop headers named by Connection never reach the client")
        XCTAssertEqual(environment.ended, [0])
    }

    func testWebSocketHandshakeIsHandedToNginxWithTheTargetAndTheDecidedHeaders() {
        let environment = ScriptedEnvironment()
        var answers: [RecordingExchange] = []
        for _ in 0..<2 {
            let exchange = RecordingExchange()
            run(params("GET", "/ws/chat?room=1", headers: ["PORTCULLIS_UPGRADE": "WebSocket", "HTTP_UPGRADE": "WebSocket",
                                                           "HTTP_X_CONSUMER_ID": "mallory", "HTTP_COOKIE": "a=b"]),
                exchange: exchange, environment: environment)
            answers.append(exchange)
        }
        XCTAssertTrue(environment.sent.isEmpty, "the worker never proxies a handed-off request itself")
        XCTAssertEqual(environment.ended, [0, 0])
        XCTAssertEqual(answers.map(\.status), [200, 200])
        XCTAssertEqual(answers.map { $0.headers["X-Portcullis-Target"] }, ["http://portcullis_svc_0", "http://portcullis_svc_1"],
                       "the balancer picks the target")
        let first = answers[0].headers
        XCTAssertEqual(first["X-Accel-Redirect"], "@portcullis_websocket")
        XCTAssertEqual(first["X-Portcullis-Host"], "10.0.0.1:8080")
        XCTAssertEqual(first["X-Portcullis-URI"], "/chat?room=1", "strip_prefix applies")
        XCTAssertEqual(first["X-Portcullis-Set-X-Forwarded-For"], "192.0.2.7")
        XCTAssertEqual(first["X-Portcullis-Set-X-Request-ID"], "rid-1")
        XCTAssertNil(first["X-Portcullis-Set-X-Consumer-ID"], "the forged identity is dropped, so nginx sends none")
        XCTAssertTrue(answers[0].body.isEmpty)
    }

    func testHandshakeOnAnHTTPRouteAndPlainRequestOnAWebSocketRouteAreRefused() {
        let onHTTP = RecordingExchange(), plain = RecordingExchange(), environment = ScriptedEnvironment()
        run(params("GET", "/open/x", headers: ["PORTCULLIS_UPGRADE": "websocket"]), exchange: onHTTP, environment: environment)
        run(params("GET", "/ws/x"), exchange: plain, environment: environment)
        XCTAssertEqual(onHTTP.status, 400)
        XCTAssertTrue(onHTTP.text.contains("websocket-not-enabled"), onHTTP.text)
        XCTAssertEqual(plain.status, 426)
        XCTAssertEqual(plain.headers["Upgrade"], "websocket")
        XCTAssertTrue(environment.sent.isEmpty)
        // Another Upgrade (h2c) on an http route is not a WebSocket handshake: proxied as before.
        run(params("GET", "/open/y", headers: ["PORTCULLIS_UPGRADE": "h2c"]), exchange: RecordingExchange(), environment: environment)
        XCTAssertEqual(environment.sent.count, 1)
    }

    func testRefusalOnAGRPCRouteIsAGRPCStatus() {
        let refused = RecordingExchange(), admitted = RecordingExchange(), environment = ScriptedEnvironment()
        run(params("POST", "/pkg.Svc/Call"), exchange: refused, environment: environment)
        XCTAssertEqual(refused.status, 200)
        XCTAssertEqual(refused.headers["grpc-status"], "16")
        XCTAssertEqual(refused.headers["Content-Type"], "application/grpc")
        XCTAssertTrue(refused.body.isEmpty)
        run(params("POST", "/pkg.Svc/Call", headers: ["HTTP_X_API_KEY": "demo-key-change-me"]), exchange: admitted, environment: environment)
        XCTAssertEqual(admitted.headers["X-Accel-Redirect"], "@portcullis_grpc")
        XCTAssertEqual(admitted.headers["X-Portcullis-Set-X-Consumer-ID"], "demo")
        XCTAssertNil(admitted.headers["X-Portcullis-Set-X-API-Key"], "the credential never reaches the service")
        XCTAssertNil(admitted.headers["X-Portcullis-URI"])
    }

    func testTargetsRotatePerLoop() {
        let environment = ScriptedEnvironment()
        for _ in 0..<3 { run(params("GET", "/open/r"), exchange: RecordingExchange(), environment: environment) }
        XCTAssertEqual(environment.sent.map(\.request.url),
                       ["http://10.0.0.1:8080/open/r", "http://10.0.0.2:8080/open/r", "http://10.0.0.1:8080/open/r"])
    }

    func testRefusedConnectionIsRetriedOnTheOtherTargetWhateverTheMethod() {
        let exchange = RecordingExchange(body: Array("abc".utf8)), environment = ScriptedEnvironment()
        run(params("POST", "/open/p", headers: ["CONTENT_LENGTH": "3"]), exchange: exchange, environment: environment)
        XCTAssertEqual(environment.sent.map(\.request.url), ["http://10.0.0.1:8080/open/p"])
        environment.fail(.unavailable("connect: Connection refused"), notSent: true)
        XCTAssertEqual(environment.sent.map(\.request.url), ["http://10.0.0.2:8080/open/p"], "the retry goes to the other target")
        XCTAssertEqual(environment.sent[0].request.bodyLength, 3)
        environment.answer(status: 200, headers: HTTPHeaders(), body: "ok")
        XCTAssertEqual(exchange.status, 200)
        XCTAssertEqual(environment.ended.count, 1)
    }

    func testPostIsNotRetriedOnceItMayHaveReachedTheUpstream() {
        let exchange = RecordingExchange(), environment = ScriptedEnvironment()
        run(params("POST", "/open/p"), exchange: exchange, environment: environment)
        environment.fail(.unavailable("connection reset"), notSent: false)
        XCTAssertTrue(environment.sent.isEmpty)
        XCTAssertEqual(exchange.status, 502)
        let post = RecordingExchange()
        run(params("POST", "/open/q"), exchange: post, environment: environment)
        environment.answer(status: 503, headers: HTTPHeaders(), body: "busy")
        XCTAssertTrue(environment.sent.isEmpty, "a 503 to a POST stands")
        XCTAssertEqual(post.status, 503)
        XCTAssertEqual(post.text, "busy")
    }

    func testIdempotentRequestIsRetriedAfterA503AndTheRetrysAnswerStands() {
        let exchange = RecordingExchange(), environment = ScriptedEnvironment()
        run(params("GET", "/open/g"), exchange: exchange, environment: environment)
        environment.answer(status: 503, headers: HTTPHeaders(), body: "busy")
        XCTAssertFalse(exchange.headSent, "the 503 was swallowed for the retry")
        XCTAssertEqual(environment.sent.map(\.request.url), ["http://10.0.0.2:8080/open/g"])
        environment.answer(status: 200, headers: HTTPHeaders(), body: "fine")
        XCTAssertEqual(exchange.status, 200)
        XCTAssertEqual(exchange.text, "fine")
    }

    func testARetryNeverGoesToATriedTargetSoTheLastAnswerStands() {
        let exchange = RecordingExchange(), environment = ScriptedEnvironment()
        run(params("GET", "/open/g"), exchange: exchange, environment: environment)
        environment.fail(.unavailable("connection reset"), notSent: false)
        XCTAssertEqual(environment.sent.map(\.request.url), ["http://10.0.0.2:8080/open/g"], "a reset GET is retried")
        environment.answer(status: 503, headers: HTTPHeaders(), body: "busy")
        XCTAssertTrue(environment.sent.isEmpty, "both targets tried: no third try")
        XCTAssertEqual(exchange.status, 503)
        XCTAssertEqual(exchange.text, "busy")
    }

    func testTotalTimeoutIsNeverRetried() {
        let exchange = RecordingExchange(), environment = ScriptedEnvironment()
        run(params("GET", "/open/t"), exchange: exchange, environment: environment)
        environment.fail(.timedOut("no answer"), notSent: false)
        XCTAssertTrue(environment.sent.isEmpty)
        XCTAssertEqual(exchange.status, 504)
    }

    func testOpenBreakersAnswer503AtOnce() throws {
        let environment = ScriptedEnvironment()
        // Five failed requests, each tried on both targets, open both breakers (5 in a row each).
        for _ in 0..<5 {
            run(params("POST", "/open/x"), exchange: RecordingExchange(), environment: environment)
            environment.fail(.unavailable("refused"), notSent: true)
            environment.fail(.unavailable("refused"), notSent: true)
        }
        XCTAssertTrue(environment.sent.isEmpty)
        let exchange = RecordingExchange()
        run(params("GET", "/open/x"), exchange: exchange, environment: environment)
        XCTAssertTrue(environment.sent.isEmpty, "nothing is sent")
        XCTAssertEqual(exchange.status, 503)
        XCTAssertEqual(exchange.headers["Retry-After"], "5")
        XCTAssertTrue(exchange.text.contains("upstream-circuit-open"))
        // Breakers the HTTP route opened hold for handoffs too: no X-Accel-Redirect, a 503
        // (a gRPC status on a grpc route).
        let handshake = RecordingExchange(), call = RecordingExchange()
        run(params("GET", "/ws/x", headers: ["PORTCULLIS_UPGRADE": "websocket"]), exchange: handshake, environment: environment)
        run(params("POST", "/pkg.Svc/Call", headers: ["HTTP_X_API_KEY": "demo-key-change-me"]), exchange: call, environment: environment)
        XCTAssertEqual(handshake.status, 503)
        XCTAssertNil(handshake.headers["X-Accel-Redirect"])
        XCTAssertEqual(call.headers["grpc-status"], "14")
        XCTAssertNil(call.headers["X-Accel-Redirect"])
    }

    func testInstanceHealthIsServingOrDraining() throws {
        let environment = ScriptedEnvironment()
        let serving = RecordingExchange()
        run(params("GET", "/_portcullis/health"), exchange: serving, environment: environment)
        XCTAssertEqual(serving.status, 200)
        XCTAssertEqual(serving.text, #"{"status":"serving"}"#)
        XCTAssertTrue(environment.sent.isEmpty, "answered by the worker itself, before routing")
        environment.draining = true
        let draining = RecordingExchange()
        run(params("GET", "/_portcullis/health"), exchange: draining, environment: environment)
        XCTAssertEqual(draining.status, 503)
        let body = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(draining.body)) as? [String: Any])
        XCTAssertEqual(body["state"] as? String, "draining")
        XCTAssertEqual(body["request_id"] as? String, "rid-1")
    }

    func testUnknownRouteIsAnsweredWithoutUpstream() throws {
        let exchange = RecordingExchange(), environment = ScriptedEnvironment()
        run(params("GET", "/nowhere"), exchange: exchange, environment: environment)
        XCTAssertEqual(exchange.status, 404)
        XCTAssertEqual(exchange.headers["Content-Type"], ProblemDetails.contentType)
        let body = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(exchange.body)) as? [String: Any])
        XCTAssertEqual(body["request_id"] as? String, "rid-1")
        XCTAssertTrue(environment.sent.isEmpty)
        XCTAssertEqual(environment.ended.count, 1)
    }

    func testMissingCredentialNeverReachesTheUpstream() {
        let exchange = RecordingExchange(), environment = ScriptedEnvironment()
        run(params("GET", "/keyed/x"), exchange: exchange, environment: environment)
        XCTAssertEqual(exchange.status, 401)
        XCTAssertTrue(environment.sent.isEmpty)
    }

    func testLimitRejectsTheThirdRequestOfAConsumer() {
        let environment = ScriptedEnvironment()
        var statuses: [Int] = []
        for _ in 0..<3 {
            let exchange = RecordingExchange()
            run(params("GET", "/keyed/x", headers: ["HTTP_X_API_KEY": "demo-key-change-me"]), exchange: exchange, environment: environment)
            if exchange.headSent { statuses.append(exchange.status) }
        }
        XCTAssertEqual(environment.sent.count, 2, "two admitted requests went upstream")
        XCTAssertEqual(statuses, [429])
        environment.answer(status: 200, headers: HTTPHeaders(), body: "")
        XCTAssertEqual(environment.ended.count, 2, "the rejected request and the first answered one ended")
    }

    func testCutShortRequestIsRefused() {
        let exchange = RecordingExchange(), environment = ScriptedEnvironment()
        run([FastCGIParam(name: "REQUEST_URI", value: "/open/a")], exchange: exchange, environment: environment)
        XCTAssertEqual(exchange.status, 400)
        XCTAssertTrue(environment.sent.isEmpty)
    }

    func testUnreadBodyIsReportedWhenAnsweredEarly() {
        let exchange = RecordingExchange(body: Array(repeating: 0x61, count: 10)), environment = ScriptedEnvironment()
        run(params("POST", "/keyed/x", headers: ["CONTENT_LENGTH": "10"]), exchange: exchange, environment: environment)
        XCTAssertEqual(exchange.status, 401)
        XCTAssertEqual(environment.ended, [10], "the connection drains (or closes on) what nobody read")
    }

    func testDecoderMatchesNamesAsBytesAndKeepsFactsApart() {
        let decoded = RequestDecoder.decode([
            FastCGIParam(name: "REQUEST_METHOD", value: "PATCH"), FastCGIParam(name: "DOCUMENT_URI", value: "/a b"),
            FastCGIParam(name: "HTTP_X_API_KEY", value: "k"), FastCGIParam(name: "HTTP_PORTCULLIS_HOST", value: "evil"),
            FastCGIParam(name: "PORTCULLIS_HOST", value: "API.Example"), FastCGIParam(name: "HTTP_CONTENT_LENGTH", value: "9"),
            FastCGIParam(name: "CONTENT_LENGTH", value: "3"), FastCGIParam(name: "CONTENT_TYPE", value: "text/plain"),
            FastCGIParam(name: "REQUEST_SCHEME", value: "http"), FastCGIParam(name: "PORTCULLIS_SCHEME", value: "https"),
        ])
        XCTAssertTrue(decoded.hasMethod)
        XCTAssertEqual(decoded.request.method, "PATCH")
        XCTAssertEqual(decoded.request.path, "/a b")
        XCTAssertEqual(decoded.request.host, "api.example", "the host nginx routed on, lower-cased")
        XCTAssertEqual(decoded.request.headers["X-Api-Key"], "k")
        XCTAssertEqual(decoded.request.headers["Portcullis-Host"], "evil", "a client header stays a header")
        XCTAssertEqual(decoded.request.contentLength, 3, "CONTENT_LENGTH, not the client's header copy")
        XCTAssertEqual(decoded.request.headers.values("Content-Length"), [])
        XCTAssertEqual(decoded.request.headers["Content-Type"], "text/plain")
        XCTAssertEqual(decoded.request.facts.scheme, "https")
        XCTAssertEqual(decoded.paramBytes, ["REQUEST_METHOD=PATCH", "DOCUMENT_URI=/a b", "HTTP_X_API_KEY=k", "HTTP_PORTCULLIS_HOST=evil",
                                            "PORTCULLIS_HOST=API.Example", "HTTP_CONTENT_LENGTH=9", "CONTENT_LENGTH=3",
                                            "CONTENT_TYPE=text/plain", "REQUEST_SCHEME=http", "PORTCULLIS_SCHEME=https"]
                                            .reduce(0) { $0 + $1.utf8.count })
        XCTAssertFalse(RequestDecoder.decode([FastCGIParam(name: "REQUEST_URI", value: "/")]).hasMethod)
    }

    /// authentication.md: the fingerprint is the SHA-256 of PORTCULLIS_SSL_CLIENT_CERT; the
    /// FINGERPRINT param (nginx's SHA-1) is never read, and without a certificate only the DN
    /// remains.
    func testCertificateFactsComeFromTheCertificateParamNotTheFingerprintParam() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/auth")
        let pem = try String(contentsOf: dir.appendingPathComponent("client-cert.pem"), encoding: .utf8)
        let sha256 = try String(contentsOf: dir.appendingPathComponent("client-cert.sha256"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let escaped = pem.utf8.map { byte in
            (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || (0x30...0x39).contains(byte) ? String(UnicodeScalar(byte)) : String(format: "%%%02X", byte)
        }.joined()
        let facts = { (extra: [FastCGIParam]) in
            RequestDecoder.decode([FastCGIParam(name: "REQUEST_METHOD", value: "GET"), FastCGIParam(name: "DOCUMENT_URI", value: "/"),
                                   FastCGIParam(name: "PORTCULLIS_SSL_CLIENT_VERIFY", value: "SUCCESS"),
                                   FastCGIParam(name: "PORTCULLIS_SSL_CLIENT_S_DN", value: "CN=x")] + extra).request.clientCertificate
        }
        XCTAssertEqual(facts([FastCGIParam(name: "PORTCULLIS_SSL_CLIENT_CERT", value: escaped),
                              FastCGIParam(name: "PORTCULLIS_SSL_CLIENT_FINGERPRINT", value: String(repeating: "ab", count: 20))])?.fingerprint, sha256)
        let withoutCert = facts([FastCGIParam(name: "PORTCULLIS_SSL_CLIENT_FINGERPRINT", value: sha256)])
        XCTAssertNil(withoutCert?.fingerprint)
        XCTAssertEqual(withoutCert?.subjectDN, "CN=x")
    }

    // MARK: metrics, admin pages, trace context

    /// The test's context, rebuilt with the metrics file mapped (block 0, as a master would give).
    private func useMetrics() throws -> MetricsSegment {
        let segment = try MetricsSegment.create(path: MetricsSegment.defaultPath(runtimeDirectory: directory.path))
        segment.assignNames(for: context.gateway.config)
        segment.claimBlock(0, loops: 1)
        let old = context.gateway
        context = LoopContext(gateway: try Gateway.build(GatewayLoader.load(bundle: ConfigBundle(configPath: directory.path + "/portcullis.json",
                                                                                                configBytes: Array(configText.utf8))),
                                                         loops: 1, previous: old, metricsBlock: 0), loop: loop)
        return segment
    }

    func testRequestsAreCountedWhenTheyEnd() throws {
        let segment = try useMetrics()
        let environment = ScriptedEnvironment()
        run(params("GET", "/open/a"), exchange: RecordingExchange(), environment: environment)
        var snapshot = segment.snapshot(rateTable: nil, upstreams: nil)
        let open = context.gateway.metrics!.routeSlots[0]
        XCTAssertEqual(snapshot.requests(route: open, statusClass: 1), 0, "nothing counted while the upstream is pending")
        environment.answer(status: 200, headers: HTTPHeaders(), body: "ok")
        run(params("GET", "/keyed/x"), exchange: RecordingExchange(), environment: environment)
        run(params("GET", "/nowhere"), exchange: RecordingExchange(), environment: environment)
        snapshot = segment.snapshot(rateTable: nil, upstreams: nil)
        XCTAssertEqual(snapshot.requests(route: open, statusClass: 1), 1)
        XCTAssertEqual(snapshot.requests(route: MetricsLayout.unmatchedRoute, statusClass: 3), 1)
        let text = PrometheusText.render(snapshot, version: "t")
        XCTAssertTrue(text.contains("portcullis_upstream_duration_seconds_count{route=\"open\",class=\"2xx\"} 1\n"), text)
        XCTAssertTrue(text.contains("portcullis_auth_failures_total{route=\"keyed\",reason=\"missing_credential\"} 1\n"))
    }

    func testAdminPagesAreServedOnlyWithNginxsMark() throws {
        _ = try useMetrics()
        let environment = ScriptedEnvironment()
        let marked = RecordingExchange()
        run(params("GET", "/_portcullis/metrics") + [FastCGIParam(name: "PORTCULLIS_ADMIN", value: "1")], exchange: marked, environment: environment)
        XCTAssertEqual(marked.status, 200)
        XCTAssertEqual(marked.headers["Content-Type"], PrometheusText.contentType)
        XCTAssertTrue(String(decoding: marked.body, as: UTF8.self).contains("# TYPE portcullis_requests_total counter"))
        let page = RecordingExchange()
        run(params("GET", "/_portcullis/") + [FastCGIParam(name: "PORTCULLIS_ADMIN", value: "1")], exchange: page, environment: environment)
        XCTAssertEqual(page.status, 200)
        XCTAssertTrue(String(decoding: page.body, as: UTF8.self).hasPrefix("<!doctype html>"))
        let spoofed = RecordingExchange()
        run(params("GET", "/_portcullis/metrics", headers: ["HTTP_PORTCULLIS_ADMIN": "1"]), exchange: spoofed, environment: environment)
        XCTAssertEqual(spoofed.status, 404, "a client header cannot pose as nginx's mark")
        XCTAssertTrue(environment.ended.count == 3)
    }

    func testUpstreamGetsTraceContextAndTheLogItsTraceId() throws {
        let environment = ScriptedEnvironment()
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        run(params("GET", "/open/t", headers: ["HTTP_TRACEPARENT": parent, "HTTP_TRACESTATE": "v=1"]), exchange: RecordingExchange(),
            environment: environment)
        run(params("GET", "/open/t"), exchange: RecordingExchange(), environment: environment)
        let kept = try XCTUnwrap(TraceContext.parse(environment.sent[0].request.headers["traceparent"] ?? ""))
        XCTAssertEqual(kept.traceIdHex, "4bf92f3577b34da6a3ce929d0e0e4736")
        XCTAssertNotEqual(kept.spanId, 0x00f0_67aa_0ba9_02b7)
        XCTAssertEqual(environment.sent[0].request.headers["tracestate"], "v=1")
        let started = try XCTUnwrap(TraceContext.parse(environment.sent[1].request.headers["traceparent"] ?? ""))
        XCTAssertNotEqual(started.traceIdHex, kept.traceIdHex)
        XCTAssertNil(environment.sent[1].request.headers["tracestate"])
        XCTAssertEqual(environment.sent[0].request.headers.values("traceparent").count, 1, "the client's field is replaced, not kept beside")
        XCTAssertEqual(environment.sent[0].request.headers.values("tracestate"), ["v=1"])
        // An invalid parent: a new trace, and the client's tracestate is not passed on.
        run(params("GET", "/open/t", headers: ["HTTP_TRACEPARENT": "00-bad", "HTTP_TRACESTATE": "v=2"]), exchange: RecordingExchange(),
            environment: environment)
        let replaced = environment.sent[2].request.headers
        XCTAssertEqual(replaced.values("traceparent").count, 1)
        XCTAssertNotNil(TraceContext.parse(replaced["traceparent"] ?? ""))
        XCTAssertEqual(replaced.values("tracestate"), [])
    }

    /// Operator-chosen nginx facts (`PORTCULLIS_VAR_*`) are kept for `var:` key parts; a client
    /// header of a similar name stays a header, and nothing else unknown is kept.
    func testDecoderKeepsPortcullisVarParamsOnly() {
        let decoded = RequestDecoder.decode([
            FastCGIParam(name: "REQUEST_METHOD", value: "GET"), FastCGIParam(name: "PORTCULLIS_VAR_TENANT", value: "acme"),
            FastCGIParam(name: "HTTP_PORTCULLIS_VAR_TENANT", value: "evil"), FastCGIParam(name: "PORTCULLIS_VAR_", value: "x"),
            FastCGIParam(name: "SERVER_PORT", value: "8080"), FastCGIParam(name: "PORTCULLIS_VARIANT", value: "y"),
        ])
        XCTAssertEqual(decoded.request.variable("TENANT"), "acme")
        XCTAssertEqual(decoded.request.variables.map(\.name), ["TENANT"])
        XCTAssertEqual(decoded.request.headers["Portcullis-Var-Tenant"], "evil")
        XCTAssertTrue(RequestDecoder.decode([FastCGIParam(name: "REQUEST_METHOD", value: "GET")]).request.variables.isEmpty)
    }

    func testHostForRoutingAndForwardingIsNginxsNotTheHostHeader() {
        let decoded = RequestDecoder.decode([
            FastCGIParam(name: "REQUEST_METHOD", value: "GET"), FastCGIParam(name: "DOCUMENT_URI", value: "/"),
            FastCGIParam(name: "HTTP_HOST", value: "b.example"), FastCGIParam(name: "PORTCULLIS_HOST", value: "a.example"),
        ])
        XCTAssertEqual(decoded.request.host, "a.example")
        XCTAssertEqual(decoded.request.facts.host, "a.example", "X-Forwarded-Host is the host nginx routed on")
        let noFact = RequestDecoder.decode([FastCGIParam(name: "REQUEST_METHOD", value: "GET"), FastCGIParam(name: "HTTP_HOST", value: "b.example")])
        XCTAssertEqual(noFact.request.host, "", "a Host header alone is not a fact")
        XCTAssertEqual(noFact.request.facts.host, "")
    }
}
