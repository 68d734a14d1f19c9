import Foundation
import PortcullisCore
import PortcullisPlugins

/// Everything a worker process derives once from a configuration and shares, read-only, with
/// all its threads.
public final class Gateway: Sendable {
    public let config: GatewayConfig
    public let router: Router
    public let accessLog: AccessLog
    /// Per route (indexed like `config.routes`): the route with its upstream and its
    /// transformation chain, behind one reference a request retains once.
    let routes: [RouteEntry]
    let authenticator: Authenticator
    /// Query parameters that carry credentials, removed before forwarding.
    let credentialQueryParameters: Set<String>

    /// The instance's shared-memory rate table (mapped by every worker).
    let rateTable: SharedMemoryRateTable?

    /// The worker's block of the metrics file, mapped for this configuration's routes (nil:
    /// `metrics.enabled` is off, or the file is unavailable).
    let metrics: WorkerMetrics?
    /// The metrics file, mapped whenever the worker has a block (kept across reloads).
    let metricsSegment: MetricsSegment?
    /// The worker's block in it (its worker-table slot), kept across reloads.
    let metricsBlock: Int?

    /// Background JWKS refreshers of this configuration, stopped when it is replaced.
    let jwksFetchers: [JWKSFetcher]

    /// The instance's upstream state (breakers, health, in flight) and this worker's column in it.
    let upstreamTable: UpstreamStateTable
    let upstreamColumn: Int
    /// Every upstream bound to its shared state (sorted by name), and each route's index into it.
    let upstreamTargets: [UpstreamTargets]
    let routeUpstreamIndex: [Int]

    public init(loaded: LoadedGateway, accessLog: AccessLog, jwksSources: [String: any JWKSSource] = [:],
                jwksFetchers: [JWKSFetcher] = [], rateTable: SharedMemoryRateTable?,
                upstreamTable: UpstreamStateTable? = nil, upstreamColumn: Int = 0, metrics: WorkerMetrics? = nil,
                metricsSegment: MetricsSegment? = nil, metricsBlock: Int? = nil) {
        self.rateTable = rateTable
        self.metrics = metrics
        self.metricsSegment = metricsSegment ?? metrics?.segment
        self.metricsBlock = metricsBlock ?? metrics?.blockIndex
        let table = upstreamTable ?? UpstreamStateTable.local()
        self.upstreamTable = table
        self.upstreamColumn = upstreamColumn
        let names = loaded.config.upstreams.keys.sorted()
        self.upstreamTargets = names.map { UpstreamTargets(config: loaded.config.upstreams[$0]!, table: table, column: upstreamColumn) }
        self.routeUpstreamIndex = loaded.config.routes.map { names.firstIndex(of: $0.upstream)! }
        self.jwksFetchers = jwksFetchers
        self.config = loaded.config
        self.router = Router(routes: loaded.config.routes)
        self.accessLog = accessLog
        self.routes = loaded.config.routes.indices.map { i in
            let route = loaded.config.routes[i]
            return RouteEntry(route: route, upstream: loaded.config.upstreams[route.upstream]!, chain: loaded.chains[i])
        }
        self.authenticator = Authenticator(config: loaded.config, jwksSources: jwksSources)
        self.credentialQueryParameters = Set(Authenticator.credentialQueryParameters(loaded.config.auth))
    }

    /// Builds what a worker serves from a loaded configuration: opens the access log (or keeps
    /// `previous`'s when the path and size are unchanged), starts the JWKS fetchers (keeping
    /// `previous`'s key sets of unchanged URLs, else starting from the runtime directory's
    /// cache; see `awaitJWKS`) and maps the shared rate table. Throws when the log cannot be
    /// opened; a reload then keeps the running configuration. `metricsBlock` is the worker's
    /// block of the metrics file (its worker-table slot; nil when run by hand, and `previous`'s
    /// on a reload), counted in when `metrics.enabled`.
    public static func build(_ loaded: LoadedGateway, loops: Int, previous: Gateway?, metricsBlock: Int? = nil) throws -> Gateway {
        let metricsBlock = metricsBlock ?? previous?.metricsBlock
        let config = loaded.config
        let segment = metricsBlock.flatMap { _ in openMetrics(config, previous: previous) }
        let accessLog: AccessLog
        if let previous, previous.accessLog.path == config.log.accessLog, previous.accessLog.bufferBytes == config.log.bufferBytes {
            accessLog = previous.accessLog
        } else {
            var dropped: (@Sendable (Int) -> Void)?
            if let segment, let metricsBlock {
                dropped = { lines in WorkerMetrics.accessLogDropped(segment, block: metricsBlock, lines: lines) }
            }
            accessLog = try AccessLog(path: config.log.accessLog, bufferBytes: config.log.bufferBytes, loops: loops, onDropped: dropped)
        }
        let (jwksSources, fetchers) = JWKSFetcher.startAll(for: config.auth, previous: previous?.jwksFetchers ?? [],
                                                           cache: JWKSCache(runtimeDirectory: config.server.runtimeDirectory)) { message in
            EventLog.emit("jwks", [("detail", .string(message))])
        }
        let rateTable: SharedMemoryRateTable?
        if let table = previous?.rateTable {
            rateTable = table
        } else {
            do {
                rateTable = try SharedMemoryRateTable.open(path: SharedMemoryRateTable.defaultPath(runtimeDirectory: config.server.runtimeDirectory))
            } catch {
                // Without the table, limited routes answer 500 rather than run unlimited.
                EventLog.emit("rate_table_unavailable", [("error", .string("\(error)"))])
                rateTable = nil
            }
        }
        let upstreamTable: UpstreamStateTable
        let column: Int
        if let previous {
            upstreamTable = previous.upstreamTable
            column = previous.upstreamColumn
        } else {
            do {
                upstreamTable = try UpstreamStateTable.open(path: UpstreamStateTable.defaultPath(runtimeDirectory: config.server.runtimeDirectory))
            } catch {
                // Run by hand without a master: breakers and in-flight counts per process.
                EventLog.emit("upstream_state_local", [("error", .string("\(error)"))])
                upstreamTable = UpstreamStateTable.local()
            }
            column = upstreamTable.claimColumn(pid: getpid())
        }
        var metrics: WorkerMetrics?
        if config.metrics.enabled, let segment, let metricsBlock {
            metrics = WorkerMetrics(segment: segment, blockIndex: metricsBlock, config: config)
        }
        return Gateway(loaded: loaded, accessLog: accessLog, jwksSources: jwksSources, jwksFetchers: fetchers, rateTable: rateTable,
                       upstreamTable: upstreamTable, upstreamColumn: column, metrics: metrics, metricsSegment: segment,
                       metricsBlock: metricsBlock)
    }

    /// The metrics file (kept from `previous` when it had it mapped).
    private static func openMetrics(_ config: GatewayConfig, previous: Gateway?) -> MetricsSegment? {
        if let segment = previous?.metricsSegment { return segment }
        do {
            return try MetricsSegment.open(path: MetricsSegment.defaultPath(runtimeDirectory: config.server.runtimeDirectory))
        } catch {
            EventLog.emit("metrics_unavailable", [("error", .string("\(error)"))])
            return nil
        }
    }

    /// Longest a new gateway waits for the first fetch of a `jwks_url` it has no keys for
    /// (a fetch gives up after 10 s).
    public static let jwksWaitSeconds = 11

    /// Waits until every `jwks_url` has a key set or its first fetch ended (at most
    /// `jwksWaitSeconds`, all URLs in parallel).
    public func awaitJWKS() {
        JWKSFetcher.awaitFirstFetch(jwksFetchers, deadline: .now + .seconds(Self.jwksWaitSeconds))
    }

    /// Stops what runs in the background for this configuration (it has been replaced).
    public func stopBackgroundWork() {
        for fetcher in jwksFetchers { fetcher.stop() }
    }

    /// Releases a prepared configuration that will not be served.
    public func discard(keeping current: Gateway) {
        stopBackgroundWork()
        if accessLog !== current.accessLog { accessLog.close() }
    }
}

/// A route as requests use it: its configuration, its upstream's and its transformation
/// chain. A class: a request holds the route across its steps and its upstream wait, and a
/// reference is retained once where a copy of the configuration retained each of its fields.
final class RouteEntry: Sendable {
    let route: RouteConfig
    let upstream: UpstreamConfig
    let chain: TransformChain
    /// What the route's rate limits read of a request (its rate-limit subject gets only that).
    let limitInputs: RateLimitInputs
    /// `Router.keepsRequestPath(route)`, decided at load: most routes forward the path as it
    /// came, without a call that copied the route's configuration.
    let keepsRequestPath: Bool

    init(route: RouteConfig, upstream: UpstreamConfig, chain: TransformChain) {
        self.route = route
        self.upstream = upstream
        self.chain = chain
        limitInputs = RateLimitInputs(route.limits)
        keepsRequestPath = Router.keepsRequestPath(route)
    }

    /// The path to send upstream for a request to `requestPath` matched as `match`.
    func upstreamPath(_ match: RouteMatchResult, requestPath: String) -> String {
        keepsRequestPath ? requestPath : Router.upstreamPath(route: route, result: match, requestPath: requestPath)
    }
}
