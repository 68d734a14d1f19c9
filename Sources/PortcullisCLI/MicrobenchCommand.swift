import ArgumentParser
import Foundation
import PortcullisCore
import PortcullisPlugins
import PortcullisRuntime

/// CPU cost of the per-request decisions, without sockets: what `make bench` reports beside the
/// end-to-end requests/s. Uses the routes of a gateway config (normally the benchmark's).
struct MicrobenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "microbench", abstract: "Measure the CPU cost of auth, rate limiting, transforms and routing.",
        shouldDisplay: false)

    @OptionGroup var options: ConfigOption
    @Option(help: "An HS256 token the config accepts.") var hs256: String
    @Option(help: "An RS256 token the config accepts.") var rs256: String
    @Option(help: "A ~2 KB JSON request body (file) for the transform measurement.") var body: String
    @Option(help: "A ~2 KB JSON response body (file).") var responseBody: String
    @Option(help: "Iterations per measurement.") var iterations: Int = 20_000
    @Option(help: "Only the measurements whose name contains this text (for profiling one of them).") var only: String?

    func run() throws {
        let loaded = try GatewayLoader.load(configPath: options.config)
        let config = loaded.config
        let now = Int64(time(nil))
        func route(_ name: String) throws -> RouteConfig {
            guard let r = config.routes.first(where: { $0.name == name }) else { throw ValidationError("route \(name) missing") }
            return r
        }
        var rows: [(String, Double)] = []
        func measure(_ name: String, iterations n: Int? = nil, _ body: () -> Void) {
            if let only, !name.contains(only) { return }
            let count = n ?? iterations
            for _ in 0..<min(count, 200) { body() }  // warm caches
            let start = ContinuousClock.now
            for _ in 0..<count { body() }
            let elapsed = ContinuousClock.now - start
            let (s, atto) = elapsed.components
            rows.append((name, (Double(s) * 1e9 + Double(atto) / 1e9) / Double(count) / 1000))
        }

        let cached = Authenticator(config: config)
        var uncachedConfig = config
        uncachedConfig.auth.jwt.cacheEntries = 0
        let uncached = Authenticator(config: uncachedConfig)
        let apiKeyPolicy = try route("apikey").auth!, jwtPolicy = try route("jwt").auth!
        let keyRequest = GatewayRequest(method: "GET", path: "/bench/apikey", headers: HTTPHeaders([("X-API-Key", "demo-key-change-me")]))
        let hsRequest = GatewayRequest(method: "GET", path: "/bench/jwt", headers: HTTPHeaders([("Authorization", "Bearer " + hs256)]))
        let rsRequest = GatewayRequest(method: "GET", path: "/bench/jwt", headers: HTTPHeaders([("Authorization", "Bearer " + rs256)]))
        for (request, policy) in [(keyRequest, apiKeyPolicy), (hsRequest, jwtPolicy), (rsRequest, jwtPolicy)] {
            guard case .authenticated = uncached.authenticate(request, policy: policy, now: now) else {
                throw ValidationError("a benchmark credential was not accepted")
            }
        }
        measure("auth: API key (SHA-256 + lookup)") { _ = cached.authenticate(keyRequest, policy: apiKeyPolicy, now: now) }
        measure("auth: JWT HS256, verified every time") { _ = uncached.authenticate(hsRequest, policy: jwtPolicy, now: now) }
        measure("auth: JWT RS256, verified every time (cold)", iterations: max(iterations / 10, 100)) {
            _ = uncached.authenticate(rsRequest, policy: jwtPolicy, now: now)
        }
        measure("auth: JWT RS256, from the verified-token cache") { _ = cached.authenticate(rsRequest, policy: jwtPolicy, now: now) }

        let tablePath = NSTemporaryDirectory() + "portcullis-microbench-\(getpid()).table"
        defer { unlink(tablePath) }
        let table = try SharedMemoryRateTable.create(path: tablePath, slots: 65_536)
        let limiter = RateLimiter(local: table, remote: nil, settings: config.rateLimit)
        let limits = try route("limit-local").limits
        let subject = RateLimitSubject(credentialId: "demo-key", consumerId: "demo", consumerGroups: ["demo"],
                                       clientIP: "127.0.0.1", routeName: "limit-local")
        measure("rate limit: token bucket, shared-memory table") {
            _ = limiter.evaluate(limits, subject: subject, now: RateLimitClock.nowMicros())
        }

        let chain = loaded.chains[config.routes.firstIndex { $0.name == "transform" }!]
        let requestBody = Array(FileManager.default.contents(atPath: body) ?? Data())
        let responseBytes = Array(FileManager.default.contents(atPath: responseBody) ?? Data())
        let context = TemplateContext(requestId: "r", route: "transform", now: Date())
        measure("transform: 2 KB request + 2 KB response JSON") {
            var request = TransformableRequest(method: "POST", path: "/bench/transform",
                                               headers: HTTPHeaders([("Content-Type", "application/json")]), body: requestBody)
            _ = try? chain.applyRequest(to: &request, context: context)
            var status = 200
            var headers = HTTPHeaders([("Content-Type", "application/json")])
            var out: [UInt8]? = responseBytes
            _ = try? chain.applyResponse(status: &status, headers: &headers, body: &out, context: context)
        }

        let manyRoutes = (0..<1000).map { i in
            RouteConfig(name: "r\(i)", match: RouteMatch(path: .exact("/svc\(i)/items/{id}")), upstream: "u", index: i)
        }
        let router = Router(routes: manyRoutes)
        let routed = GatewayRequest(method: "GET", path: "/svc777/items/42")
        measure("routing: 1000 routes, param match") { _ = router.route(routed) }

        print("| per-request decision | µs of CPU |")
        print("|---|---|")
        for (name, micros) in rows { print("| \(name) | \(String(format: "%.2f", micros)) |") }
    }
}
