/// What the client and the access log see of a rate-limit outcome. Pure functions of the outcome.
extension RateLimitOutcome {
    /// The result the RateLimit fields describe: the rejecting limit on 429 (when it is
    /// advertised), otherwise the most restrictive advertised one (fewest remaining, then the
    /// longest until reset). Shadow, hidden and concurrency limits are never described.
    var headline: RateLimitResult? { headlineIndex.map { results[$0] } }

    /// The index of ``headline`` in `results` (no copy of a result per comparison).
    private var headlineIndex: Int? {
        if verdict == .limited { return results.isEmpty || !results[results.count - 1].advertised ? nil : results.count - 1 }
        var best: Int?
        for i in results.indices where results[i].advertised {
            guard let d = results[i].decision else { continue }
            if let b = best, let bd = results[b].decision, (bd.remaining, -bd.resetAfterMicros) <= (d.remaining, -d.resetAfterMicros) { continue }
            best = i
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

    /// Whether the outcome adds any field to the response (``headers`` is not empty).
    public var addsHeaderFields: Bool {
        switch verdict {
        case .limited, .storeUnavailable: return true
        case .allowed, .invalidCost: return headlineIndex.map { results[$0].decision != nil } ?? false
        }
    }

    /// Appends exactly what `HeaderHygiene.appendFields(headers, to:)` appends — the same
    /// fields, in the same order, a field with an unsafe value left out — from the texts the
    /// configuration fixed (``RateLimitTexts``) and the decision's numbers: no `String` per
    /// field, so the streaming path writes them straight into the response head.
    public func appendHeaderFields(to out: inout [UInt8]) { writeHeaderFields(to: &out) }

    /// ``appendHeaderFields(to:)`` straight into a head's buffer.
    public func appendHeaderFields(to out: inout ByteBuffer) { writeHeaderFields(to: &out) }

    private func writeHeaderFields<Sink: ByteSink>(to out: inout Sink) {
        switch verdict {
        case .limited:
            out.appendASCII("Retry-After: ")
            out.appendDecimal(Int(retryAfterSeconds))
            out.appendASCII("\r\n")
        case .storeUnavailable:
            out.appendASCII("Retry-After: ")
            out.appendDecimal(Int(max(1, unavailableRetrySeconds)))
            out.appendASCII("\r\n")
        case .allowed, .invalidCost:
            break
        }
        guard let h = headlineIndex, let d = results[h].decision else { return }
        let reset = Int(RateLimitState.ceilSeconds(d.resetAfterMicros))
        out.appendASCII("RateLimit-Limit: ")
        out.appendDecimal(Int(d.limit))
        out.appendASCII("\r\nRateLimit-Remaining: ")
        out.appendDecimal(Int(d.remaining))
        out.appendASCII("\r\nRateLimit-Reset: ")
        out.appendDecimal(reset)
        out.appendASCII("\r\n")
        let texts = results[h].texts
        if results.count == 1 {
            // The only result is the headline (so advertised): the policy is its item alone,
            // and both fields up to the remaining count were written at load.
            guard texts.nameIsSafe else { return }
            texts.soleFields.withUnsafeBufferPointer { out.append(bytes: $0) }
        } else {
            appendPolicy(to: &out)
            guard texts.nameIsSafe else { return }
            out.appendASCII("RateLimit: ")
            texts.quotedName.withUnsafeBufferPointer { out.append(bytes: $0) }
            out.appendASCII(";r=")
        }
        out.appendDecimal(Int(d.remaining))
        out.appendASCII(";t=")
        out.appendDecimal(reset)
        out.appendASCII("\r\n")
    }

    /// `RateLimit-Policy` of every advertised result, left out when any of their names is unsafe.
    private func appendPolicy<Sink: ByteSink>(to out: inout Sink) {
        if !results.contains(where: { $0.advertised && !$0.texts.nameIsSafe }) {
            out.appendASCII("RateLimit-Policy: ")
            var first = true
            for i in results.indices where results[i].advertised {
                if !first { out.appendASCII(", ") }
                first = false
                results[i].texts.policyItem.withUnsafeBufferPointer { out.append(bytes: $0) }
            }
            out.appendASCII("\r\n")
        }
    }

    /// Whether `name` is one of the fields ``headers`` may set (any case): an upstream's own
    /// field of such a name is replaced, not kept beside the gateway's.
    public static func isFieldName(_ name: UnsafeBufferPointer<UInt8>) -> Bool {
        switch name.count {
        case 9: return ASCIICase.equal(name, lower: "ratelimit")
        case 11: return ASCIICase.equal(name, lower: "retry-after")
        case 15: return ASCIICase.equal(name, lower: "ratelimit-limit") || ASCIICase.equal(name, lower: "ratelimit-reset")
        case 16: return ASCIICase.equal(name, lower: "ratelimit-policy")
        case 19: return ASCIICase.equal(name, lower: "ratelimit-remaining")
        default: return false
        }
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
        var line: [UInt8] = []
        writeLogSummary(to: &line) { r, out in out.appendUTF8(r.name) }
        return String(decoding: line, as: UTF8.self)
    }

    /// ``logSummary`` JSON-escaped, as the access log writes it between quotes: the names were
    /// escaped at load (``RateLimitTexts``), the rest needs no escaping.
    public func appendLogSummary(jsonEscapedTo out: inout [UInt8]) { writeEscapedLogSummary(to: &out) }

    /// ``appendLogSummary(jsonEscapedTo:)`` straight into a log line's buffer.
    public func appendLogSummary(jsonEscapedTo out: inout ByteBuffer) { writeEscapedLogSummary(to: &out) }

    private func writeEscapedLogSummary<Sink: ByteSink>(to out: inout Sink) {
        writeLogSummary(to: &out) { r, out in r.texts.logName.withUnsafeBufferPointer { out.append(bytes: $0) } }
    }

    private func writeLogSummary<Sink: ByteSink>(to line: inout Sink, name: (RateLimitResult, inout Sink) -> Void) {
        for (i, r) in results.enumerated() {
            if i > 0 { line.append(UInt8(ascii: ",")) }
            name(r, &line)
            line.append(UInt8(ascii: ":"))
            line.appendUTF8(r.kind.rawValue)
            guard let d = r.decision, r.path == .primary || r.path == .fallbackLocal else { continue }
            if r.path == .fallbackLocal { line.appendASCII("@local:") } else { line.append(UInt8(ascii: ":")) }
            line.appendDecimal(Int(d.remaining))
        }
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
