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
    /// Runs `work` on the loop after `nanoseconds` (a retry's backoff; never a sleep).
    func after(nanoseconds: UInt64, _ work: @escaping () -> Void)
    /// The worker is stopping (it serves what it has, but a load balancer should look elsewhere).
    var draining: Bool { get }
    /// The request was routed to route slot `metricsSlot` of the metrics file (the scoreboard).
    func routed(metricsSlot: Int)
    /// The loop starts work on a routed request (recorded for the hard-timeout log).
    func noteStarted(requestId: String, route: String)
}

extension RequestEnvironment {
    func routed(metricsSlot: Int) {}
    func noteStarted(requestId: String, route: String) {}
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
    private let request: GatewayRequest
    /// Body bytes read from nginx so far (the rest is drained when the request ends).
    private var bodyRead: Int64 = 0
    private var ended = false
    /// Concurrency leases held until the request ends.
    private var leases: [RateLimitLease] = []
    /// The route's rate-limit outcome (nil: the route has no limits), whose RateLimit fields
    /// the gateway adds to the response. Kept here, not in every copy of the `RoutedRequest`.
    private var limitOutcome: SharedRateLimitOutcome?
    /// nginx always sends REQUEST_METHOD; without it the params were cut short.
    private let complete: Bool
    private let paramBytes: Int
    /// Index of the matched route in `config.routes` (nil: none matched).
    private var routeIndex: Int?
    /// Counted in the request metrics (not the gateway's own pages or health checks).
    private var counted = true
    /// The trace context sent upstream (W3C traceparent/tracestate).
    private let trace: (context: TraceContext, tracestate: String?)
    /// Slow-request threshold of the matched route (ns; nil: not logged, stages not timed).
    private var slowNanos: UInt64?
    /// When authentication, rate limiting and request transformation finished (ns, only timed
    /// when `slowNanos` is set).
    private var authDone: UInt64 = 0
    private var limitDone: UInt64 = 0
    private var transformDone: UInt64 = 0
    /// The upstream exchange across its tries (set when the request goes upstream).
    private var call: UpstreamCall?
    /// The try waiting for its upstream: the request, its templates, the target and its breaker admission.
    private var tryInFlight: (pass: RoutedRequest, templates: TemplateContext?, target: Int, admission: CircuitBreaker.Admission)?
    /// The matched route is a `grpc` route: refusals are answered with a gRPC status.
    private var grpcRoute = false

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
            counted = false
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
        if request.path == InstanceHealth.path { return answerHealth() }
        switch gateway.router.route(request) {
        case .notFound:
            answer(.notFound(path: request.path))
        case .methodNotAllowed(let allowed):
            answer(.methodNotAllowed(request.method, allowed: allowed))
        case .matched(let match):
            let entry = gateway.routes[match.routeIndex]
            let route = entry.route
            log.route = route.name
            routeIndex = match.routeIndex
            // One branch for plain HTTP: the rest only for handoff routes and handshakes.
            if route.protocol.handsOff || request.websocketUpgrade {
                grpcRoute = route.protocol == .grpc
                if request.websocketUpgrade, route.protocol != .websocket {
                    return answer(.websocketNotEnabled(route: route.name, protocol: route.protocol))
                }
            }
            if let ms = route.slowMs ?? gateway.config.metrics.slowMs { slowNanos = UInt64(ms) * 1_000_000 }
            if let metrics = gateway.metrics { environment.routed(metricsSlot: metrics.routeSlots[match.routeIndex]) }
            environment.noteStarted(requestId: request.requestId, route: route.name)
            if let length = request.contentLength, length > gateway.config.server.maxBodyBytes {
                return answer(.payloadTooLarge(limit: gateway.config.server.maxBodyBytes))
            }
            authenticate(entry, match: match)
        }
    }

    /// Answers a gateway error and ends the request: problem+json, or on a `grpc` route the
    /// gRPC status it maps to.
    private func answer(_ problem: ProblemDetails) {
        if grpcRoute {
            let (status, headers) = GRPCRefusal.head(problem)
            log.grpcStatus = GRPCRefusal.code(forHTTPStatus: problem.status)
            log.error = problem.detail
            exchange.sendHead(status: status, headers: headers)
        } else {
            exchange.sendProblem(problem, requestId: request.requestId)
        }
        end()
    }

    private func end() {
        guard !ended else { return }
        ended = true
        leaveBulkhead()
        log.status = exchange.status
        log.bytesSent = exchange.bytesSent
        let elapsed = EventLoop.monotonicNanos() &- started
        log.durationMs = Double(elapsed) / 1_000_000
        if let metrics = gateway.metrics, counted {
            metrics.recordRequest(routeSlot: metrics.routeSlot(routeIndex), status: log.status, totalMicros: elapsed / 1000,
                                  upstreamMicros: log.upstreamMs.map { UInt64(max(0, $0) * 1000) })
        }
        if let slowNanos, elapsed >= slowNanos { logSlow(elapsed: elapsed) }
        if !leases.isEmpty { context.limiter?.release(leases) }
        gateway.accessLog.record(loop: environment.loopIndex) { log.append(to: &$0) }
        environment.requestEnded(unreadBody: max(0, (request.contentLength ?? 0) - bodyRead))
    }

    // MARK: instance health

    /// `/_portcullis/health`: 200 while this instance serves; 503 while it drains, or when a
    /// route's Redis limit fails closed and this loop cannot reach Redis (a PING, answered
    /// asynchronously like a limit's call).
    private func answerHealth() {
        log.route = InstanceHealth.path
        counted = false
        if environment.draining { return answer(InstanceHealth.unavailable("draining")) }
        guard gateway.config.routes.contains(where: { $0.limits.contains { $0.store == .redis && $0.onStoreFailure == .closed } }),
              let redis = context.redis else {
            return sendHealthy()
        }
        redis.command(["PING"]) { [self] result in
            if case .success = result { sendHealthy() } else { answer(InstanceHealth.unavailable("redis_unreachable")) }
        }
    }

    private func sendHealthy() {
        var headers = HTTPHeaders()
        headers.add("Content-Type", "application/json")
        headers.add("Cache-Control", "no-store")
        let body = Array(#"{"status":"serving"}"#.utf8)
        headers.add("Content-Length", String(body.count))
        exchange.sendHead(status: 200, headers: headers)
        exchange.sendBody(body)
        end()
    }

    // MARK: admission

    private func authenticate(_ entry: RouteEntry, match: RouteMatchResult) {
        let route = entry.route
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
            return forward(RoutedRequest(entry: entry, match: match, identity: identity))
        }
        guard let limiter = context.limiter else {
            return answer(.internalError("rate limiting is unavailable"))
        }
        let inputs = entry.limitInputs
        // Built in place: a subject copied from a local would retain and release each field.
        var evaluation = RateLimitEvaluation(
            limits: route.limits,
            subject: RateLimitSubject(
                credentialId: inputs.credential ? identity?.rateLimitCredential : nil, consumerId: identity?.consumerId,
                consumerGroups: identity?.groups ?? [], clientIP: request.facts.clientAddress, routeName: route.name,
                request: inputs.request ? request : nil, claims: identity?.claims, pathParams: match.params),
            now: RateLimitClock.nowMicros())
        let step = limiter.advance(&evaluation)
        // Decided at once unless a limit waits for Redis: only then is a completion (a closure
        // holding the route entry, the match and the identity) made.
        if case .done(let outcome) = step { return admit(outcome, entry, match: match, identity: identity) }
        limiter.finish(evaluation, from: step) { [self] outcome in admit(outcome, entry, match: match, identity: identity) }
    }

    /// Goes on with a request whose limits are decided: answers a rejection, else forwards it.
    private func admit(_ outcome: consuming RateLimitOutcome, _ entry: RouteEntry, match: RouteMatchResult, identity: Identity?) {
        // The outcome moves into the shared box (no copy of its results) and is read there.
        let shared = SharedRateLimitOutcome(outcome)
        log.limits = shared
        leases = shared.outcome.leases
        limitOutcome = shared
        if slowNanos != nil { limitDone = EventLoop.monotonicNanos() }
        if case .limited = shared.outcome.verdict {
            gateway.metrics?.rateLimited(routeIndex: match.routeIndex, limitIndex: shared.outcome.results.count - 1)
        }
        if let problem = shared.outcome.problem { return answer(problem) }
        forward(RoutedRequest(entry: entry, match: match, identity: identity))
    }

    // MARK: upstream

    /// Applies request transforms and sends the request upstream.
    private func forward(_ pass: RoutedRequest) {
        if pass.entry.route.protocol.handsOff { return handOff(pass) }
        let path = pass.entry.upstreamPath(pass.match, requestPath: request.path)
        var outgoing = TransformableRequest(method: request.method, path: path, rawQuery: upstreamQuery(request), headers: upstreamHeaders(pass))
        var body: BodySource = exchange
        var bodyLength = request.contentLength
        let templates = pass.entry.chain.isEmpty ? nil : templateContext(pass)

        if let templates, !pass.entry.chain.request.isEmpty {
            var limit = pass.entry.chain.requestBodyNeed(outgoing, context: templates)
            if let could = limit, let length = request.contentLength, length > could.bytes {
                // The limit may be a rule set's that could apply but does not: ask which really run.
                do {
                    limit = try pass.entry.chain.appliedRequestBodyLimit(outgoing, context: templates)
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
                try pass.entry.chain.applyRequest(to: &outgoing, context: templates)
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
        if outgoing.method == "HEAD", pass.entry.chain.response.contains(where: \.touchesBody) { outgoing.method = "GET" }

        let index = gateway.routeUpstreamIndex[pass.match.routeIndex]
        let upstream = gateway.upstreamTargets[index]
        if let limit = upstream.config.maxInFlight {
            guard upstream.enterBulkhead(limit: limit) else {
                log.error = "upstream \"\(upstream.config.name)\" saturated"
                return answer(.upstreamSaturated(upstream.config.name, limit: limit))
            }
        }
        let call = UpstreamCall(upstream: upstream, index: index, outgoing: outgoing, body: body, bodyLength: bodyLength,
                                idempotent: IdempotentMethods.contains(outgoing.method), hashKey: hashKey(upstream.config.balancer, pass))
        if upstream.retries {
            RetryBudget.noteRequest(upstream.own.budget, nowSeconds: upstream.table.nowMs() / 1000, policy: upstream.config.retry)
            // A retry sends the body again, so it is kept when it fits in memory (nginx has it whole).
            if body === exchange as BodySource, let length = bodyLength, length > 0, length <= Int64(HTTP1Exchange.inlineBodyLimit) {
                let bytes = BufferedBody.readAll(from: exchange, expected: Int(length))
                call.replayBody = bytes
                call.bodyLength = Int64(bytes.count)
            }
        }
        self.call = call
        sendTry(pass, templates: templates)
    }

    /// The headers the upstream gets before any rule set: hop-by-hop and forged gateway
    /// fields removed, forwarding, correlation, identity and trace fields set.
    private func upstreamHeaders(_ pass: RoutedRequest) -> HTTPHeaders {
        var headers = HeaderHygiene.upstreamRequestHeaders(request.headers, facts: request.facts, requestId: request.requestId)
        Authenticator.upstreamHeaders(&headers, identity: pass.identity, settings: gateway.config.auth, policy: pass.entry.route.auth)
        // The client's trace fields are replaced: one pass, by length first, finds both (a
        // `set` and a `remove` walked every field twice with a case-insensitive comparison each).
        if headers.fields.contains(where: { Self.isTraceField($0.name) }) { headers.removeAll(where: Self.isTraceField) }
        headers.add("traceparent", trace.context.header)
        if let state = trace.tracestate { headers.add("tracestate", state) }
        return headers
    }

    /// `traceparent` or `tracestate`, any case.
    static func isTraceField(_ name: String) -> Bool {
        switch name.utf8.count {
        case 10: return name.caseInsensitiveEquals("tracestate")
        case 11: return name.caseInsensitiveEquals("traceparent")
        default: return false
        }
    }

    /// A `websocket` or `grpc` request, admitted: the worker picks the target and answers with
    /// `X-Accel-Redirect` to the snippet's named location, which proxies it (docs/protocols.md).
    /// The worker's part of the request ends here; nginx carries the connection or call.
    private func handOff(_ pass: RoutedRequest) {
        let proto = pass.entry.route.protocol
        if proto == .websocket, !request.websocketUpgrade { return answer(.websocketUpgradeRequired(route: pass.entry.route.name)) }
        let index = gateway.routeUpstreamIndex[pass.match.routeIndex]
        let upstream = gateway.upstreamTargets[index]
        let nowMs = upstream.table.nowMs()
        // A breaker is only ever opened by HTTP routes' tries (a handoff's outcome is nginx's),
        // but an open one is honoured here too, for one target as for several.
        guard let target = context.pickTarget(upstream: index, hashKey: hashKey(upstream.config.balancer, pass), tried: 0, nowMs: nowMs),
              upstream.eligible(target, tried: 0, nowMs: nowMs, ignoringHealth: true) else {
            log.error = "no target of upstream \"\(upstream.config.name)\" accepts requests"
            return answer(.upstreamCircuitOpen(upstream.config.name, retryAfterSeconds: upstream.secondsUntilAvailable(nowMs: nowMs)))
        }
        gateway.metrics?.countTarget(.requests, upstream: index, target: target)
        let targetURL = upstream.config.targets[target]
        let path = pass.entry.upstreamPath(pass.match, requestPath: request.path)
        var fields = Handoff.answerFields(proto: proto, upstream: upstream.config.name, targetIndex: target, targetURL: targetURL,
                                          uri: PercentEncoding.requestTarget(path: path, rawQuery: upstreamQuery(request)),
                                          upstreamHeaders: upstreamHeaders(pass), clientHeaders: responseHeaders)
        fields.add("Content-Length", "0")
        log.upstream = targetURL
        log.handoff = proto.rawValue
        exchange.sendHead(status: 200, headers: fields)
        end()
    }

    /// The request's key for a hash balancer; nil (round-robin) when the request has none.
    private func hashKey(_ balancer: BalancerAlgorithm, _ pass: RoutedRequest) -> UInt64? {
        guard case .hash(let on) = balancer else { return nil }
        let text: String?
        switch on {
        case .header(let name): text = request.headers[name]
        case .consumer: text = pass.identity?.consumerId
        case .clientIP: text = request.facts.clientAddress
        }
        return text.map { StableHash.hash($0) }
    }

    /// Sends the next try to a target the balancer picks, through its breaker.
    private func sendTry(_ pass: RoutedRequest, templates: TemplateContext?) {
        guard let call else { return }
        let upstream = call.upstream
        let nowMs = upstream.table.nowMs()
        var picked: (Int, CircuitBreaker.Admission)?
        while picked == nil, let i = context.pickTarget(upstream: call.index, hashKey: call.hashKey, tried: call.tried, nowMs: nowMs) {
            let admission = upstream.breaker.admit(upstream.slots[i].breaker, nowMs: nowMs)
            if case .rejected = admission { call.markTried(i) } else { picked = (i, admission) }
        }
        guard let (i, admission) = picked else {
            return noTargetLeft(pass, templates: templates)
        }
        call.markTried(i)
        call.tries += 1
        let target = upstream.config.targets[i]
        upstream.slots[i].inFlightCell(column: upstream.column).add(1)
        gateway.metrics?.countTarget(.requests, upstream: call.index, target: i)
        let url = target + PercentEncoding.requestTarget(path: call.outgoing.path, rawQuery: call.outgoing.rawQuery)
        var upstreamRequest = UpstreamRequest(method: call.outgoing.method, url: url, headers: call.outgoing.headers, bodyLength: call.bodyLength,
                                              connectTimeoutMs: pass.entry.upstream.connectTimeoutMs, timeoutMs: pass.entry.upstream.timeoutMs)
        upstreamRequest.allowAccelBuffering = pass.entry.upstream.allowAccelBuffering
        upstreamRequest.host = call.outgoing.host
        log.upstream = target
        if slowNanos != nil, transformDone == 0 { transformDone = EventLoop.monotonicNanos() }
        let body: BodySource? = call.replayBody.map { BufferedBody($0) } ?? call.body
        tryInFlight = (pass, templates, i, admission)
        // The completion captures the task alone (no closure context to allocate and free per
        // request): what the try needs afterwards waits in `tryInFlight`.
        environment.startUpstream(upstreamRequest, body: body, sink: exchange, hooks: retryingHooks(pass, context: templates),
                                  requestId: request.requestId) { [self] outcome, collected in tryCompleted(outcome, collected) }
    }

    private func tryCompleted(_ outcome: UpstreamOutcome, _ collected: CollectedResponse?) {
        guard let (pass, templates, target, admission) = tryInFlight else { return }
        tryInFlight = nil
        tryEnded(pass, templates: templates, target: target, admission: admission, outcome: outcome, collected: collected)
    }

    /// Every target is open, out of probes, or already tried by this request.
    private func noTargetLeft(_ pass: RoutedRequest, templates: TemplateContext?) {
        guard let call else { return }
        if let last = call.lastOutcome {
            guard last.swallowed else {
                // A retry found no other target: the last try's answer stands.
                return upstreamEnded(pass, templates: templates, outcome: last, collected: nil)
            }
            // Its answer was discarded for this retry: say what it was.
            log.upstreamStatus = last.status
            log.tries = call.triesJSON
            log.error = "no target left for the retry"
            return answer(.badGateway("upstream \"\(call.upstream.config.name)\" answered \(last.status) and no other target could take the retry"))
        }
        let upstream = call.upstream
        log.error = "no target of upstream \"\(upstream.config.name)\" accepts requests"
        answer(.upstreamCircuitOpen(upstream.config.name, retryAfterSeconds: upstream.secondsUntilAvailable(nowMs: upstream.table.nowMs())))
    }

    /// The response hooks, plus (when this request may still be retried) swallowing a
    /// retryable status so the retry's answer is the one the client gets.
    private func retryingHooks(_ pass: RoutedRequest, context templates: TemplateContext?) -> ResponseHooks {
        var hooks = responseHooks(pass, context: templates)
        guard let call, call.idempotent, call.mayRetry else { return hooks }
        // By status alone, so a plainly streamed response stays bytes end to end.
        hooks.swallow = { [self] status in
            call.upstream.config.retry.onStatuses.contains(status) && self.retryAllowed()
        }
        return hooks
    }

    /// Whether one more try may be made now: tries left, another target eligible, nothing
    /// sent to the client yet; takes the retry from the upstream's budget.
    private func retryAllowed() -> Bool {
        guard let call, call.mayRetry, !exchange.headSent else { return false }
        let upstream = call.upstream
        let nowMs = upstream.table.nowMs()
        guard (0..<upstream.slots.count).contains(where: { upstream.eligible($0, tried: call.tried, nowMs: nowMs, ignoringHealth: true) }) else {
            return false
        }
        return RetryBudget.acquire(upstream.own.budget, nowSeconds: nowMs / 1000, policy: upstream.config.retry)
    }

    private func tryEnded(_ pass: RoutedRequest, templates: TemplateContext?, target: Int, admission: CircuitBreaker.Admission,
                          outcome: UpstreamOutcome, collected: CollectedResponse?) {
        guard let call else { return }
        let upstream = call.upstream
        upstream.slots[target].inFlightCell(column: upstream.column).add(UInt64.max)
        let failed: Bool
        switch outcome.failure {
        case .unavailable?, .timedOut?: failed = true
        case .clientGone?, .refused?: failed = false
        case nil: failed = upstream.config.breaker.failureStatuses.contains(outcome.status)
        }
        let nowMs = upstream.table.nowMs()
        let slot = upstream.slots[target]
        upstream.breaker.record(slot.breaker, window: upstream.config.breaker.failureRatioPercent == nil ? nil : slot.window,
                                success: !failed, admission: admission, nowMs: nowMs)
        if let policy = upstream.config.healthCheck { HealthWord.record(slot.health, success: !failed, policy: policy) }
        if failed { gateway.metrics?.countTarget(.failures, upstream: call.index, target: target) }
        call.record(target: upstream.config.targets[target], outcome: outcome)

        let again: Bool
        switch outcome.failure {
        case _ where outcome.swallowed:
            again = true  // the retry was granted when the response was swallowed
        case .unavailable?, .timedOut?:
            // Refused, reset or connect timeout before the upstream saw the request: any
            // method. A failure after it may have: idempotent methods only, never a timeout.
            let safe = outcome.notSent || (call.idempotent && call.replayable)
            again = safe && !isTimeoutAfterSend(outcome) && retryAllowed()
        default:
            again = false
        }
        guard again else { return upstreamEnded(pass, templates: templates, outcome: outcome, collected: collected) }
        gateway.metrics?.countTarget(.retries, upstream: call.index, target: target)
        let backoff = upstream.config.retry.backoffMs
        guard backoff > 0 else { return sendTry(pass, templates: templates) }
        let delay = UInt64.random(in: 0...UInt64(backoff) * 1_000_000)
        environment.after(nanoseconds: delay) { [self] in sendTry(pass, templates: templates) }
    }

    /// A total timeout (not a connect timeout): the upstream may still be working on it.
    private func isTimeoutAfterSend(_ outcome: UpstreamOutcome) -> Bool {
        if case .timedOut? = outcome.failure { return !outcome.notSent }
        return false
    }

    private func leaveBulkhead() {
        guard let call, call.upstream.config.maxInFlight != nil, !call.leftBulkhead else { return }
        call.upstream.leaveBulkhead()
        call.leftBulkhead = true
    }

    private func upstreamEnded(_ pass: RoutedRequest, templates: TemplateContext?, outcome: UpstreamOutcome, collected: CollectedResponse?) {
        log.upstreamStatus = outcome.status
        log.upstreamMs = outcome.elapsedMs
        if let call, call.tries > 1 { log.tries = call.triesJSON }
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
                exchange.sendProblem(.badGateway("upstream \"\(pass.entry.upstream.name)\" is unavailable: \(why)"), requestId: request.requestId)
            }
        case .timedOut(let why)?:
            log.error = why
            if !exchange.headSent {
                exchange.sendProblem(.gatewayTimeout("upstream \"\(pass.entry.upstream.name)\" did not answer within \(pass.entry.upstream.timeoutMs) ms"),
                                     requestId: request.requestId)
            }
        }
        end()
    }

    private func responseHooks(_ pass: RoutedRequest, context: TemplateContext?) -> ResponseHooks {
        guard let context, !pass.entry.chain.response.isEmpty else {
            guard let limits = limitOutcome, limits.outcome.addsHeaderFields else { return .streaming }
            return .streaming(adding: limits)
        }
        let added = responseHeaders
        let chain = pass.entry.chain
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
        let chain = pass.entry.chain
        if collected.overflowed {
            let limit: BodyLimit
            do {
                let headers = Self.transformInput(collected.headers, added: responseHeaders)
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
        var headers = Self.transformInput(collected.headers, added: responseHeaders, allowAccelBuffering: pass.entry.upstream.allowAccelBuffering)
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

    /// Headers the gateway adds to the response (RateLimit-*), as `HTTPHeaders` for the paths
    /// that edit a head (transforms, handoffs); the streaming path writes them as bytes.
    private var responseHeaders: HTTPHeaders { limitOutcome?.outcome.headers ?? HTTPHeaders() }

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
                        claims: pass.identity?.claims, pathParams: pass.match.params, requestHeaders: request.headers,
                        queryItems: request.queryItems, method: request.method, path: request.path,
                        requestId: request.requestId, route: pass.entry.route.name, now: Date(),
                        clientIP: request.facts.clientAddress, host: request.facts.host, scheme: request.facts.scheme)
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

/// A request's exchange with its upstream across tries: what to send again, which targets were
/// tried (a bit each; targets past 64 are never excluded), what each try gave. A class: each
/// step reads and updates it in place (a struct was copied, every field retained, per step).
final class UpstreamCall {
    let upstream: UpstreamTargets
    let index: Int
    let outgoing: TransformableRequest
    let body: BodySource
    var bodyLength: Int64?
    let idempotent: Bool
    let hashKey: UInt64?
    /// The body read whole, to be sent again by a retry.
    var replayBody: [UInt8]?
    var tried: UInt64 = 0
    var tries = 0
    var lastOutcome: UpstreamOutcome?
    var leftBulkhead = false
    /// Tries before the last one (only a retried request keeps any: nothing is built otherwise).
    private var earlier: [(target: String, outcome: UpstreamOutcome)] = []
    private var lastTarget = ""

    init(upstream: UpstreamTargets, index: Int, outgoing: TransformableRequest, body: BodySource, bodyLength: Int64?, idempotent: Bool, hashKey: UInt64?) {
        self.upstream = upstream
        self.index = index
        self.outgoing = outgoing
        self.body = body
        self.bodyLength = bodyLength
        self.idempotent = idempotent
        self.hashKey = hashKey
    }

    /// The request can be written again (no body, or one kept in memory).
    var replayable: Bool { replayBody != nil || (bodyLength ?? 0) == 0 }
    /// Tries left and the request can be sent again.
    var mayRetry: Bool { upstream.retries && tries <= upstream.config.retry.attempts && replayable }

    func markTried(_ i: Int) { if i < 64 { tried |= 1 << UInt64(i) } }

    func record(target: String, outcome: UpstreamOutcome) {
        if let lastOutcome { earlier.append((lastTarget, lastOutcome)) }
        lastOutcome = outcome
        lastTarget = target
    }

    /// Each try in order, for the access log's `tries`.
    var triesJSON: [UInt8] {
        var entries = earlier
        if let lastOutcome { entries.append((lastTarget, lastOutcome)) }
        return JSONCodec.serializeBytes(.array(entries.map { target, outcome in
            var entry = JSONObject([("target", .string(target))])
            entry["status"] = outcome.status > 0 ? .int(Int64(outcome.status)) : .null
            switch outcome.failure {
            case .unavailable(let why)?, .timedOut(let why)?: entry["error"] = .string(why)
            default: break
            }
            if outcome.swallowed { entry["retried"] = .bool(true) }
            entry["ms"] = .double((outcome.elapsedMs * 1000).rounded() / 1000)
            return .object(entry)
        }))
    }
}

/// A request after routing (and authentication): everything the rest of the pipeline needs
/// besides the request itself, which stays the task's (a copy here retained every field).
/// A class: handed along every step and kept across the upstream wait, it is retained once
/// instead of each of its fields being copied.
final class RoutedRequest {
    let entry: RouteEntry
    let match: RouteMatchResult
    let identity: Identity?

    init(entry: RouteEntry, match: RouteMatchResult, identity: Identity?) {
        self.entry = entry
        self.match = match
        self.identity = identity
    }
}
