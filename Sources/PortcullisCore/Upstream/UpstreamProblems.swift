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
