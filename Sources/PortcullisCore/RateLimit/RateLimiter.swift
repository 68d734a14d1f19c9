/// Receives what a limiter wants logged and counted; the runtime points these at its log and
/// at the shared-memory counters.
public struct RateLimitObserver: Sendable {
    /// One line for the gateway's error log (only on state changes: degraded, still down, recovered).
    public var log: @Sendable (String) -> Void
    /// A call to the remote store failed.
    public var storeFailure: @Sendable () -> Void
    /// A decision was made by a failure policy instead of the configured store.
    public var degradedDecision: @Sendable () -> Void
    /// The limiter entered (true) or left (false) degraded mode: its Redis calls fail and its
    /// limits are decided by their failure policy. A limiter released while degraded leaves it.
    public var degradedChanged: @Sendable (Bool) -> Void

    public init(log: @escaping @Sendable (String) -> Void = { _ in },
                storeFailure: @escaping @Sendable () -> Void = {},
                degradedDecision: @escaping @Sendable () -> Void = {},
                degradedChanged: @escaping @Sendable (Bool) -> Void = { _ in }) {
        self.log = log
        self.storeFailure = storeFailure
        self.degradedDecision = degradedDecision
        self.degradedChanged = degradedChanged
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
    /// The request is exempt (`exempt`): not counted.
    case exempt
}

/// The result of one limit for one request.
public struct RateLimitResult: Sendable, Equatable {
    public var name: String
    /// nil when no counter decided (`failOpen`, `failClosed`).
    public var decision: RateLimitDecision?
    public var path: RateLimitPath
    /// The parameters that applied (after plan overrides and the local fallback's division).
    public var params: RateLimitParams
    /// The limit is in `shadow` mode: its denials did not reject.
    public var shadow = false
    /// Shown in the RateLimit response fields (enforced, not hidden, not a concurrency limit).
    public var advertised = true
    /// The texts of `name` with `params`, fixed at load (the response fields and the log use them).
    var texts: RateLimitTexts

    public init(name: String, decision: RateLimitDecision?, path: RateLimitPath, params: RateLimitParams) {
        self.init(name: name, decision: decision, path: path, params: params, texts: RateLimitTexts(name: name, params: params))
    }

    init(name: String, decision: RateLimitDecision?, path: RateLimitPath, params: RateLimitParams, texts: RateLimitTexts) {
        self.name = name
        self.decision = decision
        self.path = path
        self.params = params
        self.texts = texts
    }

    /// What happened, in one word per case (for the access log and metrics).
    public enum Kind: String, Sendable {
        case allowed, denied
        /// A `shadow` limit would have admitted / rejected the request (it was admitted).
        case shadowAllowed = "shadow_allowed", shadowDenied = "shadow_denied"
        case open, closed, exempt
    }

    public var kind: Kind {
        switch path {
        case .failOpen: return .open
        case .failClosed: return .closed
        case .exempt: return .exempt
        case .primary, .fallbackLocal:
            let allowed = decision?.allowed ?? true
            return shadow ? (allowed ? .shadowAllowed : .shadowDenied) : (allowed ? .allowed : .denied)
        }
    }
}

/// A concurrency lease an admitted request holds until it ends (``RateLimiter/release(_:)``).
public struct RateLimitLease: Sendable, Equatable {
    public var key: RateLimitKey
    public var params: RateLimitParams
    /// When it was taken: its lease period.
    public var acquiredAt: Int64
    public var cost: Int64
}

/// The request's verdict over all the limits of its route.
public struct RateLimitOutcome: Sendable, Equatable {
    public enum Verdict: Sendable, Equatable {
        case allowed
        /// A limit is exhausted: 429.
        case limited
        /// A `closed` limit's store is unavailable: 503.
        case storeUnavailable
        /// The request's cost (header or claim) is not a valid number: 400, with the reason.
        case invalidCost(String)
    }
    public var verdict: Verdict
    /// The limits evaluated, in route order; on rejection the last one is the rejecting limit
    /// (the later ones were not evaluated).
    public var results: [RateLimitResult]
    /// Seconds a client should wait after a 503 `storeUnavailable` (the Redis retry interval).
    public var unavailableRetrySeconds: Int64
    /// How the rejecting limit answers (`.limited`).
    public var rejection = RateLimitRejection.standard
    /// Concurrency leases the admitted request holds; give them back with
    /// ``RateLimiter/release(_:)`` when it ends.
    public var leases: [RateLimitLease] = []

    public init(verdict: Verdict, results: [RateLimitResult], unavailableRetrySeconds: Int64) {
        self.verdict = verdict
        self.results = results
        self.unavailableRetrySeconds = unavailableRetrySeconds
    }

    public var allowed: Bool { verdict == .allowed }
    public static let unlimited = RateLimitOutcome(verdict: .allowed, results: [], unavailableRetrySeconds: 0)
}

/// One request's pass over the limits of its route, as a resumable state machine: the limiter
/// advances it until a limit needs the remote store, hands out that question as a
/// ``Step/remote(key:params:)`` and is resumed with the answer. No I/O of its own, so the
/// decision logic is tested without sockets; ``RateLimiter/evaluate(_:subject:now:completion:)``
/// drives it.
public struct RateLimitEvaluation {
    /// What the evaluation needs next.
    public enum Step {
        /// Ask the remote store to acquire `cost` on `key`, then
        /// ``RateLimiter/resume(_:with:)`` with its answer.
        case remote(key: RateLimitKey, params: RateLimitParams, cost: Int64)
        /// Every limit is decided (or one rejected).
        case done(RateLimitOutcome)
    }

    /// An admitted limit, refunded if a later one rejects.
    struct Commitment {
        var remote: Bool
        var key: RateLimitKey
        var params: RateLimitParams
        var cost: Int64
    }

    /// The limit waiting for the remote store's answer.
    struct Question {
        /// Its index in `limits`.
        var limit: Int
        var params: RateLimitParams
        var texts: RateLimitTexts
        var key: RateLimitKey
        var cost: Int64
    }

    public let limits: [RateLimitSpec]
    public let subject: RateLimitSubject
    /// Wall-clock microseconds of the request: every limit, and any fallback decided after a
    /// remote failure, is decided at this time.
    public let now: Int64
    /// The next limit to decide.
    var next = 0
    var results: [RateLimitResult] = []
    var committed: [Commitment] = []
    var question: Question?
    /// Whether a concurrency limit was committed (its lease goes into the outcome).
    var holdsLeases = false

    public init(limits: [RateLimitSpec], subject: RateLimitSubject, now: Int64) {
        self.limits = limits
        self.subject = subject
        self.now = now
        results.reserveCapacity(limits.count)
    }
}

/// The per-request entry point: evaluates every limit of a route against its store, applies the
/// failure policies and keeps multi-limit semantics.
///
/// Multi-limit semantics: limits are decided in route order and each admitted one is committed
/// at once; when one rejects, the earlier ones are refunded and the later ones not evaluated.
/// So a rejected request consumes nothing (every limit must pass), with one atomic step per
/// limit and store — a "check all, then commit all" would need a transaction spanning slots
/// and stores, and would still have to undo when a commit loses a race. The cost is that for a
/// few microseconds (a Redis round trip for a remote limit) a rejected request's earlier
/// consumption is visible to concurrent requests, which can only make them stricter, never
/// looser.
///
/// One limiter per event-loop thread: it holds that loop's remote store (one Redis connection,
/// many requests in flight on it) and the Redis health state that every request of the loop
/// shares; the local table is shared by all. Used only on its loop's thread.
public final class RateLimiter {
    let local: RateLimitStore
    /// The store of `store: redis` limits (nil: they are decided locally, undivided).
    public let remote: RemoteRateLimitStore?
    let instances: Int
    let retryMicros: Int64
    let observer: RateLimitObserver
    /// 0 while Redis is healthy; otherwise when to try it again.
    private(set) var remoteRetryAt: Int64 = 0
    /// Whether the last Redis call failed (so recovery is logged once).
    public private(set) var degraded = false

    /// `remote` answers `store: redis` limits; `settings` gives the Redis retry interval and
    /// the instance count the `local` failure policy divides by.
    public init(local: RateLimitStore, remote: RemoteRateLimitStore?, settings: RateLimitSettings,
                observer: RateLimitObserver = RateLimitObserver()) {
        self.local = local
        self.remote = remote
        self.instances = settings.redis?.instances ?? 1
        self.retryMicros = Int64(settings.redis?.retryMs ?? 1_000) * 1_000
        self.observer = observer
    }

    deinit { if degraded { observer.degradedChanged(false) } }

    /// Decides one request against `limits` (the route's) and hands the outcome to
    /// `completion`. `now` is wall-clock microseconds (``RateLimitClock/nowMicros()``).
    ///
    /// `completion` runs exactly once: before this returns when no limit has to wait for Redis
    /// (all local, Redis in its retry interval, or the connection refused at once); otherwise
    /// later, on the loop thread, when Redis answers or its timeout fails the call and the
    /// limit's failure policy decides. Requests do not wait for each other: many may be in
    /// flight at once, each completing when its own answers are in.
    public func evaluate(_ limits: [RateLimitSpec], subject: RateLimitSubject, now: Int64,
                         completion: @escaping (RateLimitOutcome) -> Void) {
        guard !limits.isEmpty else { return completion(.unlimited) }
        var evaluation = RateLimitEvaluation(limits: limits, subject: subject, now: now)
        let step = advance(&evaluation)
        finish(evaluation, from: step, completion: completion)
    }

    /// Decides one request and returns its outcome, for a caller whose stores answer before
    /// returning (no remote store: `portcullis microbench`, tests). Traps when an answer would
    /// come later: on an event loop, use ``evaluate(_:subject:now:completion:)``.
    public func evaluate(_ limits: [RateLimitSpec], subject: RateLimitSubject, now: Int64) -> RateLimitOutcome {
        var outcome: RateLimitOutcome?
        evaluate(limits, subject: subject, now: now) { outcome = $0 }
        guard let outcome else { preconditionFailure("a remote store answered later; use the completion form on its event loop") }
        return outcome
    }

    /// Drives `evaluation` from `step` (what ``advance(_:)`` or ``resume(_:with:)`` returned)
    /// to its outcome, asking the remote store whenever a limit needs it, and hands the outcome
    /// to `completion` (at once for `.done`). A caller that advances first itself makes the
    /// completion only when the first step is a remote question: a request decided locally
    /// allocates no closure.
    public func finish(_ evaluation: RateLimitEvaluation, from step: RateLimitEvaluation.Step,
                       completion: @escaping (RateLimitOutcome) -> Void) {
        switch step {
        case .done(let outcome):
            completion(outcome)
        case .remote(let key, let params, let cost):
            // `advance` asks only when there is a remote store.
            remote!.acquire(key, params: params, now: evaluation.now, cost: cost) { [self] answer in
                var evaluation = evaluation
                let step = resume(&evaluation, with: answer)
                finish(evaluation, from: step, completion: completion)
            }
        }
    }

    /// Decides limits in route order until one needs the remote store or all are decided.
    public func advance(_ e: inout RateLimitEvaluation) -> RateLimitEvaluation.Step {
        precondition(e.question == nil, "the evaluation waits for a remote answer")
        while e.next < e.limits.count {
            // The limit's fields are read in place: a copy of the whole spec would retain and
            // release each of its strings, arrays and texts per request.
            let i = e.next
            if e.limits[i].exempt?.exempts(e.subject) == true {
                var result = RateLimitResult(name: e.limits[i].name, decision: nil, path: .exempt, params: e.limits[i].params,
                                             texts: e.limits[i].texts)
                result.shadow = e.limits[i].mode == .shadow
                result.advertised = false
                e.results.append(result)
                e.next += 1
                continue
            }
            let cost: Int64
            switch e.limits[i].cost.resolve(e.subject) {
            case .success(let c): cost = c
            case .failure(let error):
                refundCommitted(e)
                return .done(RateLimitOutcome(verdict: .invalidCost("rate limit \"\(e.limits[i].name)\": " + error.message),
                                              results: e.results, unavailableRetrySeconds: 0))
            }
            let (params, texts) = e.limits[i].variant(forGroups: e.subject.consumerGroups)
            let key = RateLimitKey(prefix: texts.keyPrefix, parts: e.limits[i].key, subject: e.subject)
            let decided: Decided
            if e.limits[i].store == .local || remote == nil {
                decided = decideLocally(e.limits[i].name, key: key, params: params, texts: texts, path: .primary, now: e.now, cost: cost)
            } else if remoteIsDue(e.now) {
                e.question = RateLimitEvaluation.Question(limit: i, params: params, texts: texts, key: key, cost: cost)
                return .remote(key: key, params: params, cost: cost)
            } else {
                decided = applyPolicy(e.limits[i], params: params, texts: texts, subject: e.subject, now: e.now, cost: cost)
            }
            if let outcome = record(decided, limit: i, in: &e) { return .done(outcome) }
        }
        var outcome = RateLimitOutcome(verdict: .allowed, results: e.results, unavailableRetrySeconds: 0)
        if e.holdsLeases {
            outcome.leases = e.committed.filter { $0.params.algorithm == .concurrency }.map {
                RateLimitLease(key: $0.key, params: $0.params, acquiredAt: e.now, cost: $0.cost)
            }
        }
        return .done(outcome)
    }

    /// Gives back the concurrency leases of a request that has ended (its answer is sent, or
    /// it was abandoned). On the loop's thread, like every call of the limiter.
    public func release(_ leases: [RateLimitLease]) {
        for lease in leases {
            try? local.refund(lease.key, params: lease.params, now: lease.acquiredAt, cost: lease.cost)
        }
    }

    /// Continues an evaluation with the remote store's answer to its last ``RateLimitEvaluation/Step/remote(key:params:)``:
    /// a decision, or an error that puts Redis in its retry interval and lets the limit's
    /// failure policy decide.
    public func resume(_ e: inout RateLimitEvaluation, with answer: Result<RateLimitDecision, RateLimitStoreError>) -> RateLimitEvaluation.Step {
        guard let q = e.question else { preconditionFailure("the evaluation asked no question") }
        e.question = nil
        let decided: Decided
        switch answer {
        case .success(let d):
            if degraded {
                degraded = false
                observer.degradedChanged(false)
                observer.log("rate limit: redis answers again; distributed counting resumed")
            }
            remoteRetryAt = 0
            decided = Decided(result: RateLimitResult(name: e.limits[q.limit].name, decision: d, path: .primary, params: q.params, texts: q.texts),
                              commitment: d.allowed ? .init(remote: true, key: q.key, params: q.params, cost: q.cost) : nil)
        case .failure(let error):
            remoteFailed(error, now: e.now)
            decided = applyPolicy(e.limits[q.limit], params: q.params, texts: q.texts, subject: e.subject, now: e.now, cost: q.cost)
        }
        if let outcome = record(decided, limit: q.limit, in: &e) { return .done(outcome) }
        return advance(&e)
    }

    /// Whether a request at `now` may call Redis (healthy, or its retry interval is over).
    private func remoteIsDue(_ now: Int64) -> Bool { remoteRetryAt == 0 || now >= remoteRetryAt }

    /// Counts every failed call; opens the retry interval and logs once per outage. With many
    /// requests in flight, one timeout or lost connection fails them all at once: only the
    /// first, sent while Redis was still due, starts the interval; the others (sent before it
    /// began) belong to the same outage.
    private func remoteFailed(_ error: RateLimitStoreError, now: Int64) {
        observer.storeFailure()
        if !degraded {
            degraded = true
            observer.degradedChanged(true)
        }
        guard remoteIsDue(now) else { return }
        remoteRetryAt = now + retryMicros
        observer.log("rate limit: redis unavailable (\(error.message)); limits degraded to their on_store_failure policy, retry in \(retryMicros / 1_000) ms")
    }

    private struct Decided {
        var result: RateLimitResult
        /// Set when a counter was consumed.
        var commitment: RateLimitEvaluation.Commitment?
    }

    /// Appends one limit's result; on a rejection refunds the earlier limits and returns the
    /// outcome.
    /// A `shadow` limit never rejects: its denial is recorded and the request goes on.
    private func record(_ decided: Decided, limit i: Int, in e: inout RateLimitEvaluation) -> RateLimitOutcome? {
        var result = decided.result
        let mode = e.limits[i].mode
        if mode == .shadow { result.shadow = true }
        if !e.limits[i].advertised { result.advertised = false }
        e.results.append(result)
        e.next += 1
        let path = result.path
        guard mode == .enforce, path == .failClosed || result.decision?.allowed == false else {
            // Kept to be refunded if a later limit rejects, or as a lease: the last limit's
            // plain commitment is never needed (and a one-limit route allocates nothing for it).
            if let c = decided.commitment, c.params.algorithm == .concurrency || e.next < e.limits.count {
                e.committed.append(c)
                if c.params.algorithm == .concurrency { e.holdsLeases = true }
            }
            return nil
        }
        refundCommitted(e)
        var outcome = RateLimitOutcome(verdict: path == .failClosed ? .storeUnavailable : .limited, results: e.results,
                                       unavailableRetrySeconds: RateLimitState.ceilSeconds(retryMicros))
        outcome.rejection = e.limits[i].rejection
        return outcome
    }

    /// Gives back what the request's earlier limits consumed (it is rejected).
    private func refundCommitted(_ e: RateLimitEvaluation) {
        for c in e.committed {
            if !c.remote {
                try? local.refund(c.key, params: c.params, now: e.now, cost: c.cost)
            } else if remoteIsDue(e.now) {
                // Not during the retry interval: Redis is not called then, refunds included.
                remote?.refund(c.key, params: c.params, now: e.now, cost: c.cost)
            }
        }
    }

    /// The limit's `on_store_failure` policy, while Redis is unavailable.
    private func applyPolicy(_ spec: RateLimitSpec, params: RateLimitParams, texts: RateLimitTexts, subject: RateLimitSubject,
                             now: Int64, cost: Int64) -> Decided {
        observer.degradedDecision()
        switch spec.onStoreFailure {
        case .open:
            return Decided(result: RateLimitResult(name: spec.name, decision: nil, path: .failOpen, params: params, texts: texts))
        case .closed:
            return Decided(result: RateLimitResult(name: spec.name, decision: nil, path: .failClosed, params: params, texts: texts))
        case .local:
            // Only while Redis is unavailable: the divided parameters' texts are made here.
            let divided = params.divided(by: instances)
            let dividedTexts = divided == params ? texts : RateLimitTexts(name: spec.name, params: divided)
            let localKey = RateLimitKey(prefix: dividedTexts.keyPrefix, parts: spec.key, subject: subject)
            return decideLocally(spec.name, key: localKey, params: divided, texts: dividedTexts, path: .fallbackLocal, now: now, cost: cost)
        }
    }

    private func decideLocally(_ name: String, key: RateLimitKey, params: RateLimitParams, texts: RateLimitTexts,
                               path: RateLimitPath, now: Int64, cost: Int64) -> Decided {
        do {
            let d = try local.acquire(key, params: params, now: now, cost: cost)
            return Decided(result: RateLimitResult(name: name, decision: d, path: path, params: params, texts: texts),
                           commitment: d.allowed ? .init(remote: false, key: key, params: params, cost: cost) : nil)
        } catch {
            // The shared-memory table cannot fail; a custom local store that does is not a
            // reason to refuse traffic.
            observer.log("rate limit: local store failed (\(error.message)); admitting")
            return Decided(result: RateLimitResult(name: name, decision: nil, path: .failOpen, params: params, texts: texts))
        }
    }
}
