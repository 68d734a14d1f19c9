/// A loop timer: an action at a deadline. Rescheduling moves the same object (no allocation);
/// a cancelled or rescheduled timer's old heap entries are skipped when they surface.
public final class LoopTimer {
    let action: () -> Void
    fileprivate(set) var deadline: UInt64 = 0
    /// Bumped on every schedule and cancel; a heap entry with another version is stale.
    fileprivate var version: UInt64 = 0
    public fileprivate(set) var isScheduled = false

    public init(_ action: @escaping () -> Void) { self.action = action }
}

/// A binary min-heap of timers by deadline (monotonic nanoseconds). Pure: the loop owns the
/// clock and asks for what is due.
///
/// Entries hold their timer strongly, so a stale entry (of a timer since rescheduled or
/// cancelled, maybe released by its owner) is always safe to look at. Stale entries are
/// dropped when they surface, and the heap is rebuilt from the live ones when they outnumber
/// them, so a timer rescheduled on every request does not grow the heap.
public struct TimerQueue {
    private struct Entry {
        let deadline: UInt64
        let version: UInt64
        let timer: LoopTimer
        var isLive: Bool { version == timer.version && timer.isScheduled }
    }
    private var heap: [Entry] = []
    private var liveCount = 0

    public init() {}

    public var isEmpty: Bool { liveCount == 0 }

    /// Entries in the heap, stale ones included (for tests).
    var storedEntries: Int { heap.count }

    /// (Re)schedules `timer` for `deadline`.
    public mutating func schedule(_ timer: LoopTimer, at deadline: UInt64) {
        if !timer.isScheduled { liveCount += 1 }
        timer.version &+= 1
        timer.deadline = deadline
        timer.isScheduled = true
        push(Entry(deadline: deadline, version: timer.version, timer: timer))
        if heap.count > 64 && heap.count > 2 * liveCount { compact() }
    }

    public mutating func cancel(_ timer: LoopTimer) {
        guard timer.isScheduled else { return }
        timer.version &+= 1
        timer.isScheduled = false
        liveCount -= 1
    }

    /// Keeps only live entries and restores the heap order.
    private mutating func compact() {
        heap.removeAll { !$0.isLive }
        heap.sort { $0.deadline < $1.deadline }  // a sorted array is a valid min-heap
    }

    /// The earliest live deadline, dropping stale entries on the way.
    public mutating func nextDeadline() -> UInt64? {
        while let top = heap.first {
            if top.isLive { return top.deadline }
            pop()
        }
        return nil
    }

    /// Removes and returns the timers due at `now`, earliest first.
    public mutating func popDue(now: UInt64) -> [LoopTimer] {
        var due: [LoopTimer] = []
        while let deadline = nextDeadline(), deadline <= now {
            let timer = heap[0].timer
            pop()
            timer.isScheduled = false
            timer.version &+= 1
            liveCount -= 1
            due.append(timer)
        }
        return due
    }

    private mutating func push(_ entry: Entry) {
        heap.append(entry)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[i].deadline < heap[parent].deadline else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    private mutating func pop() {
        let last = heap.removeLast()
        guard !heap.isEmpty else { return }
        heap[0] = last
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < heap.count && heap[l].deadline < heap[m].deadline { m = l }
            if r < heap.count && heap[r].deadline < heap[m].deadline { m = r }
            if m == i { break }
            heap.swapAt(i, m)
            i = m
        }
    }
}
