/// The metrics file read at one moment, every worker block summed: what the exposition
/// renders. Built by `MetricsSegment.snapshot()`; plain values, so rendering is unit-tested.
public struct MetricsSnapshot: Sendable {
    /// The file's header words (`MetricsLayout.Header`).
    public var header: [UInt64]
    /// Name of each route slot (nil: unassigned).
    public var routeNames: [String?]
    /// Name of each limit slot, `route\tlimit` (nil: unassigned).
    public var limitNames: [String?]
    /// Per route slot, its `MetricsLayout.routeWords` words summed over every block.
    public var routes: [[UInt64]]
    /// Per limit slot, rate-limited requests summed over every block.
    public var limits: [UInt64]
    /// Name of each upstream target slot, `upstream\ttarget` (nil: unassigned).
    public var targetNames: [String?] = []
    /// Per target slot, its `MetricsLayout.TargetCounter` words summed over every block.
    public var targets: [[UInt64]] = []
    /// Live state of the targets the running configuration names, by target slot (read from
    /// the shared upstream state; empty when it is not available).
    public var targetStates: [Int: TargetState] = [:]
    /// Live workers (blocks whose pid is set), by block.
    public var workers: [Worker]
    /// Access-log lines dropped, every block (dead workers' too).
    public var accessLogDropped: UInt64
    public var rateTable: RateTable?
    /// CLOCK_MONOTONIC when read (scoreboard ages are measured against it).
    public var nowNanos: UInt64
    /// Milliseconds during which at least one event loop of the instance ran its Redis limits
    /// on their failure policy (`DegradedTime`).
    public var redisDegradedMs: UInt64 = 0

    public struct Worker: Sendable, Equatable {
        public var block: Int
        public var pid: UInt64
        public var loops: Int
        public var inFlight: UInt64
        public var keptConnections: UInt64
        public var startedUnix: UInt64
        public var scoreboard: [Loop]
        public init(block: Int, pid: UInt64, loops: Int, inFlight: UInt64, keptConnections: UInt64, startedUnix: UInt64, scoreboard: [Loop]) {
            self.block = block
            self.pid = pid
            self.loops = loops
            self.inFlight = inFlight
            self.keptConnections = keptConnections
            self.startedUnix = startedUnix
            self.scoreboard = scoreboard
        }
    }

    /// One loop's scoreboard entry.
    public struct Loop: Sendable, Equatable {
        public var inFlight: UInt64
        /// Route slot of the loop's oldest request in flight (nil: idle).
        public var route: Int?
        /// When that request started (CLOCK_MONOTONIC ns).
        public var sinceNanos: UInt64
        public init(inFlight: UInt64, route: Int?, sinceNanos: UInt64) {
            self.inFlight = inFlight
            self.route = route
            self.sinceNanos = sinceNanos
        }
    }

    /// A target's live state: its health and breaker words and requests in flight across the
    /// instance.
    public struct TargetState: Sendable, Equatable {
        public var health: HealthWord
        public var breaker: BreakerWord
        public var inFlight: UInt64
        public init(health: HealthWord, breaker: BreakerWord, inFlight: UInt64) {
            self.health = health
            self.breaker = breaker
            self.inFlight = inFlight
        }
    }

    /// The rate-limit table's figures.
    public struct RateTable: Sendable, Equatable {
        public var slots: UInt64
        public var used: UInt64
        public var insertions: UInt64
        public var evictions: UInt64
        public var storeFailures: UInt64
        public var degradedDecisions: UInt64
        public init(slots: UInt64, used: UInt64, insertions: UInt64, evictions: UInt64, storeFailures: UInt64, degradedDecisions: UInt64) {
            self.slots = slots
            self.used = used
            self.insertions = insertions
            self.evictions = evictions
            self.storeFailures = storeFailures
            self.degradedDecisions = degradedDecisions
        }
    }

    public init(header: [UInt64], routeNames: [String?], limitNames: [String?], routes: [[UInt64]], limits: [UInt64],
                workers: [Worker], accessLogDropped: UInt64, rateTable: RateTable?, nowNanos: UInt64) {
        self.header = header
        self.routeNames = routeNames
        self.limitNames = limitNames
        self.routes = routes
        self.limits = limits
        self.workers = workers
        self.accessLogDropped = accessLogDropped
        self.rateTable = rateTable
        self.nowNanos = nowNanos
    }

    public func header(_ h: MetricsLayout.Header) -> UInt64 { h.rawValue < header.count ? header[h.rawValue] : 0 }

    /// The label a route slot is shown with.
    public func routeLabel(_ slot: Int) -> String? {
        switch slot {
        case MetricsLayout.unmatchedRoute: return MetricsLayout.unmatchedName
        case MetricsLayout.otherRoute: return MetricsLayout.otherName
        default: return slot < routeNames.count ? routeNames[slot] : nil
        }
    }

    /// Requests of a route slot and status class.
    public func requests(route: Int, statusClass: Int) -> UInt64 {
        let base = MetricsLayout.classOffset(route: route, statusClass: statusClass) - MetricsLayout.blockHeadWords - route * MetricsLayout.routeWords
        return routes[route][base..<base + MetricsLayout.bucketCount].reduce(0, &+)
    }
}
