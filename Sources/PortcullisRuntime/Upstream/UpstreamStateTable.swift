#if canImport(Glibc)
import Glibc
#endif
import CPortcullis
import PortcullisCore

/// A word of the shared upstream state, updated with the shared-memory atomics.
public struct SharedWord: AtomicWord {
    let pointer: UnsafeMutablePointer<UInt64>
    @inline(__always) public func load() -> UInt64 { pc_atomic_load_u64(pointer) }
    @inline(__always) public func compareExchange(expected: UInt64, desired: UInt64) -> Bool {
        pc_atomic_cas_u64(pointer, expected, desired) != 0
    }
    @inline(__always) @discardableResult public func add(_ delta: UInt64) -> UInt64 { pc_atomic_add_u64(pointer, delta) }
}

/// The instance's upstream state: per target its breaker, health and failure window, per
/// upstream its retry budget, and for both the requests in flight. One file in the runtime
/// directory (`upstreams.state`), created by the master like the rate table and mapped
/// `MAP_SHARED` by every worker and the master's health prober; updated with atomics only.
///
/// Slots are keyed by a hash of the upstream name and target URL, found by linear probing, so
/// a target keeps its state across reloads as long as its upstream and URL do not change.
///
/// In-flight counts are kept per worker column (a worker claims one at start by writing its
/// pid into the owner list): a worker killed mid-request leaves counts behind that the master
/// clears when it reaps it (`release`), so the bulkhead never shrinks for good. Reading a
/// count sums the columns in use.
///
/// Layout (64-bit words): header 16 · owners `columns` · slots `slots × 8`
/// (key, breaker, health, window, budget, 3 spare) · in flight `slots × columns`.
public final class UpstreamStateTable: @unchecked Sendable {
    static let magic: UInt64 = 0x3154_5355_5043_5043  // "PCPCUST1"
    static let version: UInt64 = 1
    static let headerWords = 16
    static let slotWords = 8
    public static let defaultSlots = 512
    public static let columns = 64

    enum Header: Int { case magic = 0, version, slots, columns, epochNanos, usedColumns }
    enum Word: Int { case key = 0, breaker, health, window, budget }

    public let path: String
    public let slots: Int
    let columns: Int
    private let base: UnsafeMutablePointer<UInt64>
    private let mappedBytes: Int

    public static func defaultPath(runtimeDirectory: String) -> String { runtimeDirectory + "/upstreams.state" }
    static func fileSize(slots: Int, columns: Int) -> Int { (headerWords + columns + slots * slotWords + slots * columns) * 8 }

    /// Creates the file (master, at start): built under a temporary name and renamed into place.
    public static func create(path: String, slots: Int = defaultSlots) throws -> UpstreamStateTable {
        let tmp = path + ".tmp.\(getpid())"
        let fd = Glibc.open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw RuntimeError("cannot create \(tmp): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let size = fileSize(slots: slots, columns: columns)
        guard ftruncate(fd, off_t(size)) == 0 else {
            unlink(tmp)
            throw RuntimeError("cannot size \(tmp): \(String(cString: strerror(errno)))")
        }
        let table = try map(fd: fd, size: size, path: path, slots: slots, columns: columns)
        table.base[Header.version.rawValue] = version
        table.base[Header.slots.rawValue] = UInt64(slots)
        table.base[Header.columns.rawValue] = UInt64(columns)
        table.base[Header.epochNanos.rawValue] = EventLoop.monotonicNanos()
        pc_atomic_store_u64(table.base, magic)
        guard rename(tmp, path) == 0 else {
            unlink(tmp)
            throw RuntimeError("cannot rename \(tmp) to \(path): \(String(cString: strerror(errno)))")
        }
        return table
    }

    /// Maps the file the master created (workers, `status`).
    public static func open(path: String) throws -> UpstreamStateTable {
        let fd = Glibc.open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw RuntimeError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_size >= headerWords * 8 else { throw RuntimeError("\(path) is not an upstream state file") }
        guard let raw = mmap(nil, headerWords * 8, PROT_READ, MAP_SHARED, fd, 0), raw != MAP_FAILED else {
            throw RuntimeError("cannot map \(path): \(String(cString: strerror(errno)))")
        }
        let header = raw.bindMemory(to: UInt64.self, capacity: headerWords)
        let ok = pc_atomic_load_u64(header) == magic && header[Header.version.rawValue] == version
        let slots = Int(header[Header.slots.rawValue]), columns = Int(header[Header.columns.rawValue])
        munmap(raw, headerWords * 8)
        guard ok, fileSize(slots: slots, columns: columns) == Int(st.st_size) else {
            throw RuntimeError("\(path) is not a version \(version) upstream state file")
        }
        return try map(fd: fd, size: Int(st.st_size), path: path, slots: slots, columns: columns)
    }

    /// A table in this process's memory only: what a worker uses when the file cannot be
    /// mapped (run by hand), so the same code runs, with state per process.
    public static func local(slots: Int = 64) -> UpstreamStateTable {
        let size = fileSize(slots: slots, columns: columns)
        let raw = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        let table = UpstreamStateTable(path: "", base: raw.bindMemory(to: UInt64.self, capacity: size / 8), size: size,
                                       slots: slots, columns: columns)
        table.base[Header.slots.rawValue] = UInt64(slots)
        table.base[Header.columns.rawValue] = UInt64(columns)
        table.base[Header.epochNanos.rawValue] = EventLoop.monotonicNanos()
        return table
    }

    private static func map(fd: Int32, size: Int, path: String, slots: Int, columns: Int) throws -> UpstreamStateTable {
        guard let raw = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), raw != MAP_FAILED else {
            throw RuntimeError("cannot map \(path): \(String(cString: strerror(errno)))")
        }
        return UpstreamStateTable(path: path, base: raw.bindMemory(to: UInt64.self, capacity: size / 8), size: size,
                                  slots: slots, columns: columns)
    }

    private init(path: String, base: UnsafeMutablePointer<UInt64>, size: Int, slots: Int, columns: Int) {
        self.path = path
        self.base = base
        self.mappedBytes = size
        self.slots = slots
        self.columns = columns
    }

    deinit { munmap(base, mappedBytes) }

    // MARK: clock

    /// Milliseconds on the table's clock (monotonic, the same in every process of the machine).
    @inline(__always)
    public func nowMs(_ monotonicNanos: UInt64 = EventLoop.monotonicNanos()) -> UInt64 {
        (monotonicNanos &- base[Header.epochNanos.rawValue]) / 1_000_000
    }

    // MARK: slots

    /// The slot of a target (or, with `target` nil, of the upstream itself), taken if new (unless
    /// `create` is false: readers such as `status`); nil when the table is full.
    public func slot(upstream: String, target: String?, create: Bool = true) -> Slot? {
        let key = StableHash.hash((target.map { "t\u{0}" + upstream + "\u{0}" + $0 } ?? "u\u{0}" + upstream))
        
        var index = Int(key % UInt64(slots))
        for _ in 0..<slots {
            let word = keyWord(index)
            let found = pc_atomic_load_u64(word)
            if found == key { return makeSlot(index) }
            if found == 0 && !create { return nil }
            if found == 0 && pc_atomic_cas_u64(word, 0, key) != 0 { return makeSlot(index) }
            if pc_atomic_load_u64(word) == key { return makeSlot(index) }
            index = (index + 1) % slots
        }
        return nil
    }

    private func keyWord(_ index: Int) -> UnsafeMutablePointer<UInt64> { base + Self.headerWords + columns + index * Self.slotWords }

    private func makeSlot(_ index: Int) -> Slot {
        let words = keyWord(index)
        let inFlight = base + Self.headerWords + columns + slots * Self.slotWords + index * columns
        return Slot(words: words, inFlight: inFlight, table: self)
    }

    /// One target's (or upstream's) words.
    public struct Slot: @unchecked Sendable {
        let words: UnsafeMutablePointer<UInt64>
        let inFlight: UnsafeMutablePointer<UInt64>
        unowned(unsafe) let table: UpstreamStateTable

        public var breaker: SharedWord { SharedWord(pointer: words + Word.breaker.rawValue) }
        public var health: SharedWord { SharedWord(pointer: words + Word.health.rawValue) }
        public var window: SharedWord { SharedWord(pointer: words + Word.window.rawValue) }
        public var budget: SharedWord { SharedWord(pointer: words + Word.budget.rawValue) }

        /// This process's in-flight counter of the slot.
        @inline(__always) public func inFlightCell(column: Int) -> SharedWord { SharedWord(pointer: inFlight + column) }

        /// Requests in flight across the instance.
        public var inFlightTotal: UInt64 {
            var sum: UInt64 = 0
            for c in 0..<table.usedColumns { sum &+= pc_atomic_load_u64(inFlight + c) }
            // A decrement racing a read can make the wrapped sum look huge for an instant.
            return sum > UInt64(Int32.max) ? 0 : sum
        }
    }

    /// A target's live state (a target without a slot yet is healthy, closed, idle).
    public func state(upstream: String, target: String) -> MetricsSnapshot.TargetState {
        guard let slot = slot(upstream: upstream, target: target, create: false) else {
            return MetricsSnapshot.TargetState(health: HealthWord(raw: 0), breaker: BreakerWord(raw: 0), inFlight: 0)
        }
        return MetricsSnapshot.TargetState(health: HealthWord(raw: slot.health.load()), breaker: BreakerWord(raw: slot.breaker.load()),
                                           inFlight: slot.inFlightTotal)
    }

    /// What `status` shows of a target.
    public func report(upstream: String, target: String) -> JSONObject {
        let state = state(upstream: upstream, target: target)
        let breaker = state.breaker
        var object = JSONObject([("target", .string(target)), ("health", .string(state.health.healthy ? "healthy" : "unhealthy")),
                                 ("breaker", .string(breaker.state.name)), ("in_flight", .int(Int64(state.inFlight)))])
        object["consecutive_failures"] = .int(Int64(breaker.state == .closed ? breaker.failures : 0))
        if breaker.state != .closed {
            let now = nowMs()
            object["open_for_ms"] = .int(Int64(breaker.until > now ? breaker.until - now : 0))
        }
        return object
    }

    // MARK: worker columns

    var usedColumns: Int { Int(pc_atomic_load_u64(base + Header.usedColumns.rawValue)) }

    /// Claims an in-flight column for process `pid` (a free one, or one whose owner is gone,
    /// whose counts are cleared first). Workers beyond the columns share the last one, whose
    /// counts a crash can leave behind.
    public func claimColumn(pid: pid_t) -> Int {
        let owners = base + Self.headerWords
        for c in 0..<(columns - 1) {
            let owner = pc_atomic_load_u64(owners + c)
            if owner == UInt64(pid) { return c }
            if owner != 0 && kill(pid_t(owner), 0) == 0 { continue }
            if owner != 0 { clear(column: c) }
            if pc_atomic_cas_u64(owners + c, owner, UInt64(pid)) != 0 {
                raiseUsed(c + 1)
                return c
            }
        }
        raiseUsed(columns)
        return columns - 1
    }

    /// Forgets process `pid`'s in-flight counts (the master, when it reaped that worker).
    public func release(pid: pid_t) {
        let owners = base + Self.headerWords
        for c in 0..<(columns - 1) where pc_atomic_load_u64(owners + c) == UInt64(pid) {
            clear(column: c)
            _ = pc_atomic_cas_u64(owners + c, UInt64(pid), 0)
        }
    }

    private func clear(column c: Int) {
        let inFlight = base + Self.headerWords + columns + slots * Self.slotWords
        for s in 0..<slots { pc_atomic_store_u64(inFlight + s * columns + c, 0) }
    }

    private func raiseUsed(_ n: Int) {
        let word = base + Header.usedColumns.rawValue
        while true {
            let used = pc_atomic_load_u64(word)
            if used >= UInt64(n) || pc_atomic_cas_u64(word, used, UInt64(n)) != 0 { return }
        }
    }
}
