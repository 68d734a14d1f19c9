import Foundation
import PortcullisCore
import PortcullisPlugins

/// A request's exchange with nginx: its answer goes out through it, its body comes in
/// through it (FastCGI in production, memory in tests).
protocol GatewayExchange: ResponseSink, BodySource {
    /// The correlation id, added to every response head; set once decided.
    var requestId: String { get set }
}

extension FastCGIExchange: GatewayExchange {}

/// What a request needs from the loop it runs on.
protocol RequestEnvironment: AnyObject {
    /// The loop's index (its access-log slot).
    var loopIndex: Int { get }
    /// Sends a request upstream; `completion` runs on the loop when the exchange ends.
    func startUpstream(_ request: UpstreamRequest, body: BodySource?, sink: ResponseSink, hooks: ResponseHooks,
                       requestId: String, completion: @escaping (UpstreamOutcome, CollectedResponse?) -> Void)
    /// The answer is complete; `unreadBody` bytes of the request body were never read.
    func requestEnded(unreadBody: Int64)
    /// The request was routed to route slot `metricsSlot` of the metrics file (the scoreboard).
    func routed(metricsSlot: Int)
}

extension RequestEnvironment {
    func routed(metricsSlot: Int) {}
}

/// One request on an event loop, as a chain of steps that each either answer or hand over to
/// the next: decode → route → authenticate → limit (may wait for Redis) → transform → upstream
/// (waits for the answer) → transform → answer. Every wait is a completion the loop calls
/// later; nothing here blocks except reading a request body nginx has already buffered.
/// The access-log line is written once, when the request ends.
final class RequestTask {
    private let context: LoopContext
    private let environment: RequestEnvironment
    private let exchange: GatewayExchange
    private let started: UInt64
    private var gateway: Gateway { context.gateway }
    private var log: AccessRecord
    private var request: GatewayRequest
    /// Body bytes read from nginx so far (the rest is drained when the request ends).
    private var bodyRead: Int64 = 0
    private var ended = false
    /// nginx always sends REQUEST_METHOD; without it the params were cut short.
    private let complete: Bool
    private let paramBytes: Int
    /// Index of the matched route in `config.routes` (nil: none matched).
    private var routeIndex: Int?
    /// The trace context sent upstream (W3C traceparent/tracestate).
    private let trace: (context: TraceContext, tracestate: String?)
    /// Slow-request threshold of the matched route (ns; nil: not logged, stages not timed).
    private var slowNanos: UInt64?
    /// When authentication, rate limiting and request transformation finished (ns, only timed
    /// when `slowNanos` is set).
    private var authDone: UInt64 = 0
    private var limitDone: UInt64 = 0
    private var transformDone: UInt64 = 0

    /// `decoded` and `exchange` are the request as it arrived; `environment` is the loop's
    /// (its upstream client, its log slot, what happens when the request ends).
    /// `started` is when the request arrived (CLOCK_MONOTONIC ns; now when not given).
    init(context: LoopContext, decoded: RequestDecoder.Decoded, exchange: GatewayExchange, environment: RequestEnvironment,
         started: UInt64? = nil) {
        self.context = context
        self.environment = environment
        self.exchange = exchange
        self.started = started ?? EventLoop.monotonicNanos()
        complete = decoded.hasMethod
        paramBytes = decoded.paramBytes
        request = decoded.request
        exchange.requestId = request.requestId
        log = AccessRecord(request: request)
        let decided = TracePropagation.decide(traceparent: request.headers.values("traceparent"),
                                              tracestate: request.headers.values("tracestate"), random: &context.traceIds)
        trace = (decided.context, decided.tracestate)
        log.trace = decided.context
    }

    func start() {
        guard complete else { return answer(.incompleteRequest(missing: "REQUEST_METHOD")) }
        if request.adminPages {
            AdminPages.serve(request, gateway: gateway, exchange: exchange)
            return end()
        }
        // libfcgi accepts params of any size; the worker bounds them itself.
        if paramBytes > gateway.config.server.maxHeaderBytes {
            return answer(.headersTooLarge(limit: gateway.config.server.maxHeaderBytes))
        }
        if HeaderHygiene.exceedsConnectionTokenCap(request.headers) {
            return answer(.tooManyConnectionTokens(limit: HeaderHygiene.maxConnectionTokens))
        }
        switch gateway.router.route(request) {
        case .notFound:
            answer(.notFound(path: request.path))
        case .methodNotAllowed(let allowed):
            answer(.methodNotAllowed(request.method, allowed: allowed))
        case .matched(let match):
            let route = gateway.config.routes[match.routeIndex]
            log.route = route.name
            routeIndex = match.routeIndex
            if let ms = route.slowMs ?? gateway.config.metrics.slowMs { slowNanos = UInt64(ms) * 1_000_000 }
            if let metrics = gateway.metrics { environment.routed(metricsSlot: metrics.routeSlots[match.routeIndex]) }
            if let length = request.contentLength, length > gateway.config.server.maxBodyBytes {
                return answer(.payloadTooLarge(limit: gateway.config.server.maxBodyBytes))
            }
            authenticate(route: route, match: match)
        }
    }

    /// Answers a gateway error and ends the request.
    private func answer(_ problem: ProblemDetails) {
        exchange.sendProblem(problem, requestId: request.requestId)
        end()
    }

    private func end() {
        guard !ended else { return }
        ended = true
        log.status = exchange.status
        log.bytesSent = exchange.bytesSent
        let elapsed = EventLoop.monotonicNanos() &- started
        log.durationMs = Double(elapsed) / 1_000_000
        if let metrics = gateway.metrics, !request.adminPages {
            metrics.recordRequest(routeSlot: metrics.routeSlot(routeIndex), status: log.status, totalMicros: elapsed / 1000,
                                  upstreamMicros: log.upstreamMs.map { UInt64(max(0, $0) * 1000) })
        }
        if let slowNanos, elapsed >= slowNanos { logSlow(elapsed: elapsed) }
        let record = log
        gateway.accessLog.record(loop: environment.loopIndex) { record.append(to: &$0) }
        environment.requestEnded(unreadBody: max(0, (request.contentLength ?? 0) - bodyRead))
    }

    // MARK: admission

    private func authenticate(route: RouteConfig, match: RouteMatchResult) {
        var identity: Identity?
        if let policy = route.auth {
            switch gateway.authenticator.authenticate(request, policy: policy, now: Int64(time(nil))) {
            case .rejected(let problem):
                gateway.metrics?.authFailure(routeIndex: match.routeIndex, problemType: problem.type)
                return answer(problem)
            case .authenticated(let who):
                identity = who
                log.consumer = who.consumerId
                log.credential = who.credentialId
            case .anonymous:
                break
            }
        }
        if slowNanos != nil {
            authDone = EventLoop.monotonicNanos()
            limitDone = authDone
        }
        guard !route.limits.isEmpty else {
            return forward(RoutedRequest(request: request, route: route, match: match,
                                         upstream: gateway.routeUpstreams[match.routeIndex], chain: gateway.chains[match.routeIndex],
                                         identity: identity, responseHeaders: HTTPHeaders()))
        }
        guard let limiter = context.limiter else {
            return answer(.internalError("rate limiting is unavailable"))
        }
        let request = self.request
        let subject = RateLimitSubject(
            credentialId: identity?.rateLimitCredential, consumerId: identity?.consumerId, consumerGroups: identity?.groups ?? [],
            clientIP: request.facts.clientAddress, routeName: route.name, header: { request.headers[$0] },
            claim: { identity?.claims[$0].flatMap(Self.claimText) })
        limiter.evaluate(route.limits, subject: subject, now: RateLimitClock.nowMicros()) { [self] outcome in
            log.limits = outcome.logSummary
            if slowNanos != nil { limitDone = EventLoop.monotonicNanos() }
            if outcome.verdict == .limited { gateway.metrics?.rateLimited(routeIndex: match.routeIndex, limitIndex: outcome.results.count - 1) }
            if let problem = outcome.problem { return answer(problem) }
            forward(RoutedRequest(request: request, route: route, match: match,
                                  upstream: gateway.routeUpstreams[match.routeIndex], chain: gateway.chains[match.routeIndex],
                                  identity: identity, responseHeaders: outcome.headers))
        }
    }

    /// A claim as a rate-limit key value: strings as they are, other scalars as JSON text.
    static func claimText(_ value: JSONValue) -> String? {
        switch value {
        case .string(let s): return s
        case .null, .array, .object: return nil
        default: return JSONCodec.serialize(value)
        }
    }

    // MARK: upstream

    /// Applies request transforms and sends the request upstream.
    private func forward(_ pass: RoutedRequest) {
        let request = pass.request
        let path = Router.upstreamPath(route: pass.route, result: pass.match, requestPath: request.path)
        var headers = HeaderHygiene.upstreamRequestHeaders(request.headers, facts: request.facts, requestId: request.requestId)
        Authenticator.upstreamHeaders(&headers, identity: pass.identity, settings: gateway.config.auth, policy: pass.route.auth)
        headers.set("traceparent", trace.context.header)
        if let state = trace.tracestate { headers.set("tracestate", state) } else { headers.remove("tracestate") }
        var outgoing = TransformableRequest(method: request.method, path: path, rawQuery: upstreamQuery(request), headers: headers)
        var body: BodySource = exchange
        var bodyLength = request.contentLength
        let templates = pass.chain.isEmpty ? nil : templateContext(pass)

        if let templates, !pass.chain.request.isEmpty {
            var limit = pass.chain.requestBodyNeed(outgoing, context: templates)
            if let could = limit, let length = request.contentLength, length > could.bytes {
                // The limit may be a rule set's that could apply but does not: ask which really run.
                do {
                    limit = try pass.chain.appliedRequestBodyLimit(outgoing, context: templates)
                } catch {
                    transformFailed()
                    log.error = error.description
                    return answer(error.problem)
                }
                if let exact = limit, length > exact.bytes {
                    transformFailed()
                    log.error = "request body above \(exact.bytes) bytes"
                    return answer(.transformBodyTooLarge(phase: .request, limit: exact.bytes, ruleSet: exact.ruleSet))
                }
            }
            if limit != nil {
                outgoing.body = BufferedBody.readAll(from: exchange, expected: Int(request.contentLength ?? 0))
                bodyRead = Int64(outgoing.body?.count ?? 0)
            }
            do {
                try pass.chain.applyRequest(to: &outgoing, context: templates)
            } catch {
                transformFailed()
                log.error = error.description
                return answer(error.problem)
            }
            if let bytes = outgoing.body {
                body = BufferedBody(bytes)
                bodyLength = Int64(bytes.count)
            }
        }
        if body === exchange as BodySource { bodyRead = request.contentLength ?? 0 }
        // HEAD where response rules may rewrite the body: the upstream is asked with GET, so
        // the answer carries the Content-Length of the body GET gets; nginx sends no body.
        if outgoing.method == "HEAD", pass.chain.response.contains(where: \.touchesBody) { outgoing.method = "GET" }

        let target = context.nextTarget(routeIndex: pass.match.routeIndex)
        var url = target + PercentEncoding.encode(outgoing.path, allowed: .path)
        if !outgoing.rawQuery.isEmpty { url += "?" + PercentEncoding.encodeNonASCII(outgoing.rawQuery) }
        var upstreamRequest = UpstreamRequest(method: outgoing.method, url: url, headers: outgoing.headers, bodyLength: bodyLength,
                                              connectTimeoutMs: pass.upstream.connectTimeoutMs, timeoutMs: pass.upstream.timeoutMs)
        upstreamRequest.allowAccelBuffering = pass.upstream.allowAccelBuffering
        upstreamRequest.host = outgoing.host
        log.upstream = target
        if slowNanos != nil { transformDone = EventLoop.monotonicNanos() }
        environment.startUpstream(upstreamRequest, body: body, sink: exchange, hooks: responseHooks(pass, context: templates),
                              requestId: request.requestId) { [self] outcome, collected in
            upstreamEnded(pass, templates: templates, outcome: outcome, collected: collected)
        }
    }

    private func upstreamEnded(_ pass: RoutedRequest, templates: TemplateContext?, outcome: UpstreamOutcome, collected: CollectedResponse?) {
        log.upstreamStatus = outcome.status
        log.upstreamMs = outcome.elapsedMs
        switch outcome.failure {
        case nil:
            if let collected, let templates {
                sendTransformed(collected, pass: pass, context: templates)
            }
        case .clientGone?, .refused?:
            break
        case .unavailable(let why)?:
            log.error = why
            if !exchange.headSent {
                exchange.sendProblem(.badGateway("upstream \"\(pass.upstream.name)\" is unavailable: \(why)"), requestId: request.requestId)
            }
        case .timedOut(let why)?:
            log.error = why
            if !exchange.headSent {
                exchange.sendProblem(.gatewayTimeout("upstream \"\(pass.upstream.name)\" did not answer within \(pass.upstream.timeoutMs) ms"),
                                     requestId: request.requestId)
            }
        }
        end()
    }

    private func responseHooks(_ pass: RoutedRequest, context: TemplateContext?) -> ResponseHooks {
        let added = pass.responseHeaders
        guard let context, !pass.chain.response.isEmpty else {
            if added.count == 0 { return .streaming }
            return ResponseHooks(head: { _, headers in
                for (name, value) in added { headers.set(name, value) }
                return nil
            })
        }
        let chain = pass.chain
        let metrics = gateway.metrics, routeIndex = pass.match.routeIndex
        return ResponseHooks(
            mode: { status, headers in
                guard let need = chain.responseBodyNeed(status: status, headers: headers, context: context) else { return .stream }
                return .collect(limit: Int(need.bytes))
            },
            head: { status, headers in
                for (name, value) in added { headers.set(name, value) }
                var noBody: [UInt8]?
                do {
                    try chain.applyResponse(status: &status, headers: &headers, body: &noBody, context: context)
                    return nil
                } catch let error as TransformError {
                    metrics?.transformError(routeIndex: routeIndex)
                    return error.problem
                } catch {
                    metrics?.transformError(routeIndex: routeIndex)
                    return .internalError("response transform failed")
                }
            },
            overflow: { status, headers, size in
                // The limit may be a rule set's that could apply but does not: ask which really run.
                let transformed = Self.transformInput(headers, added: added)
                guard let use = try? chain.appliedResponseBodyUse(status: status, headers: transformed, context: context) else {
                    return .collect(limit: 0)
                }
                guard let limit = use.limit else { return .stream }
                if !use.readsOriginal { return .discard }
                return limit.bytes >= size ? .collect(limit: Int(limit.bytes)) : .collect(limit: 0)
            })
    }

    private func sendTransformed(_ collected: CollectedResponse, pass: RoutedRequest, context: TemplateContext) {
        let chain = pass.chain
        if collected.overflowed {
            let limit: BodyLimit
            do {
                let headers = Self.transformInput(collected.headers, added: pass.responseHeaders)
                limit = try chain.appliedResponseBodyUse(status: collected.status, headers: headers, context: context).limit
                    ?? BodyLimit(bytes: 0, ruleSet: "")
            } catch {
                transformFailed()
                log.error = error.description
                exchange.sendProblem(error.problem, requestId: context.requestId)
                return
            }
            transformFailed()
            log.error = "response body above \(limit.bytes) bytes"
            exchange.sendProblem(.transformBodyTooLarge(phase: .response, limit: limit.bytes, ruleSet: limit.ruleSet), requestId: context.requestId)
            return
        }
        var status = collected.status
        var headers = Self.transformInput(collected.headers, added: pass.responseHeaders, allowAccelBuffering: pass.upstream.allowAccelBuffering)
        var body: [UInt8]? = collected.discarded ? nil : collected.body
        do {
            try chain.applyResponse(status: &status, headers: &headers, body: &body, context: context)
        } catch {
            transformFailed()
            log.error = error.description
            exchange.sendProblem(error.problem, requestId: context.requestId)
            return
        }
        let bytes = body ?? []
        headers.set("Content-Length", String(bytes.count))
        exchange.sendHead(status: status, headers: headers)
        if request.method != "HEAD" { exchange.sendBody(bytes) }
    }

    /// The slow-request line: who, where, and the time each stage took (a stage that did not
    /// run counts 0).
    private func logSlow(elapsed: UInt64) {
        func ms(_ from: UInt64, _ to: UInt64) -> JSONValue { .double(to > from && from > 0 ? Double(to - from) / 1_000_000 : 0) }
        EventLog.emit("slow_request", [
            ("request_id", .string(request.requestId)), ("trace_id", .string(trace.context.traceIdHex)),
            ("route", Self.jsonText(log.route)), ("consumer", Self.jsonText(log.consumer)),
            ("upstream", Self.jsonText(log.upstream)), ("status", .int(Int64(log.status))),
            ("duration_ms", .double(Double(elapsed) / 1_000_000)), ("threshold_ms", .double(Double(slowNanos ?? 0) / 1_000_000)),
            ("auth_ms", ms(started, authDone)), ("limit_ms", ms(authDone, limitDone)), ("transform_ms", ms(limitDone, transformDone)),
            ("upstream_ms", .double(log.upstreamMs ?? 0)),
        ])
    }

    private static func jsonText(_ s: String?) -> JSONValue { s.map { .string($0) } ?? .null }

    private func transformFailed() {
        if let routeIndex { gateway.metrics?.transformError(routeIndex: routeIndex) }
    }

    /// The upstream's headers as response rule sets see them: cleaned for the client, with the
    /// gateway's own (RateLimit-*) added.
    private static func transformInput(_ upstream: HTTPHeaders, added: HTTPHeaders, allowAccelBuffering: Bool = true) -> HTTPHeaders {
        var headers = HeaderHygiene.downstreamResponseHeaders(upstream, allowAccelBuffering: allowAccelBuffering)
        for (name, value) in added { headers.set(name, value) }
        return headers
    }

    private func templateContext(_ pass: RoutedRequest) -> TemplateContext {
        TemplateContext(consumerId: pass.identity?.consumerId, consumerGroups: pass.identity?.groups ?? [],
                        claims: pass.identity?.claims, pathParams: pass.match.params, requestHeaders: pass.request.headers,
                        queryItems: pass.request.queryItems, method: pass.request.method, path: pass.request.path,
                        requestId: pass.request.requestId, route: pass.route.name, now: Date(),
                        clientIP: pass.request.facts.clientAddress, host: pass.request.facts.host, scheme: pass.request.facts.scheme)
    }

    /// The raw query, without parameters that carry credentials.
    private func upstreamQuery(_ request: GatewayRequest) -> String {
        guard !gateway.credentialQueryParameters.isEmpty, !request.rawQuery.isEmpty else { return request.rawQuery }
        return request.rawQuery.split(separator: "&", omittingEmptySubsequences: true).filter { pair in
            let name = pair.split(separator: "=", maxSplits: 1).first.map { PercentEncoding.decode($0, plusAsSpace: true) } ?? ""
            return !gateway.credentialQueryParameters.contains(name)
        }.joined(separator: "&")
    }
}

/// A request after routing (and authentication): everything the rest of the pipeline needs.
struct RoutedRequest {
    let request: GatewayRequest
    let route: RouteConfig
    let match: RouteMatchResult
    let upstream: UpstreamConfig
    let chain: TransformChain
    let identity: Identity?
    /// Headers the gateway adds to the response (RateLimit-*).
    let responseHeaders: HTTPHeaders
}
