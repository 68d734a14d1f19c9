#if canImport(Glibc)
import Glibc
#endif
import CPortcullis
import PortcullisCore

/// Liveness and load of every worker, in a file mapped `MAP_SHARED` by the master and the
/// workers (`runtime_dir/workers.table`). The master gives each worker a slot when it spawns
/// it; the worker's main thread writes its slot a few times a second (64-bit atomic stores
/// only, so a worker killed midway leaves nothing held), the master reads it to replace a
/// worker that stopped beating or is stuck in a request, to recycle workers, and for `status`.
///
/// Layout: a 64-byte header (magic, version, slot count), then slots of eight 64-bit words.
/// Times are `CLOCK_MONOTONIC` milliseconds (one clock for every process of the machine).
public final class WorkerTable: @unchecked Sendable {
    static let magic: UInt64 = 0x3142_4C54_4B52_4350  // "PCRKTLB1" little-endian
    static let version: UInt64 = 1
    static let headerWords = 8
    static let slotWords = 8

    enum Field: Int {
        /// The worker's pid (0: free).
        case pid = 0
        /// When its main thread last wrote the slot.
        case heartbeat
        /// Requests it answered.
        case requests
        /// Since when its longest-busy loop has been inside one batch of work (0: every loop
        /// is waiting for events).
        case busySince
        /// Loops that were inside a batch of work (not waiting for events) at the last beat.
        case busyLoops
    }

    /// Slots of a table: more than the largest pool, since retiring workers keep theirs.
    public static let defaultSlots = 1024

    public let slots: Int
    private let base: UnsafeMutablePointer<UInt64>

    /// The table's file in the gateway's runtime directory.
    public static func defaultPath(runtimeDirectory: String) -> String { runtimeDirectory + "/workers.table" }

    /// Creates a zeroed table (master, at start).
    public static func create(path: String, slots: Int = defaultSlots) throws(RuntimeError) -> WorkerTable {
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw RuntimeError("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard ftruncate(fd, off_t((headerWords + slots * slotWords) * 8)) == 0 else {
            throw RuntimeError("cannot size \(path): \(String(cString: strerror(errno)))")
        }
        let table = try map(fd: fd, slots: slots, path: path)
        table.base[2] = UInt64(slots)
        table.base[1] = version
        pc_atomic_store_u64(table.base, magic)
        return table
    }

    /// Maps the master's table (worker, `status`).
    public static func open(path: String) throws(RuntimeError) -> WorkerTable {
        let fd = Glibc.open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw RuntimeError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_size >= headerWords * 8 else { throw RuntimeError("\(path) is not a worker table") }
        let slots = (Int(st.st_size) / 8 - headerWords) / slotWords
        let table = try map(fd: fd, slots: slots, path: path)
        guard pc_atomic_load_u64(table.base) == magic, table.base[1] == version, table.base[2] == UInt64(slots) else {
            throw RuntimeError("\(path) is not a worker table of this version")
        }
        return table
    }

    private static func map(fd: Int32, slots: Int, path: String) throws(RuntimeError) -> WorkerTable {
        let size = (headerWords + slots * slotWords) * 8
        guard let raw = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), raw != MAP_FAILED else {
            throw RuntimeError("cannot map \(path): \(String(cString: strerror(errno)))")
        }
        return WorkerTable(base: raw.assumingMemoryBound(to: UInt64.self), slots: slots)
    }

    private init(base: UnsafeMutablePointer<UInt64>, slots: Int) {
        self.base = base
        self.slots = slots
    }

    private func word(_ slot: Int, _ field: Field) -> UnsafeMutablePointer<UInt64> {
        base + Self.headerWords + slot * Self.slotWords + field.rawValue
    }

    /// Milliseconds of `CLOCK_MONOTONIC`.
    public static func nowMs() -> UInt64 { EventLoop.monotonicNanos() / 1_000_000 }

    /// What one slot says.
    public struct Entry: Sendable, Equatable {
        public var pid: Int64
        public var heartbeatMs: UInt64
        public var requests: UInt64
        public var busySinceMs: UInt64
        public var busyLoops: UInt64 = 0
    }

    public func read(slot: Int) -> Entry? {
        guard slot >= 0, slot < slots else { return nil }
        return Entry(pid: Int64(pc_atomic_load_u64(word(slot, .pid))), heartbeatMs: pc_atomic_load_u64(word(slot, .heartbeat)),
                     requests: pc_atomic_load_u64(word(slot, .requests)), busySinceMs: pc_atomic_load_u64(word(slot, .busySince)),
                     busyLoops: pc_atomic_load_u64(word(slot, .busyLoops)))
    }

    /// Master, before spawning: the slot starts with a fresh heartbeat, so a worker is not
    /// judged before it had time to beat.
    public func claim(slot: Int, now: UInt64) {
        pc_atomic_store_u64(word(slot, .requests), 0)
        pc_atomic_store_u64(word(slot, .busySince), 0)
        pc_atomic_store_u64(word(slot, .busyLoops), 0)
        pc_atomic_store_u64(word(slot, .heartbeat), now)
        pc_atomic_store_u64(word(slot, .pid), 0)
    }

    /// Worker, a few times a second.
    public func beat(slot: Int, pid: Int32, now: UInt64, requests: UInt64, busySince: UInt64, busyLoops: UInt64 = 0) {
        guard slot >= 0, slot < slots else { return }
        pc_atomic_store_u64(word(slot, .pid), UInt64(pid))
        pc_atomic_store_u64(word(slot, .requests), requests)
        pc_atomic_store_u64(word(slot, .busySince), busySince)
        pc_atomic_store_u64(word(slot, .busyLoops), busyLoops)
        pc_atomic_store_u64(word(slot, .heartbeat), now)
    }
}
