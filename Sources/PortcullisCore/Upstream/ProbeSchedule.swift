/// The bookkeeping of the active health prober, apart from its I/O: when each target's next
/// check is due and which checks are under way. Every target has its own due time, so a check
/// that takes its whole timeout delays no other target's checks; a target is never checked twice
/// at once.
public struct ProbeSchedule<Item> {
    /// One checked target of one upstream.
    public struct Key: Hashable, Sendable {
        public let upstream: String
        public let target: String
        public init(upstream: String, target: String) {
            self.upstream = upstream
            self.target = target
        }
    }

    struct Entry {
        let key: Key
        var item: Item
        var due: ContinuousClock.Instant
        var inFlight: Bool
    }

    private var entries: [Entry] = []

    public init() {}

    /// Takes the checks of a (re)loaded configuration, all due at `now` except a target that was
    /// already planned: it keeps its due time and, when its check is under way, waits for it.
    public mutating func replace(with items: [(Key, Item)], now: ContinuousClock.Instant) {
        let old = Dictionary(entries.map { ($0.key, $0) }, uniquingKeysWith: { first, _ in first })
        entries = items.map { key, item in
            Entry(key: key, item: item, due: old[key]?.due ?? now, inFlight: old[key]?.inFlight ?? false)
        }
    }

    /// The checks due at `now` and not under way, in plan order; they are marked under way.
    public mutating func takeDue(now: ContinuousClock.Instant) -> [(Key, Item)] {
        var due: [(Key, Item)] = []
        for i in entries.indices where !entries[i].inFlight && entries[i].due <= now {
            entries[i].inFlight = true
            due.append((entries[i].key, entries[i].item))
        }
        return due
    }

    /// A check of `key` ended; its next one is due at `next(item)`. Returns the target's current
    /// item (a reload may have changed its policy meanwhile), or nil when the target is no longer
    /// planned and its result must not be recorded.
    public mutating func finished(_ key: Key, next: (Item) -> ContinuousClock.Instant) -> Item? {
        guard let i = entries.firstIndex(where: { $0.key == key }) else { return nil }
        entries[i].inFlight = false
        entries[i].due = next(entries[i].item)
        return entries[i].item
    }

    /// The earliest due time among the checks not under way (nil: nothing to start).
    public var nextDue: ContinuousClock.Instant? {
        entries.lazy.filter { !$0.inFlight }.map(\.due).min()
    }
}
