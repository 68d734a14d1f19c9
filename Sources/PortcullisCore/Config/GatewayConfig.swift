import Foundation

/// The whole gateway configuration: parsed once, validated as a whole, then shared read-only
/// by every request of a worker.
public struct GatewayConfig: Sendable {
    public var server: ServerSettings
    public var log: LogSettings
    public var upstreams: [String: UpstreamConfig]
    public var routes: [RouteConfig]
    /// Directory of the JSON plugin rule files (resolved against the config file's directory).
    public var pluginsDirectory: String?
    /// Reload by itself when a file in the plugins directory changes (`plugins_watch`).
    public var watchPlugins = false
    /// Defaults for transformation plugins (`"transform"` section).
    public var transform = TransformSettings()
    /// Clients and their credentials (`consumers`).
    public var consumers: [Consumer] = []
    /// API key, JWT issuer and token cache settings (`auth`).
    public var auth = AuthSettings()
    /// The top-level `rate_limit` section (shared-memory table size, Redis).
    public var rateLimit = RateLimitSettings()
    /// The top-level `metrics` section.
    public var metrics = MetricsSettings()

    public init(server: ServerSettings = ServerSettings(), log: LogSettings = LogSettings(),
                upstreams: [String: UpstreamConfig] = [:], routes: [RouteConfig] = [], pluginsDirectory: String? = nil) {
        self.server = server
        self.log = log
        self.upstreams = upstreams
        self.routes = routes
        self.pluginsDirectory = pluginsDirectory
    }
}

/// Defaults of the transformation plugins; a rule set may lower or raise its own limit.
public struct TransformSettings: Sendable, Equatable {
    /// Largest body (before and after transformation) a JSON body operation works on.
    public var maxBodyBytes: Int64 = 1 << 20
    public init() {}
}

/// The FastCGI socket and the worker pool.
public struct ServerSettings: Sendable, Equatable {
    /// Unix socket path nginx connects to.
    public var socket = "run/portcullis.sock"
    /// Permission bits of the socket file (so nginx's user can connect).
    public var socketMode: UInt32 = 0o660
    public var socketOwner: String?
    public var socketGroup: String?
    /// Directory for the pid file, state file and shared memory segment name.
    public var runtimeDirectory = "run"
    public var workers = 2
    /// Event-loop threads per worker; each serves any number of requests at once.
    public var threadsPerWorker = 1
    /// Largest request body a worker accepts (nginx's `client_max_body_size` should match).
    public var maxBodyBytes: Int64 = 64 * 1024 * 1024
    /// Largest total size of the FastCGI params (request line facts and headers) a worker
    /// accepts; nginx's `large_client_header_buffers` should stop larger ones first.
    public var maxHeaderBytes = 64 * 1024
    /// Seconds a stopping worker waits for in-flight requests before exiting.
    public var shutdownGraceSeconds = 30
    /// A worker whose heartbeat stops, or whose event loop stays inside one request's work,
    /// this long is replaced (operations.md, Supervision).
    public var hardTimeoutSeconds = 60
    /// How long a reload, or a pool that grows (scale), waits for its workers to be ready;
    /// what is not ready by then is withdrawn (operations.md, Readiness).
    public var readyTimeoutSeconds = 30
    /// Retire (seamlessly) and replace a worker after it served this many requests.
    public var recycleAfterRequests: Int?
    /// Retire and replace a worker whose resident memory exceeds this many MiB.
    public var recycleAboveRSSMegabytes: Int?
    public init() {}
}

/// Where and how the access log is written.
public struct LogSettings: Sendable, Equatable {
    /// Access log path; "-" writes to standard output.
    public var accessLog = "-"
    /// Lines held in memory when the log target is slow; beyond it lines are dropped and counted.
    public var bufferBytes = 1 << 20
    public init() {}
}

/// A named upstream service: its targets, timeouts and resilience policies
/// ([upstreams.md](../../../docs/upstreams.md)).
public struct UpstreamConfig: Sendable, Equatable {
    public var name: String
    /// Base URLs (`http://host:port`).
    public var targets: [String]
    /// Per target (indexed like `targets`), 1 unless configured.
    public var weights: [Int]
    public var connectTimeoutMs: Int
    public var timeoutMs: Int
    public var balancer = BalancerAlgorithm.roundRobin
    public var retry = RetryPolicy()
    public var breaker = BreakerPolicy()
    public var healthCheck: HealthCheckPolicy?
    /// Requests in flight to this upstream across the instance beyond which new ones get 503.
    public var maxInFlight: Int?
    /// Whether the upstream's `X-Accel-Buffering` reaches nginx (`x_accel_buffering`); every
    /// other `X-Accel-*` response field is always removed.
    public var allowAccelBuffering = true
    public init(name: String, targets: [String], connectTimeoutMs: Int = 2_000, timeoutMs: Int = 30_000) {
        self.name = name
        self.targets = targets
        self.weights = Array(repeating: 1, count: targets.count)
        self.connectTimeoutMs = connectTimeoutMs
        self.timeoutMs = timeoutMs
    }
}

/// How a route matches a request.
public struct RouteMatch: Sendable, Equatable {
    public enum PathRule: Sendable, Equatable {
        /// Whole path, segments literal or `{param}`.
        case exact(String)
        /// Leading segments, literal or `{param}`; the rest of the path is free.
        case prefix(String)
    }
    public enum ValueRule: Sendable, Equatable {
        case present
        case equals(String)
    }
    public var path: PathRule
    /// Exact host or `*.suffix`; nil matches any host.
    public var hosts: [String]
    /// Upper-case methods; empty matches every method.
    public var methods: [String]
    /// Header names are compared case-insensitively (stored lower-case).
    public var headers: [(name: String, rule: ValueRule)]
    public var query: [(name: String, rule: ValueRule)]

    public init(path: PathRule, hosts: [String] = [], methods: [String] = [],
                headers: [(name: String, rule: ValueRule)] = [], query: [(name: String, rule: ValueRule)] = []) {
        self.path = path
        self.hosts = hosts
        self.methods = methods
        self.headers = headers
        self.query = query
    }

    public static func == (a: RouteMatch, b: RouteMatch) -> Bool {
        a.path == b.path && a.hosts == b.hosts && a.methods == b.methods
            && a.headers.map(\.name) == b.headers.map(\.name) && a.headers.map(\.rule) == b.headers.map(\.rule)
            && a.query.map(\.name) == b.query.map(\.name) && a.query.map(\.rule) == b.query.map(\.rule)
    }
}

/// What a route carries. `http` requests are proxied by the worker; `websocket` and `grpc`
/// requests are admitted by the worker and then proxied by nginx (`X-Accel-Redirect` to the
/// snippet's named location), since FastCGI carries neither an upgraded connection nor trailers.
public enum RouteProtocol: String, Sendable, CaseIterable {
    case http, websocket, grpc

    /// Whether nginx, not the worker, carries the request to the upstream.
    @inlinable public var handsOff: Bool { self != .http }
}

/// One route: what it matches, where it sends the request and what it does on the way.
public struct RouteConfig: Sendable {
    public var name: String
    public var match: RouteMatch
    public var upstream: String
    /// Remove the matched prefix before forwarding.
    public var stripPrefix: Bool
    /// Replacement path template, `{param}` filled from the match.
    public var rewrite: String?
    /// Position in the config; breaks precedence ties.
    public var index: Int
    /// Names of the plugin rule sets applied to this route, in order.
    public var plugins: [String] = []
    /// Authentication policy; nil: the route does no authentication.
    public var auth: RouteAuthPolicy? = nil
    /// Rate limits; every one must pass (see `RateLimiter`).
    public var limits: [RateLimitSpec] = []
    /// Requests slower than this (ms, arrival to last byte) are logged as `slow_request`.
    public var slowMs: Int?
    /// What the route carries: plain HTTP through the worker, or a WebSocket / gRPC request
    /// the worker admits and then hands to nginx (docs/protocols.md).
    public var `protocol`: RouteProtocol = .http

    public init(name: String, match: RouteMatch, upstream: String, stripPrefix: Bool = false,
                rewrite: String? = nil, index: Int = 0) {
        self.name = name
        self.match = match
        self.upstream = upstream
        self.stripPrefix = stripPrefix
        self.rewrite = rewrite
        self.index = index
    }
}
