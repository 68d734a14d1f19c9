/// A growth of the pool (`portcullis scale`, SIGTTIN, a reload that raises `server.workers`)
/// waiting for its new workers to be ready: the pure verdict, apart from the signals that carry
/// it out. New workers that are not ready within `server.ready_timeout_seconds`, or that end
/// before they are ready, are withdrawn and the pool returns to the size it had.
struct PoolGrowth: Sendable, Equatable {
    /// The desired size before the growth: what a withdrawal returns to.
    let from: Int
    /// The desired size asked for.
    let to: Int
    let timeoutSeconds: Int
    let deadline: ContinuousClock.Instant
    /// Why a worker ended before it was ready (the first one), if one did.
    private(set) var failure: String?

    init(from: Int, to: Int, timeoutSeconds: Int, now: ContinuousClock.Instant) {
        self.from = from
        self.to = to
        self.timeoutSeconds = timeoutSeconds
        self.deadline = now + .seconds(timeoutSeconds)
    }

    enum Verdict: Sendable, Equatable {
        case waiting
        case reached
        /// Back to `from` workers, for this reason.
        case withdraw(String)
    }

    /// Notes that a worker exited before it was ready: the growth cannot be trusted to get
    /// there, so it is withdrawn at the next verdict instead of waiting out the timeout.
    mutating func workerEndedBeforeReady(_ reason: String) {
        if failure == nil { failure = reason }
    }

    /// `ready` is how many workers of the running generation are ready and staying.
    func judge(ready: Int, now: ContinuousClock.Instant) -> Verdict {
        if ready >= to { return .reached }
        if let failure { return .withdraw(failure) }
        if now >= deadline {
            return .withdraw("only \(ready) of \(to) workers ready after \(timeoutSeconds) s (server.ready_timeout_seconds)")
        }
        return .waiting
    }
}
