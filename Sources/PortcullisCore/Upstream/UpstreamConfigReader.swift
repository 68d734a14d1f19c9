/// Reads the resilience fields of one upstream (`balancer`, `retries`, `circuit_breaker`,
/// `health_check`, `max_in_flight`, weighted targets), recording file + JSON-pointer issues.
enum UpstreamConfigReader {
    static let fields: Set<String> = ["targets", "connect_timeout_ms", "timeout_ms", "balancer", "retries", "circuit_breaker",
                                      "health_check", "max_in_flight", "x_accel_buffering"]

    /// A target is a URL string or `{"url": ..., "weight": n}`; returns the URL node and weight.
    static func target(_ node: ConfigNode) -> (url: ConfigNode, weight: Int) {
        guard node.value?.objectValue != nil else { return (node, 1) }
        node.rejectUnknownKeys(["url", "weight"])
        if !node["url"].isPresent { node["url"].fail("required field is missing") }
        let weight = node["weight"].int(min: 1, max: 1_000).map(Int.init) ?? 1
        return (node["url"], weight)
    }

    static func read(_ node: ConfigNode, into u: inout UpstreamConfig) {
        if let v = node["max_in_flight"].int(min: 1, max: 1_000_000) { u.maxInFlight = Int(v) }
        u.balancer = readBalancer(node["balancer"])
        readRetries(node["retries"], into: &u.retry)
        readBreaker(node["circuit_breaker"], into: &u.breaker)
        u.healthCheck = readHealthCheck(node["health_check"])
    }

    static func readBalancer(_ node: ConfigNode) -> BalancerAlgorithm {
        guard node.isPresent else { return .roundRobin }
        let name: String?
        if node.value?.stringValue != nil {
            name = node.string()
        } else {
            guard node.object() != nil else { return .roundRobin }
            node.rejectUnknownKeys(["algorithm", "hash_on"])
            name = node["algorithm"].string(required: true)
        }
        switch name {
        case "round_robin"?: return .roundRobin
        case "least_requests"?: return .leastRequests
        case "hash"?:
            guard node.value?.objectValue != nil, let on = node["hash_on"].nonEmptyString(required: true) else {
                if node.value?.stringValue != nil { node.fail("\"hash\" needs an object with \"hash_on\"") }
                return .roundRobin
            }
            switch on {
            case "consumer": return .hash(.consumer)
            case "client_ip": return .hash(.clientIP)
            default:
                if on.hasPrefix("header:"), on.count > 7 { return .hash(.header(String(on.dropFirst(7)).lowercased())) }
                node["hash_on"].fail("expected \"consumer\", \"client_ip\" or \"header:Name\", found \"\(on)\"")
                return .roundRobin
            }
        case let other?:
            (node.value?.stringValue != nil ? node : node["algorithm"])
                .fail("unknown balancer \"\(other)\" (round_robin, least_requests, hash)")
            return .roundRobin
        case nil:
            return .roundRobin
        }
    }

    static func readRetries(_ node: ConfigNode, into r: inout RetryPolicy) {
        guard node.isPresent else { return }
        if node.value?.boolValue == false { r.attempts = 0; return }
        if node.value?.intValue != nil {
            if let v = node.int(min: 0, max: 10) { r.attempts = Int(v) }
            return
        }
        guard node.object() != nil else { return }
        node.rejectUnknownKeys(["attempts", "budget_percent", "budget_min", "budget_window_s", "backoff_ms", "on_statuses"])
        if let v = node["attempts"].int(min: 0, max: 10) { r.attempts = Int(v) }
        if let v = node["budget_percent"].int(min: 0, max: 1_000) { r.budgetPercent = Int(v) }
        if let v = node["budget_min"].int(min: 0, max: 1_000_000) { r.budgetMinimum = Int(v) }
        if let v = node["budget_window_s"].int(min: 1, max: 3_600) { r.budgetWindowSeconds = Int(v) }
        if let v = node["backoff_ms"].int(min: 0, max: 10_000) { r.backoffMs = Int(v) }
        if let v = statuses(node["on_statuses"]) { r.onStatuses = v }
    }

    static func readBreaker(_ node: ConfigNode, into b: inout BreakerPolicy) {
        guard node.isPresent else { return }
        if let on = node.value?.boolValue { b.enabled = on; return }
        guard node.object() != nil else { return }
        node.rejectUnknownKeys(["consecutive_failures", "failure_ratio_percent", "minimum_calls", "window_s", "open_ms", "max_open_ms",
                                "half_open_probes", "failure_statuses"])
        if let v = node["consecutive_failures"].int(min: 1, max: Int64(BreakerWord.maxCount)) { b.consecutiveFailures = Int(v) }
        if let v = node["failure_ratio_percent"].int(min: 1, max: 100) { b.failureRatioPercent = Int(v) }
        if let v = node["minimum_calls"].int(min: 1, max: 60_000) { b.minimumCalls = Int(v) }
        if let v = node["window_s"].int(min: 1, max: 3_600) { b.windowSeconds = Int(v) }
        if let v = node["open_ms"].int(min: 1, max: 3_600_000) { b.openMs = Int(v) }
        if let v = node["max_open_ms"].int(min: 1, max: 86_400_000) { b.maxOpenMs = Int(v) }
        if b.maxOpenMs < b.openMs { node["max_open_ms"].fail("must be at least open_ms (\(b.openMs))") }
        if let v = node["half_open_probes"].int(min: 1, max: Int64(BreakerWord.maxProbes)) { b.halfOpenProbes = Int(v) }
        if let v = statuses(node["failure_statuses"]) { b.failureStatuses = v }
    }

    static func readHealthCheck(_ node: ConfigNode) -> HealthCheckPolicy? {
        guard node.isPresent, node.object() != nil else { return nil }
        node.rejectUnknownKeys(["method", "path", "interval_ms", "timeout_ms", "healthy_threshold", "unhealthy_threshold",
                                "expected_statuses", "host"])
        var h = HealthCheckPolicy()
        if let m = node["method"].nonEmptyString() {
            if ConfigLoader.httpMethods.contains(m.uppercased()) { h.method = m.uppercased() } else {
                node["method"].fail("unknown HTTP method \"\(m)\"")
            }
        }
        if let p = node["path"].nonEmptyString() {
            if p.hasPrefix("/"), !p.contains(where: { $0 == " " || $0 == "\r" || $0 == "\n" }) { h.path = p } else {
                node["path"].fail("must start with \"/\" and contain no spaces or line breaks")
            }
        }
        if let v = node["interval_ms"].int(min: 100, max: 3_600_000) { h.intervalMs = Int(v) }
        if let v = node["timeout_ms"].int(min: 10, max: 600_000) { h.timeoutMs = Int(v) }
        if let v = node["healthy_threshold"].int(min: 1, max: Int64(HealthWord.maxCount)) { h.healthyThreshold = Int(v) }
        if let v = node["unhealthy_threshold"].int(min: 1, max: Int64(HealthWord.maxCount)) { h.unhealthyThreshold = Int(v) }
        if let v = statuses(node["expected_statuses"]) { h.expectedStatuses = v }
        if let host = node["host"].nonEmptyString() {
            if host.contains(where: { $0 == " " || $0 == "\r" || $0 == "\n" || $0 == "/" }) {
                node["host"].fail("not a valid Host header value")
            } else {
                h.host = host
            }
        }
        return h
    }

    private static func statuses(_ node: ConfigNode) -> Set<Int>? {
        guard let items = node.array() else { return nil }
        var set = Set<Int>()
        for item in items {
            if let v = item.int(min: 100, max: 599) { set.insert(Int(v)) }
        }
        if items.isEmpty { node.fail("at least one status is required") }
        return set
    }
}
