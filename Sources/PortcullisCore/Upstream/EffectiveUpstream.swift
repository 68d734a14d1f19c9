/// One upstream as the gateway resolved it, for `check --print-effective`: every field at the
/// value in use (defaults filled in), in the configuration's own syntax, so the document loads
/// back into the same upstream.
enum EffectiveUpstream {
    static func document(_ u: UpstreamConfig) -> JSONValue {
        let targets: [JSONValue] = zip(u.targets, u.weights).map { url, weight in
            weight == 1 ? .string(url) : .object(JSONObject([("url", .string(url)), ("weight", int(weight))]))
        }
        return .object(JSONObject([
            ("targets", .array(targets)),
            ("connect_timeout_ms", int(u.connectTimeoutMs)), ("timeout_ms", int(u.timeoutMs)),
            ("balancer", balancer(u.balancer)),
            ("retries", retries(u.retry)),
            ("circuit_breaker", breaker(u.breaker)),
            ("health_check", u.healthCheck.map(healthCheck) ?? .null),
            ("max_in_flight", u.maxInFlight.map(int) ?? .null),
            ("x_accel_buffering", .bool(u.allowAccelBuffering)),
        ]))
    }

    private static func int(_ v: Int) -> JSONValue { .int(Int64(v)) }

    private static func statuses(_ set: Set<Int>) -> JSONValue { .array(set.sorted().map(int)) }

    private static func balancer(_ b: BalancerAlgorithm) -> JSONValue {
        switch b {
        case .roundRobin: return "round_robin"
        case .leastRequests: return "least_requests"
        case .hash(let key):
            let on: String
            switch key {
            case .header(let name): on = "header:" + name
            case .consumer: on = "consumer"
            case .clientIP: on = "client_ip"
            }
            return .object(JSONObject([("algorithm", "hash"), ("hash_on", .string(on))]))
        }
    }

    private static func retries(_ r: RetryPolicy) -> JSONValue {
        .object(JSONObject([
            ("attempts", int(r.attempts)), ("budget_percent", int(r.budgetPercent)), ("budget_min", int(r.budgetMinimum)),
            ("budget_window_s", int(r.budgetWindowSeconds)), ("backoff_ms", int(r.backoffMs)), ("on_statuses", statuses(r.onStatuses)),
        ]))
    }

    private static func breaker(_ b: BreakerPolicy) -> JSONValue {
        guard b.enabled else { return false }
        return .object(JSONObject([
            ("consecutive_failures", int(b.consecutiveFailures)), ("failure_ratio_percent", b.failureRatioPercent.map(int) ?? .null),
            ("minimum_calls", int(b.minimumCalls)), ("window_s", int(b.windowSeconds)), ("open_ms", int(b.openMs)),
            ("max_open_ms", int(b.maxOpenMs)), ("half_open_probes", int(b.halfOpenProbes)), ("failure_statuses", statuses(b.failureStatuses)),
        ]))
    }

    private static func healthCheck(_ h: HealthCheckPolicy) -> JSONValue {
        .object(JSONObject([
            ("method", .string(h.method)), ("path", .string(h.path)), ("interval_ms", int(h.intervalMs)), ("timeout_ms", int(h.timeoutMs)),
            ("healthy_threshold", int(h.healthyThreshold)), ("unhealthy_threshold", int(h.unhealthyThreshold)),
            ("expected_statuses", statuses(h.expectedStatuses)), ("host", h.host.map { .string($0) } ?? .null),
        ]))
    }
}
