import Foundation
import PortcullisCore
import PortcullisPlugins

/// Everything a worker process derives once from a configuration and shares, read-only, with
/// all its threads.
public final class Gateway: Sendable {
    public let config: GatewayConfig
    public let router: Router
    public let accessLog: AccessLog
    /// Per route (indexed like `config.routes`): its upstream and its transformation chain.
    let routeUpstreams: [UpstreamConfig]
    let chains: [TransformChain]
    let authenticator: Authenticator
    /// Query parameters that carry credentials, removed before forwarding.
    let credentialQueryParameters: Set<String>

    /// The instance's shared-memory rate table (mapped by every worker).
    let rateTable: SharedMemoryRateTable?

    public init(loaded: LoadedGateway, accessLog: AccessLog, jwksSources: [String: any JWKSSource] = [:],
                rateTable: SharedMemoryRateTable?) {
        self.rateTable = rateTable
        self.config = loaded.config
        self.router = Router(routes: loaded.config.routes)
        self.accessLog = accessLog
        self.routeUpstreams = loaded.config.routes.map { loaded.config.upstreams[$0.upstream]! }
        self.chains = loaded.chains
        self.authenticator = Authenticator(config: loaded.config, jwksSources: jwksSources)
        self.credentialQueryParameters = Set(Authenticator.credentialQueryParameters(loaded.config.auth))
    }
}

/// The request pipeline on one worker thread: route → transform → proxy → transform, with an
/// access-log line for every request. Owns the thread's upstream connection cache.
public final class GatewayHandler: ExchangeHandler {
    private let gateway: Gateway
    private let upstream = UpstreamClient()
    private var roundRobin: [String: Int] = [:]
    /// This thread's limiter (its Redis connection is the thread's own).
    private let limiter: RateLimiter?

    public init(gateway: Gateway) {
        self.gateway = gateway
        if let table = gateway.rateTable {
            limiter = RateLimiter(local: table, remote: gateway.config.rateLimit.redis.map { RedisRateLimitStore(settings: $0) },
                                  settings: gateway.config.rateLimit,
                                  observer: table.observer(log: { EventLog.emit("rate_limit", [("detail", .string($0))]) }))
        } else {
            limiter = nil
        }
    }

    public func handle(_ exchange: FastCGIExchange, params: [FastCGIParam]) {
        let started = ContinuousClock.now
        let request = RequestDecoder.decode(params)
        exchange.requestId = request.requestId
        var log = AccessRecord(request: request)

        defer {
            log.status = exchange.status
            log.bytesSent = exchange.bytesSent
            log.durationMs = (ContinuousClock.now - started).milliseconds
            gateway.accessLog.record(line: log.line)
        }

        // libfcgi accepts params of any size; the worker bounds them itself.
        if exchange.paramBytes > gateway.config.server.maxHeaderBytes {
            exchange.sendProblem(.headersTooLarge(limit: gateway.config.server.maxHeaderBytes), requestId: request.requestId)
            return
        }
        switch gateway.router.route(request) {
        case .notFound:
            exchange.sendProblem(.notFound(path: request.path), requestId: request.requestId)
        case .methodNotAllowed(let allowed):
            exchange.sendProblem(.methodNotAllowed(request.method, allowed: allowed), requestId: request.requestId)
        case .matched(let match):
            let route = gateway.config.routes[match.routeIndex]
            log.route = route.name
            if let length = request.contentLength, length > gateway.config.server.maxBodyBytes {
                exchange.sendProblem(.payloadTooLarge(limit: gateway.config.server.maxBodyBytes), requestId: request.requestId)
                return
            }
            guard let admitted = admit(request, route: route, exchange: exchange, log: &log) else { return }
            let pass = RoutedRequest(request: request, route: route, match: match,
                                     upstream: gateway.routeUpstreams[match.routeIndex], chain: gateway.chains[match.routeIndex],
                                     identity: admitted.identity, responseHeaders: admitted.limitHeaders)
            forward(pass, exchange: exchange, log: &log)
        }
    }

    /// Authentication, then the route's rate limits. Nil when the request was answered here
    /// (401/403/429/503): it never reaches the upstream.
    private func admit(_ request: GatewayRequest, route: RouteConfig, exchange: FastCGIExchange,
                       log: inout AccessRecord) -> (identity: Identity?, limitHeaders: HTTPHeaders)? {
        var identity: Identity?
        if let policy = route.auth {
            switch gateway.authenticator.authenticate(request, policy: policy, now: Int64(time(nil))) {
            case .rejected(let problem):
                exchange.sendProblem(problem, requestId: request.requestId)
                return nil
            case .authenticated(let who):
                identity = who
                log.consumer = who.consumerId
                log.credential = who.credentialId
            case .anonymous:
                break
            }
        }
        guard !route.limits.isEmpty else { return (identity, HTTPHeaders()) }
        guard let limiter else {
            exchange.sendProblem(.internalError("rate limiting is unavailable"), requestId: request.requestId)
            return nil
        }
        let subject = RateLimitSubject(
            credentialId: identity?.credentialId, consumerId: identity?.consumerId, consumerGroups: identity?.groups ?? [],
            clientIP: request.facts.clientAddress, routeName: route.name, header: { request.headers[$0] },
            claim: { identity?.claims[$0].flatMap(Self.claimText) })
        let outcome = limiter.evaluate(route.limits, subject: subject, now: RateLimitClock.nowMicros())
        log.limits = outcome.logSummary
        if let problem = outcome.problem {
            exchange.sendProblem(problem, requestId: request.requestId)
            return nil
        }
        return (identity, outcome.headers)
    }

    /// Applies request transforms, sends the request upstream and relays (or transforms) the
    /// answer.
    private func forward(_ pass: RoutedRequest, exchange: FastCGIExchange, log: inout AccessRecord) {
        let request = pass.request
        let path = Router.upstreamPath(route: pass.route, result: pass.match, requestPath: request.path)
        var headers = HeaderHygiene.upstreamRequestHeaders(request.headers, facts: request.facts, requestId: request.requestId)
        Authenticator.upstreamHeaders(&headers, identity: pass.identity, settings: gateway.config.auth, policy: pass.route.auth)
        var outgoing = TransformableRequest(method: request.method, path: path, rawQuery: upstreamQuery(request), headers: headers)
        var body: BodySource = exchange
        var bodyLength = request.contentLength
        let context = pass.chain.isEmpty ? nil : templateContext(pass)

        if let context, !pass.chain.request.isEmpty {
            if pass.chain.needsRequestBody(outgoing, context: context) {
                // The rule set with the smallest limit (the first of equals), as the chain reports it.
                let limiting = pass.chain.request.filter(\.touchesBody).min { $0.maxBodyBytes < $1.maxBodyBytes }
                let limit = limiting?.maxBodyBytes ?? gateway.config.server.maxBodyBytes
                if let length = request.contentLength, length > limit {
                    log.error = "request body above \(limit) bytes"
                    exchange.sendProblem(.transformBodyTooLarge(phase: .request, limit: limit, ruleSet: limiting?.name ?? ""),
                                         requestId: request.requestId)
                    return
                }
                outgoing.body = BufferedBody.readAll(from: exchange, expected: Int(request.contentLength ?? 0))
            }
            do {
                try pass.chain.applyRequest(to: &outgoing, context: context)
            } catch {
                log.error = error.description
                exchange.sendProblem(error.problem, requestId: request.requestId)
                return
            }
            if let bytes = outgoing.body {
                body = BufferedBody(bytes)
                bodyLength = Int64(bytes.count)
            }
        }

        let target = nextTarget(pass.upstream)
        var url = target + PercentEncoding.encode(outgoing.path, allowed: .path)
        if !outgoing.rawQuery.isEmpty { url += "?" + outgoing.rawQuery }
        let upstreamRequest = UpstreamRequest(method: outgoing.method, url: url, headers: outgoing.headers, bodyLength: bodyLength,
                                              connectTimeoutMs: pass.upstream.connectTimeoutMs, timeoutMs: pass.upstream.timeoutMs)
        let hooks = responseHooks(pass, context: context)
        let (outcome, collected) = upstream.perform(upstreamRequest, body: body, sink: exchange, hooks: hooks,
                                                    requestId: request.requestId)
        log.upstream = target
        log.upstreamStatus = outcome.status
        log.upstreamMs = outcome.elapsedMs

        switch outcome.failure {
        case nil:
            if let collected, let context {
                sendTransformed(collected, pass: pass, context: context, exchange: exchange, log: &log)
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
        let limit = Int(chain.responseBodyLimit ?? Int64(gateway.config.transform.maxBodyBytes))
        return ResponseHooks(
            mode: { status, headers in chain.needsResponseBody(status: status, headers: headers, context: context) ? .collect(limit: limit) : .stream },
            head: { status, headers in
                for (name, value) in added { headers.set(name, value) }
                var noBody: [UInt8]?
                do {
                    try chain.applyResponse(status: &status, headers: &headers, body: &noBody, context: context)
                    return nil
                } catch let error as TransformError {
                    return error.problem
                } catch {
                    return .internalError("response transform failed")
                }
            })
    }

    private func sendTransformed(_ collected: CollectedResponse, pass: RoutedRequest, context: TemplateContext,
                                 exchange: FastCGIExchange, log: inout AccessRecord) {
        let chain = pass.chain
        if collected.overflowed {
            let limit = chain.responseBodyLimit ?? gateway.config.transform.maxBodyBytes
            let ruleSet = chain.response.first(where: \.touchesBody)?.name ?? ""
            log.error = "response body above \(limit) bytes"
            exchange.sendProblem(.transformBodyTooLarge(phase: .response, limit: limit, ruleSet: ruleSet), requestId: context.requestId)
            return
        }
        var status = collected.status
        var headers = HeaderHygiene.downstreamResponseHeaders(collected.headers)
        for (name, value) in pass.responseHeaders { headers.set(name, value) }
        var body: [UInt8]? = collected.body
        do {
            try chain.applyResponse(status: &status, headers: &headers, body: &body, context: context)
        } catch {
            log.error = error.description
            exchange.sendProblem(error.problem, requestId: context.requestId)
            return
        }
        let bytes = body ?? []
        headers.set("Content-Length", String(bytes.count))
        exchange.sendHead(status: status, headers: headers)
        exchange.sendBody(bytes)
    }

    private func templateContext(_ pass: RoutedRequest) -> TemplateContext {
        TemplateContext(consumerId: pass.identity?.consumerId, consumerGroups: pass.identity?.groups ?? [],
                        claims: pass.identity?.claims, pathParams: pass.match.params, requestHeaders: pass.request.headers,
                        queryItems: pass.request.queryItems, method: pass.request.method, path: pass.request.path,
                        requestId: pass.request.requestId, route: pass.route.name, now: Date())
    }

    /// A claim as a rate-limit key value: strings as they are, other scalars as JSON text.
    static func claimText(_ value: JSONValue) -> String? {
        switch value {
        case .string(let s): return s
        case .null, .array, .object: return nil
        default: return JSONCodec.serialize(value)
        }
    }

    /// The raw query, without parameters that carry credentials.
    private func upstreamQuery(_ request: GatewayRequest) -> String {
        guard !gateway.credentialQueryParameters.isEmpty, !request.rawQuery.isEmpty else { return request.rawQuery }
        return request.rawQuery.split(separator: "&", omittingEmptySubsequences: true).filter { pair in
            let name = pair.split(separator: "=", maxSplits: 1).first.map { PercentEncoding.decode($0, plusAsSpace: true) } ?? ""
            return !gateway.credentialQueryParameters.contains(name)
        }.joined(separator: "&")
    }

    private func nextTarget(_ upstream: UpstreamConfig) -> String {
        guard upstream.targets.count > 1 else { return upstream.targets[0] }
        let i = roundRobin[upstream.name, default: 0]
        roundRobin[upstream.name] = i &+ 1
        return upstream.targets[i % upstream.targets.count]
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

/// A request body held in memory (after a request transform), read by libcurl.
final class BufferedBody: BodySource {
    private let bytes: [UInt8]
    private var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let n = min(buffer.count, bytes.count - offset)
        guard n > 0 else { return 0 }
        bytes.withUnsafeBytes { src in
            buffer.baseAddress!.copyMemory(from: src.baseAddress! + offset, byteCount: n)
        }
        offset += n
        return n
    }

    /// Reads a whole body; nginx has already buffered it, so this does not wait on the client.
    static func readAll(from source: BodySource, expected: Int) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(expected)
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { source.read(into: $0) }
            if n <= 0 { break }
            out.append(contentsOf: chunk[0..<n])
        }
        return out
    }
}

/// The fields of one access-log line.
struct AccessRecord {
    var requestId: String
    var method: String
    var path: String
    var client: String
    var route: String?
    var status = 0
    var upstream: String?
    var upstreamStatus: Int?
    var durationMs = 0.0
    var upstreamMs: Double?
    var bytesSent = 0
    var error: String?
    var consumer: String?
    var credential: String?
    var limits: String?

    init(request: GatewayRequest) {
        requestId = request.requestId
        method = request.method
        path = request.path
        client = request.facts.clientAddress
    }

    /// The JSON line, fields in documented order; optional fields only when set.
    var line: [UInt8] {
        var w = JSONLineWriter()
        w.field("time", RFC3339.format(Date(), milliseconds: true))
        w.field("request_id", requestId)
        w.field("route", route)
        w.field("method", method)
        w.field("path", path)
        w.field("client", client)
        w.field("status", status)
        w.field("upstream", upstream)
        w.field("upstream_status", upstreamStatus.flatMap { $0 > 0 ? $0 : nil })
        w.field("duration_ms", milliseconds: durationMs)
        w.field("upstream_ms", milliseconds: upstreamMs)
        w.field("bytes_sent", bytesSent)
        if let consumer { w.field("consumer", consumer) }
        if let credential { w.field("credential", credential) }
        if let limits { w.field("limits", limits) }
        if let error { w.field("error", error) }
        return w.finish()
    }
}

extension Duration {
    var milliseconds: Double {
        let (s, atto) = components
        return Double(s) * 1000 + Double(atto) / 1e15
    }
}
