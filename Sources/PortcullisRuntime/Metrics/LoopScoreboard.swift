import CPortcullis
import PortcullisCore

/// One loop's requests in flight, oldest first, mirrored into the loop's scoreboard entry of
/// the metrics file (requests in flight, route and start of the oldest) and the worker's
/// in-flight gauge. The list runs through the connections themselves (a connection serves one
/// request at a time), so starting and ending a request only relinks two pointers and stores
/// three words.
final class LoopScoreboard {
    private let loop: Int
    private var oldest: FastCGIConnection?
    private var newest: FastCGIConnection?
    private var count: UInt64 = 0

    init(loop: Int) { self.loop = loop }

    /// A request started on `connection` (`metrics`: the worker's block, as the request's
    /// configuration sees it).
    func started(_ connection: FastCGIConnection, metrics: WorkerMetrics, at nanos: UInt64) {
        connection.board = metrics
        connection.boardSince = nanos
        connection.boardRoute = UInt64(MetricsLayout.unmatchedRoute + 1)
        connection.older = newest
        connection.newer = nil
        if let newest { newest.newer = connection } else { oldest = connection }
        newest = connection
        count += 1
        pc_relaxed_add_u64(metrics.inFlight, 1)
        publish(metrics)
    }

    /// The request on `connection` was routed to route slot `slot`.
    func routed(_ connection: FastCGIConnection, slot: Int) {
        guard let metrics = connection.board else { return }
        connection.boardRoute = UInt64(slot + 1)
        if oldest === connection { publish(metrics) }
    }

    func ended(_ connection: FastCGIConnection) {
        guard let metrics = connection.board else { return }
        connection.board = nil
        if let older = connection.older { older.newer = connection.newer } else { oldest = connection.newer }
        if let newer = connection.newer { newer.older = connection.older } else { newest = connection.older }
        connection.older = nil
        connection.newer = nil
        count -= 1
        pc_relaxed_sub_u64(metrics.inFlight, 1)
        publish(metrics)
    }

    private func publish(_ metrics: WorkerMetrics) {
        guard let entry = metrics.scoreboard(loop: loop) else { return }
        pc_relaxed_store_u64(entry, count)
        pc_relaxed_store_u64(entry + 2, oldest?.boardSince ?? 0)
        pc_relaxed_store_u64(entry + 1, oldest?.boardRoute ?? 0)
    }
}
