/// What the client and the access log see of a rate-limit outcome. Pure functions of the outcome.
extension RateLimitOutcome {
    /// The decision the headers describe: the rejecting limit on 429, otherwise the most
    /// restrictive one (fewest remaining, then the longest until reset).
    public var headlineDecision: RateLimitDecision? {
        if verdict == .limited { return results.last?.decision }
        var best: RateLimitDecision?
        for r in results {
            guard let d = r.decision else { continue }
            if let b = best, (b.remaining, -b.resetAfterMicros) <= (d.remaining, -d.resetAfterMicros) { continue }
            best = d
        }
        return best
    }

    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds), on every response of
    /// a limited route; `Retry-After` on a 429 or 503; and the IETF draft fields `RateLimit-Policy`
    /// (every limit) and `RateLimit` (the headline one).
    public var headers: HTTPHeaders {
        var h = HTTPHeaders()
        switch verdict {
        case .limited:
            if let d = headlineDecision { h.add("Retry-After", String(max(1, RateLimitState.ceilSeconds(d.retryAfterMicros)))) }
        case .storeUnavailable:
            h.add("Retry-After", String(max(1, unavailableRetrySeconds)))
        case .allowed:
            break
        }
        guard let d = headlineDecision else { return h }
        h.add("RateLimit-Limit", String(d.limit))
        h.add("RateLimit-Remaining", String(d.remaining))
        h.add("RateLimit-Reset", String(RateLimitState.ceilSeconds(d.resetAfterMicros)))
        let policies = results.map { "\"\($0.name)\";q=\($0.params.quota);w=\(RateLimitState.ceilSeconds($0.params.windowMicros))" }
        h.add("RateLimit-Policy", policies.joined(separator: ", "))
        if let name = results.first(where: { $0.decision == d })?.name {
            h.add("RateLimit", "\"\(name)\";r=\(d.remaining);t=\(RateLimitState.ceilSeconds(d.resetAfterMicros))")
        }
        return h
    }

    /// The 429 or 503 answer, with the headers above; nil when the request is allowed.
    public var problem: ProblemDetails? {
        switch verdict {
        case .allowed:
            return nil
        case .limited:
            let name = results.last?.name ?? ""
            let retry = max(1, RateLimitState.ceilSeconds(headlineDecision?.retryAfterMicros ?? 0))
            return .tooManyRequests(limit: name, retryAfterSeconds: retry, headers: headers)
        case .storeUnavailable:
            return .rateLimitStoreUnavailable(limit: results.last?.name ?? "", headers: headers)
        }
    }

    /// For the access log: `name:result[@local]:remaining` per evaluated limit, comma separated,
    /// e.g. `per-key:allowed:3,per-day:denied:0`, `per-key:open` (failure policy admitted),
    /// `per-key:allowed@local:4` (local fallback). Empty for a route without limits.
    public var logSummary: String {
        results.map { r in
            switch r.path {
            case .failOpen: return r.name + ":open"
            case .failClosed: return r.name + ":closed"
            case .primary, .fallbackLocal:
                let d = r.decision!
                return r.name + (d.allowed ? ":allowed" : ":denied") + (r.path == .fallbackLocal ? "@local:" : ":") + String(d.remaining)
            }
        }.joined(separator: ",")
    }
}

extension ProblemDetails {
    /// 429: the named limit is exhausted; `headers` carries `Retry-After` and the RateLimit fields.
    public static func tooManyRequests(limit: String, retryAfterSeconds: Int64, headers: HTTPHeaders = HTTPHeaders()) -> ProblemDetails {
        var h = headers
        if !h.contains("Retry-After") { h.add("Retry-After", String(retryAfterSeconds)) }
        return ProblemDetails(status: 429, type: "rate-limited", title: "Too Many Requests",
                              detail: "rate limit \"\(limit)\" exceeded; retry in \(retryAfterSeconds) s", headers: h,
                              extensions: JSONObject([("limit", .string(limit)), ("retry_after", .int(retryAfterSeconds))]))
    }

    /// 503: a limit with `on_store_failure: closed` cannot reach its store.
    public static func rateLimitStoreUnavailable(limit: String, headers: HTTPHeaders = HTTPHeaders()) -> ProblemDetails {
        ProblemDetails(status: 503, type: "rate-limit-store-unavailable", title: "Service Unavailable",
                       detail: "rate limit \"\(limit)\" cannot be checked right now", headers: headers,
                       extensions: JSONObject([("limit", .string(limit))]))
    }
}
