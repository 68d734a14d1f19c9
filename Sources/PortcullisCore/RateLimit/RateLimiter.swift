/// Receives what a limiter wants logged and counted; the runtime points these at its log and
/// at the shared-memory counters.
public struct RateLimitObserver: Sendable {
    /// One line for the gateway's error log (only on state changes: degraded, still down, recovered).
    public var log: @Sendable (String) -> Void
    /// A call to the remote store failed.
    public var storeFailure: @Sendable () -> Void
    /// A decision was made by a failure policy instead of the configured store.
    public var degradedDecision: @Sendable () -> Void

    public init(log: @escaping @Sendable (String) -> Void = { _ in },
                storeFailure: @escaping @Sendable () -> Void = {},
                degradedDecision: @escaping @Sendable () -> Void = {}) {
        self.log = log
        self.storeFailure = storeFailure
        self.degradedDecision = degradedDecision
    }
}

/// How one limit of a request was decided.
public enum RateLimitPath: Sendable, Equatable {
    /// By the store the limit names.
    case primary
    /// Redis was unavailable; the local table decided with the divided limit (policy `local`).
    case fallbackLocal
    /// Redis was unavailable; admitted without counting (policy `open`).
    case failOpen
    /// Redis was unavailable; refused (policy `closed`).
    case failClosed
}

/// The result of one limit for one request.
public struct RateLimitResult: Sendable, Equatable {
    public var name: String
    /// nil when no counter decided (`failOpen`, `failClosed`).
    public var decision: RateLimitDecision?
    public var path: RateLimitPath
    /// The parameters that applied (after plan overrides and the local fallback's division).
    public var params: RateLimitParams

    public init(name: String, decision: RateLimitDecision?, path: RateLimitPath, params: RateLimitParams) {
        self.name = name
        self.decision = decision
        self.path = path
        self.params = params
    }
}

/// The request's verdict over all the limits of its route.
public struct RateLimitOutcome: Sendable, Equatable {
    public enum Verdict: Sendable, Equatable {
        case allowed
        /// A limit is exhausted: 429.
        case limited
        /// A `closed` limit's store is unavailable: 503.
        case storeUnavailable
    }
    public var verdict: Verdict
    /// The limits evaluated, in route order; on rejection the last one is the rejecting limit
    /// (the later ones were not evaluated).
    public var results: [RateLimitResult]
    /// Seconds a client should wait after a 503 `storeUnavailable` (the Redis retry interval).
    public var unavailableRetrySeconds: Int64

    public var allowed: Bool { verdict == .allowed }
    public static let unlimited = RateLimitOutcome(verdict: .allowed, results: [], unavailableRetrySeconds: 0)
}

/// The per-request entry point: evaluates every limit of a route against its store, applies the
/// failure policies and keeps multi-limit semantics.
///
/// Multi-limit semantics: limits are decided in route order and each admitted one is committed
/// at once; when one rejects, the earlier ones are refunded and the later ones not evaluated.
/// So a rejected request consumes nothing (every limit must pass), with one atomic step per
/// limit and store — a "check all, then commit all" would need a transaction spanning slots
/// and stores, and would still have to undo when a commit loses a race. The cost is that for a
/// few microseconds a rejected request's earlier consumption is visible to concurrent
/// requests, which can only make them stricter, never looser.
///
/// One limiter per worker thread: it holds that thread's Redis connection (through the store)
/// and the Redis health state; the local table is shared.
public final class RateLimiter {
    let local: RateLimitStore
    let remote: RateLimitStore?
    let instances: Int
    let retryMicros: Int64
    let observer: RateLimitObserver
    /// 0 while Redis is healthy; otherwise when to try it again.
    private(set) var remoteRetryAt: Int64 = 0
    /// Whether the last Redis call failed (so recovery is logged once).
    public private(set) var degraded = false

    public init(local: RateLimitStore, remote: RateLimitStore?, settings: RateLimitSettings,
                observer: RateLimitObserver = RateLimitObserver()) {
        self.local = local
        self.remote = remote
        self.instances = settings.redis?.instances ?? 1
        self.retryMicros = Int64(settings.redis?.retryMs ?? 1_000) * 1_000
        self.observer = observer
    }

    /// Decides one request against `limits` (the route's). `now` is wall-clock microseconds
    /// (``RateLimitClock/nowMicros()``).
    public func evaluate(_ limits: [RateLimitSpec], subject: RateLimitSubject, now: Int64, cost: Int64 = 1) -> RateLimitOutcome {
        guard !limits.isEmpty else { return .unlimited }
        var results: [RateLimitResult] = []
        results.reserveCapacity(limits.count)
        var committed: [(store: RateLimitStore, key: RateLimitKey, params: RateLimitParams)] = []
        for spec in limits {
            let params = spec.params(forGroups: subject.consumerGroups)
            let step = decide(spec, params: params, subject: subject, now: now, cost: cost)
            results.append(step.result)
            let rejected = step.result.path == .failClosed || step.result.decision?.allowed == false
            if rejected {
                for c in committed { try? c.store.refund(c.key, params: c.params, now: now, cost: cost) }
                let verdict: RateLimitOutcome.Verdict = step.result.path == .failClosed ? .storeUnavailable : .limited
                return RateLimitOutcome(verdict: verdict, results: results,
                                        unavailableRetrySeconds: RateLimitState.ceilSeconds(retryMicros))
            }
            if let store = step.store { committed.append((store, step.key, step.result.params)) }
        }
        return RateLimitOutcome(verdict: .allowed, results: results, unavailableRetrySeconds: 0)
    }

    private struct Step {
        var result: RateLimitResult
        var store: RateLimitStore?
        var key: RateLimitKey
    }

    private func decide(_ spec: RateLimitSpec, params: RateLimitParams, subject: RateLimitSubject, now: Int64, cost: Int64) -> Step {
        let key = RateLimitKey.make(limitName: spec.name, params: params, parts: spec.key, subject: subject)
        if spec.store == .local || remote == nil {
            return decideLocally(spec.name, key: key, params: params, path: .primary, now: now, cost: cost)
        }
        if let remote, remoteRetryAt == 0 || now >= remoteRetryAt {
            do {
                let d = try remote.acquire(key, params: params, now: now, cost: cost)
                if degraded {
                    degraded = false
                    observer.log("rate limit: redis answers again; distributed counting resumed")
                }
                remoteRetryAt = 0
                return Step(result: RateLimitResult(name: spec.name, decision: d, path: .primary, params: params),
                            store: remote, key: key)
            } catch {
                observer.storeFailure()
                remoteRetryAt = now + retryMicros
                observer.log("rate limit: redis unavailable (\(error.message)); limits degraded to their on_store_failure policy, retry in \(retryMicros / 1_000) ms")
                degraded = true
            }
        }
        observer.degradedDecision()
        switch spec.onStoreFailure {
        case .open:
            return Step(result: RateLimitResult(name: spec.name, decision: nil, path: .failOpen, params: params), store: nil, key: key)
        case .closed:
            return Step(result: RateLimitResult(name: spec.name, decision: nil, path: .failClosed, params: params), store: nil, key: key)
        case .local:
            let divided = params.divided(by: instances)
            let localKey = RateLimitKey.make(limitName: spec.name, params: divided, parts: spec.key, subject: subject)
            return decideLocally(spec.name, key: localKey, params: divided, path: .fallbackLocal, now: now, cost: cost)
        }
    }

    private func decideLocally(_ name: String, key: RateLimitKey, params: RateLimitParams, path: RateLimitPath,
                               now: Int64, cost: Int64) -> Step {
        do {
            let d = try local.acquire(key, params: params, now: now, cost: cost)
            return Step(result: RateLimitResult(name: name, decision: d, path: path, params: params), store: local, key: key)
        } catch {
            // The shared-memory table cannot fail; a custom local store that does is not a
            // reason to refuse traffic.
            observer.log("rate limit: local store failed (\(error.message)); admitting")
            return Step(result: RateLimitResult(name: name, decision: nil, path: .failOpen, params: params), store: nil, key: key)
        }
    }
}
