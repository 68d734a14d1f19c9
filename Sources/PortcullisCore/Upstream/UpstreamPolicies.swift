/// How an upstream spreads requests over its targets (`balancer`).
public enum BalancerAlgorithm: Sendable, Equatable {
    /// Smooth weighted round-robin (nginx's algorithm), per event loop.
    case roundRobin
    /// The target with the fewest requests in flight across the whole instance, per weight.
    case leastRequests
    /// Consistent hashing of a request key on a ring of virtual nodes.
    case hash(HashKey)
}

/// What a consistent-hash balancer hashes.
public enum HashKey: Sendable, Equatable {
    /// A request header (name stored lower-case).
    case header(String)
    /// The authenticated consumer id.
    case consumer
    /// The client address nginx reported.
    case clientIP
}

/// Retries to another target (`retries`).
public struct RetryPolicy: Sendable, Equatable {
    /// Extra tries per request beyond the first (0 disables retries).
    public var attempts = 2
    /// Retries an upstream may add over a window, as a percentage of its first tries.
    public var budgetPercent = 20
    /// Retries always allowed per window whatever the traffic (so a quiet upstream can retry).
    public var budgetMinimum = 10
    /// Length of the budget's window.
    public var budgetWindowSeconds = 10
    /// Backoff before a retry: a random delay in [0, `backoffMs`] (full jitter).
    public var backoffMs = 20
    /// Upstream statuses an idempotent request is retried on.
    public var onStatuses: Set<Int> = [502, 503, 504]
    public init() {}
}

/// The per-target circuit breaker (`circuit_breaker`).
public struct BreakerPolicy: Sendable, Equatable {
    public var enabled = true
    /// Consecutive failures that open the breaker (1...255).
    public var consecutiveFailures = 5
    /// Failure percentage over `windowSeconds` that opens it, once `minimumCalls` were made;
    /// nil: only consecutive failures count.
    public var failureRatioPercent: Int?
    public var minimumCalls = 20
    public var windowSeconds = 10
    /// First open period; each reopening without a close in between doubles it up to `maxOpenMs`.
    public var openMs = 5_000
    public var maxOpenMs = 60_000
    /// Requests let through when the open period ends (instance-wide); all must succeed to close.
    public var halfOpenProbes = 1
    /// Upstream statuses counted as failures (transport failures and timeouts always are).
    public var failureStatuses: Set<Int> = [502, 503, 504]
    public init() {}
}

/// Active health checks of an upstream's targets (`health_check`), made by the master.
public struct HealthCheckPolicy: Sendable, Equatable {
    public var method = "GET"
    public var path = "/"
    public var intervalMs = 2_000
    public var timeoutMs = 1_000
    /// Consecutive successes that return an unhealthy target to the balancer.
    public var healthyThreshold = 2
    /// Consecutive failures (probes or real requests) that take a target out.
    public var unhealthyThreshold = 3
    public var expectedStatuses: Set<Int> = Set(200...399)
    /// Host header of the probe; nil: the target's host:port.
    public var host: String?
    public init() {}
}
