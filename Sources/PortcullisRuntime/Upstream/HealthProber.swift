import CCurl
import CPortcullis
import Foundation
import PortcullisCore
import Synchronization

/// The instance's one active health checker: a thread (in the master) that sends each
/// configured target its check request when due and records the result in the target's health
/// word in the shared upstream state, where every worker's balancer reads it. Probes run one
/// after the other with libcurl's blocking API, each bounded by its `timeout_ms`, on this
/// thread only: the master's own loop never waits on a target.
public final class HealthProber: @unchecked Sendable {
    struct Check {
        let upstream: String
        let target: String
        let policy: HealthCheckPolicy
        let slot: UpstreamStateTable.Slot
        var due: ContinuousClock.Instant
    }

    private let table: UpstreamStateTable
    private let plan = Mutex<[Check]>([])
    private let stopping = Atomic<Bool>(false)
    private var thread: Thread?

    public init(table: UpstreamStateTable) { self.table = table }

    /// Takes the upstreams of a (re)loaded configuration. A target whose upstream and URL did not
    /// change keeps its health and its next check time; a target with no health check (any
    /// more) is healthy.
    public func configure(_ config: GatewayConfig) {
        var checks: [Check] = []
        for (name, upstream) in config.upstreams.sorted(by: { $0.key < $1.key }) {
            for target in upstream.targets {
                guard let slot = table.slot(upstream: name, target: target) else { continue }
                guard let policy = upstream.healthCheck else {
                    slot.health.update { _ in 0 }
                    continue
                }
                checks.append(Check(upstream: name, target: target, policy: policy, slot: slot, due: .now))
            }
        }
        plan.withLock { current in
            for i in checks.indices {
                if let old = current.first(where: { $0.upstream == checks[i].upstream && $0.target == checks[i].target }) {
                    checks[i].due = old.due
                }
            }
            current = checks
        }
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
        let handle = curl_easy_init()!
        defer { curl_easy_cleanup(handle) }
        while !stopping.load(ordering: .relaxed) {
            let now = ContinuousClock.now
            let due = plan.withLock { $0.filter { $0.due <= now } }
            for check in due {
                if stopping.load(ordering: .relaxed) { return }
                let (success, detail) = probe(handle, check)
                let (before, after) = HealthWord.record(check.slot.health, success: success, policy: check.policy)
                if before.healthy != after.healthy {
                    EventLog.emit(after.healthy ? "target_healthy" : "target_unhealthy",
                                  [("upstream", .string(check.upstream)), ("target", .string(check.target)), ("detail", .string(detail))])
                }
                let next = ContinuousClock.now + .milliseconds(check.policy.intervalMs)
                plan.withLock { current in
                    if let i = current.firstIndex(where: { $0.upstream == check.upstream && $0.target == check.target }) {
                        current[i].due = next
                    }
                }
            }
            usleep(20_000)
        }
    }

    /// One check request: success when the status is an expected one.
    private func probe(_ h: UnsafeMutableRawPointer, _ check: Check) -> (Bool, String) {
        curl_easy_reset(h)
        pc_curl_set_long(h, CURLOPT_NOSIGNAL, 1)
        pc_curl_set_str(h, CURLOPT_PROXY, "")
        pc_curl_set_str(h, CURLOPT_PROTOCOLS_STR, "http,https")
        pc_curl_set_str(h, CURLOPT_URL, check.target + check.policy.path)
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
        defer { curl_slist_free_all(list) }
        let code = curl_easy_perform(h)
        guard code == CURLE_OK else { return (false, String(cString: curl_easy_strerror(code))) }
        let status = pc_curl_response_code(h)
        return (check.policy.expectedStatuses.contains(Int(status)), "status \(status)")
    }
}
