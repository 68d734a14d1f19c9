import PortcullisCore
import PortcullisRuntime

/// What the master does with a worker after reading its slot of the worker table: the pure
/// decision, apart from the signals and spawns that carry it out.
public struct WorkerSupervision: Sendable, Equatable {
    /// A heartbeat older than this, or a loop busy in one batch longer than this, means the
    /// worker no longer serves (`server.hard_timeout_seconds`).
    public var hardTimeoutMs: UInt64
    /// `server.recycle_after_requests`.
    public var recycleAfterRequests: UInt64?
    /// `server.recycle_above_rss_mb`, in bytes.
    public var recycleAboveBytes: Int64?

    public init(settings: ServerSettings) {
        hardTimeoutMs = UInt64(settings.hardTimeoutSeconds) * 1000
        recycleAfterRequests = settings.recycleAfterRequests.map { UInt64($0) }
        recycleAboveBytes = settings.recycleAboveRSSMegabytes.map { Int64($0) << 20 }
    }

    public enum Verdict: Sendable, Equatable {
        case healthy
        /// Killed and replaced at once: it cannot serve.
        case unresponsive(heartbeatAgeMs: UInt64)
        case stuck(busyMs: UInt64)
        /// Retired seamlessly once its replacement is ready.
        case recycleAfterRequests(UInt64)
        case recycleAboveMemory(Int64)
    }

    /// `entry` is the worker's slot (nil: it has not written one yet), `rssBytes` its resident
    /// memory when known.
    public func judge(_ entry: WorkerTable.Entry, rssBytes: Int64?, now: UInt64) -> Verdict {
        if now > entry.heartbeatMs && now - entry.heartbeatMs > hardTimeoutMs {
            return .unresponsive(heartbeatAgeMs: now - entry.heartbeatMs)
        }
        // A second more than the worker itself waits, so its log of the stuck request comes first.
        if entry.busySinceMs != 0, now > entry.busySinceMs, now - entry.busySinceMs > hardTimeoutMs + 1000 {
            return .stuck(busyMs: now - entry.busySinceMs)
        }
        if let limit = recycleAfterRequests, entry.requests >= limit { return .recycleAfterRequests(entry.requests) }
        if let limit = recycleAboveBytes, let rss = rssBytes, rss > limit { return .recycleAboveMemory(rss) }
        return .healthy
    }
}
