extension ProblemDetails {
    /// Every target of the upstream has an open breaker (or is out of half-open probes).
    public static func upstreamCircuitOpen(_ upstream: String, retryAfterSeconds: Int) -> ProblemDetails {
        var headers = HTTPHeaders()
        headers.add("Retry-After", String(max(1, retryAfterSeconds)))
        return ProblemDetails(status: 503, type: "upstream-circuit-open", title: "Service Unavailable",
                              detail: "every target of upstream \"\(upstream)\" is failing; not trying it for now", headers: headers)
    }

    /// The upstream's bulkhead (`max_in_flight`) is full.
    public static func upstreamSaturated(_ upstream: String, limit: Int) -> ProblemDetails {
        var headers = HTTPHeaders()
        headers.add("Retry-After", "1")
        return ProblemDetails(status: 503, type: "upstream-saturated", title: "Service Unavailable",
                              detail: "upstream \"\(upstream)\" already has \(limit) requests in flight", headers: headers)
    }
}

/// Which requests may be sent twice.
public enum IdempotentMethods {
    /// RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE.
    @inline(__always)
    public static func contains(_ method: String) -> Bool {
        switch method {
        case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE": return true
        default: return false
        }
    }
}

/// The instance's own health endpoint, for the load balancer in front of several instances.
public enum InstanceHealth {
    public static let path = "/_portcullis/health"

    /// 503 with the reason (`draining`, `redis_unreachable`) as `state`.
    public static func unavailable(_ state: String) -> ProblemDetails {
        ProblemDetails(status: 503, type: "instance-unavailable", title: "Service Unavailable",
                       detail: "this gateway instance cannot serve: \(state.replacingOccurrences(of: "_", with: " "))",
                       extensions: JSONObject([("state", .string(state))]))
    }
}
