extension RateLimiter {
    /// Decides one request and hands the outcome to `completion`, now or (for a remote store)
    /// later on the caller's event loop.
    public func evaluate(_ limits: [RateLimitSpec], subject: RateLimitSubject, now: Int64, cost: Int64 = 1,
                         completion: @escaping (RateLimitOutcome) -> Void) {
        completion(evaluate(limits, subject: subject, now: now, cost: cost))
    }
}
