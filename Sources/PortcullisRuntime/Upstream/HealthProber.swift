import CCurl
import CPortcullis
import Foundation
import PortcullisCore
import Synchronization

/// The instance's one active health checker: a thread (in the master) that sends each
/// configured target its check request when due and records the result in the target's health
/// word in the shared upstream state, where every worker's balancer reads it. The checks run
/// concurrently on libcurl's multi interface (non-blocking sockets, one poll), each bounded by
/// its own `timeout_ms`, so a target that never answers delays no other target's checks; the
/// master's own loop never waits on a target.
public final class HealthProber: @unchecked Sendable {
    struct Check {
        let policy: HealthCheckPolicy
        let slot: UpstreamStateTable.Slot
    }

    /// A check under way: what its easy handle belongs to, and the header list it holds.
    private struct Running {
        let key: ProbeSchedule<Check>.Key
        let headers: UnsafeMutablePointer<curl_slist>?
    }

    private let table: UpstreamStateTable
    private let schedule = Mutex(ProbeSchedule<Check>())
    private let stopping = Atomic<Bool>(false)
    private var thread: Thread?

    public init(table: UpstreamStateTable) { self.table = table }

    /// Takes the upstreams of a (re)loaded configuration. A target whose upstream and URL did not
    /// change keeps its health and its next check time; a target with no health check (any
    /// more) is healthy.
    public func configure(_ config: GatewayConfig) {
        var checks: [(ProbeSchedule<Check>.Key, Check)] = []
        for (name, upstream) in config.upstreams.sorted(by: { $0.key < $1.key }) {
            for target in upstream.targets {
                guard let slot = table.slot(upstream: name, target: target) else { continue }
                guard let policy = upstream.healthCheck else {
                    slot.health.update { _ in 0 }
                    continue
                }
                checks.append((.init(upstream: name, target: target), Check(policy: policy, slot: slot)))
            }
        }
        schedule.withLock { $0.replace(with: checks, now: .now) }
    }

    public func start() {
        let thread = Thread { [self] in run() }
        thread.name = "health-prober"
        thread.stackSize = 1 << 20
        self.thread = thread
        thread.start()
    }

    public func stop() { stopping.store(true, ordering: .relaxed) }

    private func run() {
        let multi = curl_multi_init()!
        var running: [UnsafeMutableRawPointer: Running] = [:]
        defer {
            for (handle, check) in running { finish(multi, handle, check) }
            curl_multi_cleanup(multi)
        }
        while !stopping.load(ordering: .relaxed) {
            for (key, check) in schedule.withLock({ $0.takeDue(now: .now) }) {
                let (handle, headers) = request(key, check)
                running[handle] = Running(key: key, headers: headers)
                curl_multi_add_handle(multi, handle)
            }
            var active: Int32 = 0
            curl_multi_perform(multi, &active)
            var queued: Int32 = 0
            while let message = curl_multi_info_read(multi, &queued) {
                guard message.pointee.msg == CURLMSG_DONE, let handle = message.pointee.easy_handle,
                      let check = running.removeValue(forKey: handle) else { continue }
                let code = message.pointee.data.result
                let status = Int(pc_curl_response_code(handle))
                finish(multi, handle, check)
                record(check.key, code: code, status: status)
            }
            // Sleeps until a socket is ready, curl's next timeout, or the next check is due;
            // at most 100 ms so that `stop` is seen.
            var waitMs: Int32 = 100
            if let due = schedule.withLock({ $0.nextDue }) {
                let left = ContinuousClock.now.duration(to: due).components
                waitMs = Int32(max(0, min(100, left.seconds * 1000 + left.attoseconds / 1_000_000_000_000_000)))
            }
            curl_multi_poll(multi, nil, 0, waitMs, nil)
        }
    }

    /// The easy handle of one check request (the header list is freed when the check ends).
    private func request(_ key: ProbeSchedule<Check>.Key, _ check: Check) -> (UnsafeMutableRawPointer, UnsafeMutablePointer<curl_slist>?) {
        let h = curl_easy_init()!
        pc_curl_set_long(h, CURLOPT_NOSIGNAL, 1)
        pc_curl_set_str(h, CURLOPT_PROXY, "")
        pc_curl_set_str(h, CURLOPT_PROTOCOLS_STR, "http,https")
        pc_curl_set_str(h, CURLOPT_URL, key.target + check.policy.path)
        pc_curl_set_long(h, CURLOPT_TIMEOUT_MS, check.policy.timeoutMs)
        pc_curl_set_long(h, CURLOPT_CONNECTTIMEOUT_MS, check.policy.timeoutMs)
        pc_curl_set_long(h, CURLOPT_FORBID_REUSE, 1)
        switch check.policy.method {
        case "HEAD": pc_curl_set_long(h, CURLOPT_NOBODY, 1)
        case "GET": break
        default: pc_curl_set_str(h, CURLOPT_CUSTOMREQUEST, check.policy.method)
        }
        pc_curl_set_write_cb(h, { _, size, count, _ in size * count }, nil)
        var list: UnsafeMutablePointer<curl_slist>?
        list = curl_slist_append(list, "User-Agent: portcullis-health-check")
        if let host = check.policy.host { list = curl_slist_append(list, "Host: " + host) }
        pc_curl_set_slist(h, CURLOPT_HTTPHEADER, list)
        return (h, list)
    }

    private func finish(_ multi: UnsafeMutableRawPointer, _ handle: UnsafeMutableRawPointer, _ check: Running) {
        curl_multi_remove_handle(multi, handle)
        curl_easy_cleanup(handle)
        curl_slist_free_all(check.headers)
    }

    /// One check's result: success when the status is an expected one. A target a reload removed
    /// meanwhile is not recorded; the next check is due `interval_ms` after this one ended.
    private func record(_ key: ProbeSchedule<Check>.Key, code: CURLcode, status: Int) {
        let ended = ContinuousClock.now
        guard let check = schedule.withLock({ $0.finished(key, next: { ended + .milliseconds($0.policy.intervalMs) }) }) else { return }
        let success = code == CURLE_OK && check.policy.expectedStatuses.contains(status)
        let detail = code == CURLE_OK ? "status \(status)" : String(cString: curl_easy_strerror(code))
        let (before, after) = HealthWord.record(check.slot.health, success: success, policy: check.policy)
        if before.healthy != after.healthy {
            EventLog.emit(after.healthy ? "target_healthy" : "target_unhealthy",
                          [("upstream", .string(key.upstream)), ("target", .string(key.target)), ("detail", .string(detail))])
        }
    }
}
