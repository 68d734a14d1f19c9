import Foundation
import PortcullisCore

/// Everything a worker process derives once from a configuration and shares, read-only, with
/// all its threads.
public final class Gateway: Sendable {
    public let config: GatewayConfig
    public let router: Router
    public let accessLog: AccessLog
    /// Upstreams by route index, resolved once.
    let routeUpstreams: [UpstreamConfig]

    public init(config: GatewayConfig, accessLog: AccessLog) {
        self.config = config
        self.router = Router(routes: config.routes)
        self.accessLog = accessLog
        self.routeUpstreams = config.routes.map { config.upstreams[$0.upstream]! }
    }
}

/// The request pipeline on one worker thread: route → proxy, with an access-log line for
/// every request. Owns the thread's upstream connection cache.
public final class GatewayHandler: ExchangeHandler {
    private let gateway: Gateway
    private let upstream = UpstreamClient()
    private var roundRobin: [String: Int] = [:]

    public init(gateway: Gateway) { self.gateway = gateway }

    public func handle(_ exchange: FastCGIExchange, params: [(name: Substring, value: Substring)]) {
        let started = ContinuousClock.now
        let request = RequestDecoder.decode(params)
        exchange.requestId = request.requestId
        var log = AccessRecord(request: request)

        defer {
            log.status = exchange.status
            log.bytesSent = exchange.bytesSent
            log.durationMs = (ContinuousClock.now - started).milliseconds
            gateway.accessLog.record(log.json)
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
            proxy(request, route: route, match: match, upstream: gateway.routeUpstreams[match.routeIndex],
                  exchange: exchange, log: &log)
        }
    }

    private func proxy(_ request: GatewayRequest, route: RouteConfig, match: RouteMatchResult, upstream config: UpstreamConfig,
                       exchange: FastCGIExchange, log: inout AccessRecord) {
        let target = nextTarget(config)
        let path = Router.upstreamPath(route: route, result: match, requestPath: request.path)
        var url = target + PercentEncoding.encode(path, allowed: .path)
        if !request.rawQuery.isEmpty { url += "?" + request.rawQuery }
        let headers = HeaderHygiene.upstreamRequestHeaders(request.headers, facts: request.facts, requestId: request.requestId)
        let upstreamRequest = UpstreamRequest(method: request.method, url: url, headers: headers,
                                              bodyLength: request.contentLength,
                                              connectTimeoutMs: config.connectTimeoutMs, timeoutMs: config.timeoutMs)
        let (outcome, _) = upstream.perform(upstreamRequest, body: exchange, sink: exchange, mode: .stream)
        log.upstream = target
        log.upstreamStatus = outcome.status
        log.upstreamMs = outcome.elapsedMs
        switch outcome.failure {
        case nil, .clientGone?:
            break
        case .unavailable(let why)?:
            log.error = why
            if !exchange.headSent {
                exchange.sendProblem(.badGateway("upstream \"\(config.name)\" is unavailable: \(why)"), requestId: request.requestId)
            }
        case .timedOut(let why)?:
            log.error = why
            if !exchange.headSent {
                exchange.sendProblem(.gatewayTimeout("upstream \"\(config.name)\" did not answer within \(config.timeoutMs) ms"),
                                     requestId: request.requestId)
            }
        }
    }

    private func nextTarget(_ upstream: UpstreamConfig) -> String {
        guard upstream.targets.count > 1 else { return upstream.targets[0] }
        let i = roundRobin[upstream.name, default: 0]
        roundRobin[upstream.name] = i &+ 1
        return upstream.targets[i % upstream.targets.count]
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

    init(request: GatewayRequest) {
        requestId = request.requestId
        method = request.method
        path = request.path
        client = request.facts.clientAddress
    }

    var json: JSONObject {
        var o = JSONObject([
            ("time", .string(Timestamp.rfc3339(Date()))), ("request_id", .string(requestId)),
            ("route", route.map { .string($0) } ?? .null), ("method", .string(method)), ("path", .string(path)),
            ("client", .string(client)), ("status", .int(Int64(status))),
            ("upstream", upstream.map { .string($0) } ?? .null),
            ("upstream_status", upstreamStatus.map { $0 > 0 ? .int(Int64($0)) : .null } ?? .null),
            ("duration_ms", .double(rounded(durationMs))),
            ("upstream_ms", upstreamMs.map { .double(rounded($0)) } ?? .null),
            ("bytes_sent", .int(Int64(bytesSent))),
        ])
        if let error { o["error"] = .string(error) }
        return o
    }

    private func rounded(_ v: Double) -> Double { (v * 1000).rounded() / 1000 }
}

extension Duration {
    var milliseconds: Double {
        let (s, atto) = components
        return Double(s) * 1000 + Double(atto) / 1e15
    }
}
