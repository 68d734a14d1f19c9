#if canImport(Glibc)
import Glibc
#endif
import CPortcullis
import PortcullisCore

/// Why a table could not be created or opened.
public struct SharedMemoryRateTableError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// The instance's rate-limit counters: a fixed-size open-addressing hash table in a file mapped
/// `MAP_SHARED` by the master and every worker, updated only with 64-bit atomic
/// compare-and-swap. No lock exists, so a worker killed mid-update leaves nothing held: its
/// last CAS either happened or did not.
///
/// Layout: a 64-byte header (magic, version, slot count, counters), then `slots` slots of three
/// 64-bit words:
/// - `key`: the counter's ``RateLimitKey/hash`` (0 = never used);
/// - `state`: `[tag: 8 bits | algorithm state: 56 bits]`, the tag being the key hash's top byte;
/// - `expiry`: wall-clock µs after which the state is fresh again (only ever raised).
///
/// A key lives in one of the `probeLength` (8) slots after `hash % slots`. Insertion takes the
/// first never-used slot, else the first expired one, else evicts the slot that expires
/// soonest (its state is closest to fresh, so evicting it forgets the least; a hot key that is
/// being limited has the latest expiry and is the last to go), breaking ties (all keys of one
/// fixed window expire together) by the smallest state — the key that used the least of its
/// limit — and counts an eviction.
/// Insertion switches the key word by CAS, then replaces the state it saw before by CAS with
/// the new owner's fresh state. A state whose tag is not the key's own is also read as fresh
/// (a request racing the insertion), so the new owner does not inherit the previous owner's
/// count; only when that race meets a tag collision (1 in 256) does it, which errs on the
/// strict side.
///
/// Memory is fixed: the file is `64 + 24 × slots` bytes whatever the traffic.
public final class SharedMemoryRateTable: RateLimitStore, @unchecked Sendable {
    public static let probeLength = 8
    static let magic: UInt64 = 0x3142_4C54_4C52_4350  // "PCRLTLB1" little-endian
    static let version: UInt64 = 1
    static let headerWords = 8
    static let slotWords = 3

    enum Header: Int { case magic = 0, version, slots, evictions, insertions, storeFailures, degradedDecisions, used }

    public let path: String
    public let slots: Int
    private let base: UnsafeMutablePointer<UInt64>
    private let mappedBytes: Int

    /// Bytes of a table file with `slots` slots.
    public static func fileSize(slots: Int) -> Int { (headerWords + slots * slotWords) * 8 }

    /// The table's file in the gateway's runtime directory.
    public static func defaultPath(runtimeDirectory: String) -> String { runtimeDirectory + "/ratelimit.table" }

    /// Creates a fresh table (master, at start). The file is built under a temporary name and
    /// renamed into place, so a process still mapping an older table keeps a consistent one.
    public static func create(path: String, slots: Int) throws(SharedMemoryRateTableError) -> SharedMemoryRateTable {
        guard slots >= probeLength else { throw SharedMemoryRateTableError("a table needs at least \(probeLength) slots") }
        let size = fileSize(slots: slots)
        do {
            let base = try MappedWords.create(path: path, bytes: size) { words in
                words[Header.version.rawValue] = version
                words[Header.slots.rawValue] = UInt64(slots)
                pc_atomic_store_u64(words, magic)  // last: a reader that sees the magic sees the rest
            }
            return SharedMemoryRateTable(path: path, base: base, size: size, slots: slots)
        } catch {
            throw SharedMemoryRateTableError(error.description)
        }
    }

    /// Maps the table the master created (workers).
    public static func open(path: String) throws(SharedMemoryRateTableError) -> SharedMemoryRateTable {
        let mapped: (base: UnsafeMutablePointer<UInt64>, bytes: Int)?
        do {
            mapped = try MappedWords.open(path: path, minimumBytes: headerWords * 8)
        } catch {
            throw SharedMemoryRateTableError(error.description)
        }
        guard let (words, size) = mapped else { throw SharedMemoryRateTableError("\(path) is not a rate-limit table (too small)") }
        let slots = words[Header.slots.rawValue] == 0 ? (size / 8 - headerWords) / slotWords : Int(words[Header.slots.rawValue])
        let table = SharedMemoryRateTable(path: path, base: words, size: size, slots: slots)
        guard pc_atomic_load_u64(table.base) == magic, table.base[Header.version.rawValue] == version,
              fileSize(slots: table.slots) == size else {
            throw SharedMemoryRateTableError("\(path) is not a version \(version) rate-limit table")
        }
        return table
    }

    private init(path: String, base: UnsafeMutablePointer<UInt64>, size: Int, slots: Int) {
        self.path = path
        self.base = base
        self.mappedBytes = size
        self.slots = slots
    }

    deinit { munmap(base, mappedBytes) }

    // MARK: counters

    /// Counters kept in the segment header (shared by every process).
    public struct Stats: Sendable, Equatable {
        /// Live (unexpired) counters pushed out to make room: each one forgot a key's count.
        public var evictions: UInt64
        /// Keys placed in a never-used or expired slot, or by eviction.
        public var insertions: UInt64
        /// Failed calls to the remote (Redis) store, counted by every worker.
        public var storeFailures: UInt64
        /// Decisions made by a failure policy while Redis was unavailable.
        public var degradedDecisions: UInt64
        /// Slots that ever held a key (slots never return to empty): the table's fill.
        public var used: UInt64 = 0
    }

    public var stats: Stats {
        Stats(evictions: pc_atomic_load_u64(header(.evictions)), insertions: pc_atomic_load_u64(header(.insertions)),
              storeFailures: pc_atomic_load_u64(header(.storeFailures)),
              degradedDecisions: pc_atomic_load_u64(header(.degradedDecisions)), used: pc_atomic_load_u64(header(.used)))
    }

    /// An observer that counts in this segment, sends log lines to `log` and reports degraded
    /// mode to `degradedChanged`.
    public func observer(log: @escaping @Sendable (String) -> Void,
                         degradedChanged: @escaping @Sendable (Bool) -> Void = { _ in }) -> RateLimitObserver {
        RateLimitObserver(log: log,
                          storeFailure: { [self] in _ = pc_atomic_add_u64(header(.storeFailures), 1) },
                          degradedDecision: { [self] in _ = pc_atomic_add_u64(header(.degradedDecisions), 1) },
                          degradedChanged: degradedChanged)
    }

    private func header(_ h: Header) -> UnsafeMutablePointer<UInt64> { base + h.rawValue }
    private func keyWord(_ slot: Int) -> UnsafeMutablePointer<UInt64> { base + Self.headerWords + slot * Self.slotWords }
    private func stateWord(_ slot: Int) -> UnsafeMutablePointer<UInt64> { keyWord(slot) + 1 }
    private func expiryWord(_ slot: Int) -> UnsafeMutablePointer<UInt64> { keyWord(slot) + 2 }

    // MARK: decisions

    static let tagMask: UInt64 = ~RateLimitState.payloadMask

    /// The slot holding `hash`, or nil (and where to insert it).
    private struct Probe {
        var found: Int?
        var candidate: Int?
        var candidateKey: UInt64 = 0
        var candidateIsLive = false
    }

    private func probe(_ hash: UInt64, now: Int64) -> Probe {
        var result = Probe()
        var victimExpiry = UInt64.max
        var victimPayload = UInt64.max
        var expired: (slot: Int, key: UInt64)?
        var victim: (slot: Int, key: UInt64)?
        var slot = Int(hash % UInt64(slots))
        for _ in 0..<Self.probeLength {
            let k = pc_atomic_load_u64(keyWord(slot))
            if k == hash { result.found = slot; return result }
            if k == 0 {
                // Slots never return to empty, so the key cannot be further along.
                result.candidate = slot
                return result
            }
            let e = pc_atomic_load_u64(expiryWord(slot))
            if e <= UInt64(max(0, now)) {
                if expired == nil { expired = (slot, k) }
            } else {
                // Soonest expiry first; among equals (every key of a fixed window ends with the
                // window) the smallest state, i.e. the key that used the least of its limit.
                let payload = pc_atomic_load_u64(stateWord(slot)) & RateLimitState.payloadMask
                if e < victimExpiry || (e == victimExpiry && payload < victimPayload) {
                    victimExpiry = e
                    victimPayload = payload
                    victim = (slot, k)
                }
            }
            slot += 1
            if slot == slots { slot = 0 }
        }
        if let expired {
            result.candidate = expired.slot
            result.candidateKey = expired.key
        } else if let victim {
            result.candidate = victim.slot
            result.candidateKey = victim.key
            result.candidateIsLive = true
        }
        return result
    }

    /// Raises the slot's expiry to at least `expiry` (before the state CAS, so a reader that sees
    /// the new state also sees an expiry that covers it).
    private func raiseExpiry(_ slot: Int, to expiry: Int64) {
        let p = expiryWord(slot)
        let target = UInt64(max(0, expiry))
        var current = pc_atomic_load_u64(p)
        while current < target {
            if pc_atomic_cas_u64(p, current, target) != 0 { return }
            current = pc_atomic_load_u64(p)
        }
    }

    public func acquire(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64) throws(RateLimitStoreError) -> RateLimitDecision {
        let hash = key.hash
        let tag = hash & Self.tagMask
        // Each round either decides or loses a race to another writer that made progress;
        // the bound only guards against pathological livelock.
        for _ in 0..<1_000 {
            let p = probe(hash, now: now)
            if let slot = p.found {
                let sp = stateWord(slot)
                let s = pc_atomic_load_u64(sp)
                let payload = s & Self.tagMask == tag ? s & RateLimitState.payloadMask : 0
                let (decision, newPayload) = RateLimitAlgorithms.decide(params, state: payload, now: now, cost: cost)
                if !decision.allowed { return decision }
                raiseExpiry(slot, to: now + decision.resetAfterMicros)
                if pc_atomic_cas_u64(sp, s, tag | newPayload) != 0 { return decision }
                continue
            }
            guard let slot = p.candidate else { continue }
            // The state as the previous owner left it, read before the key changes hands.
            let previous = pc_atomic_load_u64(stateWord(slot))
            if pc_atomic_cas_u64(keyWord(slot), p.candidateKey, hash) != 0 {
                _ = pc_atomic_add_u64(header(.insertions), 1)
                if p.candidateIsLive { _ = pc_atomic_add_u64(header(.evictions), 1) }
                if p.candidateKey == 0 { _ = pc_atomic_add_u64(header(.used), 1) }
                // The new owner starts from a fresh state even if its tag equals the old one's.
                // If the CAS fails, a racing request of this key (or a late write of the old
                // owner) got there first, and the next round decides from what it left.
                let (decision, newPayload) = RateLimitAlgorithms.decide(params, state: 0, now: now, cost: cost)
                if !decision.allowed { return decision }
                raiseExpiry(slot, to: now + decision.resetAfterMicros)
                if pc_atomic_cas_u64(stateWord(slot), previous, tag | newPayload) != 0 { return decision }
            }
            // Otherwise the next probe finds the key (inserted by a racing request of the same
            // key) or another candidate.
        }
        throw RateLimitStoreError("shared-memory table: no progress after 1000 attempts")
    }

    public func refund(_ key: RateLimitKey, params: RateLimitParams, now: Int64, cost: Int64) throws(RateLimitStoreError) {
        let tag = key.hash & Self.tagMask
        for _ in 0..<1_000 {
            guard let slot = probe(key.hash, now: now).found else { return }
            let sp = stateWord(slot)
            let s = pc_atomic_load_u64(sp)
            guard s & Self.tagMask == tag else { return }
            let refunded = RateLimitAlgorithms.refund(params, state: s & RateLimitState.payloadMask, now: now, cost: cost)
            if refunded == s & RateLimitState.payloadMask || pc_atomic_cas_u64(sp, s, tag | refunded) != 0 { return }
        }
    }
}
