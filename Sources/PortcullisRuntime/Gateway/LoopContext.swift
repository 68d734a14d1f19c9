import PortcullisCore

/// One loop's view of a gateway generation: the gateway itself plus what must not be shared
/// between threads (the rate limiter with its Redis connection, the target rotation).
/// Requests keep the context they started with, so a reload never changes a request midway.
final class LoopContext {
    let gateway: Gateway
    let limiter: RateLimiter?
    private var rotation: [Int] = []
    /// Trace and span ids of this loop's requests (seeded once per loop and configuration).
    var traceIds = TraceIdGenerator()

    init(gateway: Gateway, loop: EventLoop) {
        self.gateway = gateway
        if let table = gateway.rateTable {
            limiter = RateLimiter(local: table, remote: gateway.config.rateLimit.redis.map { RedisRateLimitStore(settings: $0, loop: loop) },
                                  settings: gateway.config.rateLimit,
                                  observer: table.observer(log: { EventLog.emit("rate_limit", [("detail", .string($0))]) }))
        } else {
            limiter = nil
        }
        rotation = Array(repeating: 0, count: gateway.routeUpstreams.count)
    }

    /// The next target of the route's upstream, round-robin per loop.
    func nextTarget(routeIndex: Int) -> String {
        let targets = gateway.routeUpstreams[routeIndex].targets
        guard targets.count > 1 else { return targets[0] }
        let i = rotation[routeIndex]
        rotation[routeIndex] = i &+ 1
        return targets[i % targets.count]
    }
}
