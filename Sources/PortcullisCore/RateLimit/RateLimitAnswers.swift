/// What the client and the access log see of a rate-limit outcome. Pure functions of the outcome.
extension RateLimitOutcome {
    /// The result the RateLimit fields describe: the rejecting limit on 429 (when it is
    /// advertised), otherwise the most restrictive advertised one (fewest remaining, then the
    /// longest until reset). Shadow, hidden and concurrency limits are never described.
    var headline: RateLimitResult? {
        if verdict == .limited { return results.last.flatMap { $0.advertised ? $0 : nil } }
        var best: RateLimitResult?
        for r in results where r.advertised {
            guard let d = r.decision else { continue }
            if let b = best?.decision, (b.remaining, -b.resetAfterMicros) <= (d.remaining, -d.resetAfterMicros) { continue }
            best = r
        }
        return best
    }

    /// The decision the RateLimit fields describe (see ``headline``).
    public var headlineDecision: RateLimitDecision? { headline?.decision }

    /// Seconds to wait after a rejection: the rejecting limit's own answer, at least 1.
    var retryAfterSeconds: Int64 {
        max(1, RateLimitState.ceilSeconds(results.last?.decision?.retryAfterMicros ?? 0))
    }

    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds), on the upstream's
    /// answers and the rejections of a limited route (not on the gateway's own errors after
    /// admission); `Retry-After` on a 429 or 503; and the IETF draft fields `RateLimit-Policy`
    /// (every advertised limit) and `RateLimit` (the headline one).
    public var headers: HTTPHeaders {
        var h = HTTPHeaders()
        switch verdict {
        case .limited:
            h.add("Retry-After", String(retryAfterSeconds))
        case .storeUnavailable:
            h.add("Retry-After", String(max(1, unavailableRetrySeconds)))
        case .allowed, .invalidCost:
            break
        }
        guard let r = headline, let d = r.decision else { return h }
        h.add("RateLimit-Limit", String(d.limit))
        h.add("RateLimit-Remaining", String(d.remaining))
        h.add("RateLimit-Reset", String(RateLimitState.ceilSeconds(d.resetAfterMicros)))
        var policy = ""
        for item in results where item.advertised {
            if !policy.isEmpty { policy += ", " }
            policy += item.params.policyItem(name: item.name)
        }
        h.add("RateLimit-Policy", policy)
        h.add("RateLimit", "\"\(r.name)\";r=\(d.remaining);t=\(RateLimitState.ceilSeconds(d.resetAfterMicros))")
        return h
    }

    /// The 429 (or the limit's configured status), 503 or 400 answer, with the headers above;
    /// nil when the request is allowed.
    public var problem: ProblemDetails? {
        switch verdict {
        case .allowed:
            return nil
        case .limited:
            return .tooManyRequests(limit: results.last?.name ?? "", retryAfterSeconds: retryAfterSeconds, headers: headers,
                                    rejection: rejection)
        case .storeUnavailable:
            return .rateLimitStoreUnavailable(limit: results.last?.name ?? "", headers: headers)
        case .invalidCost(let why):
            return ProblemDetails(status: 400, type: "invalid-rate-limit-cost", title: "Bad Request", detail: why)
        }
    }

    /// For the access log: `name:<kind>[@local]:remaining` per evaluated limit, comma
    /// separated, e.g. `per-key:allowed:3,per-day:denied:0`, `trial:shadow_denied:0` (a
    /// shadow limit that would have rejected), `per-key:allowed@local:4` (local fallback);
    /// without a count `per-key:open` / `per-key:closed` (failure policy) and `per-key:exempt`.
    /// Empty for a route without limits.
    public var logSummary: String {
        var line = ""
        for r in results {
            if !line.isEmpty { line += "," }
            line += r.name
            line += ":"
            line += r.kind.rawValue
            guard let d = r.decision, r.path == .primary || r.path == .fallbackLocal else { continue }
            line += r.path == .fallbackLocal ? "@local:" : ":"
            line += String(d.remaining)
        }
        return line
    }
}

extension ProblemDetails {
    /// 429 (or `rejection.status`): the named limit is exhausted; `headers` carries `Retry-After`
    /// and the RateLimit fields.
    public static func tooManyRequests(limit: String, retryAfterSeconds: Int64, headers: HTTPHeaders = HTTPHeaders(),
                                       rejection: RateLimitRejection = .standard) -> ProblemDetails {
        var h = headers
        if !h.contains("Retry-After") { h.add("Retry-After", String(retryAfterSeconds)) }
        return ProblemDetails(status: rejection.status, type: "rate-limited",
                              title: rejection.title ?? (rejection.status == 503 ? "Service Unavailable" : "Too Many Requests"),
                              detail: rejection.detail ?? "rate limit \"\(limit)\" exceeded; retry in \(retryAfterSeconds) s", headers: h,
                              extensions: JSONObject([("limit", .string(limit)), ("retry_after", .int(retryAfterSeconds))]))
    }

    /// 503: a limit with `on_store_failure: closed` cannot reach its store.
    public static func rateLimitStoreUnavailable(limit: String, headers: HTTPHeaders = HTTPHeaders()) -> ProblemDetails {
        ProblemDetails(status: 503, type: "rate-limit-store-unavailable", title: "Service Unavailable",
                       detail: "rate limit \"\(limit)\" cannot be checked right now", headers: headers,
                       extensions: JSONObject([("limit", .string(limit))]))
    }
}
