import PortcullisCore

/// One loop's view of a gateway generation: the gateway itself plus what must not be shared
/// between threads (the rate limiter with its Redis connection, the balancers' state).
/// Requests keep the context they started with, so a reload never changes a request midway.
final class LoopContext {
    let gateway: Gateway
    let limiter: RateLimiter?
    /// The limiter's Redis connection (the health endpoint pings it).
    let redis: RedisRateLimitStore?
    /// Smooth weighted round-robin state per upstream (indexed like `gateway.upstreamTargets`).
    private var roundRobin: [SmoothWeightedRoundRobin]
    /// Where least-requests starts looking, so equally loaded targets share the traffic.
    private var cursor = 0
    /// Trace and span ids of this loop's requests (seeded once per loop and configuration).
    var traceIds = TraceIdGenerator()

    init(gateway: Gateway, loop: EventLoop) {
        self.gateway = gateway
        redis = gateway.config.rateLimit.redis.map { RedisRateLimitStore(settings: $0, loop: loop) }
        if let table = gateway.rateTable {
            let segment = gateway.metricsSegment, block = gateway.metricsBlock
            limiter = RateLimiter(local: table, remote: redis,
                                  settings: gateway.config.rateLimit,
                                  observer: table.observer(log: { EventLog.emit("rate_limit", [("detail", .string($0))]) },
                                                           degradedChanged: { entered in
                                                               if let segment, let block { segment.redisDegraded(entered ? 1 : -1, block: block) }
                                                           }))
        } else {
            limiter = nil
        }
        roundRobin = gateway.upstreamTargets.map { SmoothWeightedRoundRobin(weights: $0.config.weights) }
    }

    /// The target for a request's next try: among the targets not yet `tried` whose breaker lets
    /// requests through and whose health checks pass (or, when none is healthy, ignoring health:
    /// better a target that may answer than none), picked by the upstream's balancer.
    /// `hashKey` is the request's key for a hash balancer (nil: round-robin instead).
    func pickTarget(upstream index: Int, hashKey: UInt64?, tried: UInt64, nowMs: UInt64) -> Int? {
        let upstream = gateway.upstreamTargets[index]
        let count = upstream.slots.count
        if count == 1 {
            // One target: its breaker alone decides (at admission), no balancing to do.
            return tried == 0 ? 0 : nil
        }
        if let picked = pick(upstream, index: index, hashKey: hashKey, tried: tried, nowMs: nowMs, ignoringHealth: false) { return picked }
        return pick(upstream, index: index, hashKey: hashKey, tried: tried, nowMs: nowMs, ignoringHealth: true)
    }

    private func pick(_ upstream: UpstreamTargets, index: Int, hashKey: UInt64?, tried: UInt64, nowMs: UInt64, ignoringHealth: Bool) -> Int? {
        let eligible = { (i: Int) in upstream.eligible(i, tried: tried, nowMs: nowMs, ignoringHealth: ignoringHealth) }
        switch upstream.config.balancer {
        case .hash:
            if let hashKey, let ring = upstream.ring { return ring.lookup(hashKey, eligible: eligible) }
            return roundRobin[index].next(eligible: eligible)
        case .roundRobin:
            return roundRobin[index].next(eligible: eligible)
        case .leastRequests:
            cursor &+= 1
            let slots = upstream.slots
            return LeastRequests.pick(count: slots.count, start: cursor % slots.count, weights: upstream.config.weights,
                                      load: { slots[$0].inFlightTotal }, eligible: eligible)
        }
    }
}
