import CPortcullis
import Foundation
import XCTest
import PortcullisCore
import PortcullisPlugins
@testable import PortcullisPool
@testable import PortcullisRuntime

/// Issue 11's pure decisions: supervision verdicts, scale targets, key expiry, the effective
/// configuration, and the bundle the disk reader records.
final class OperationsTests: XCTestCase {
    func policy(hard: Int = 10, requests: Int? = nil, rssMB: Int? = nil) -> WorkerSupervision {
        var settings = ServerSettings()
        settings.hardTimeoutSeconds = hard
        settings.recycleAfterRequests = requests
        settings.recycleAboveRSSMegabytes = rssMB
        return WorkerSupervision(settings: settings)
    }

    func entry(heartbeat: UInt64, requests: UInt64 = 0, busySince: UInt64 = 0) -> WorkerTable.Entry {
        WorkerTable.Entry(pid: 42, heartbeatMs: heartbeat, requests: requests, busySinceMs: busySince)
    }

    func testSupervisionVerdicts() {
        let p = policy(hard: 10, requests: 1000, rssMB: 100)
        let now: UInt64 = 1_000_000
        XCTAssertEqual(p.judge(entry(heartbeat: now - 200), rssBytes: 50 << 20, now: now), .healthy)
        XCTAssertEqual(p.judge(entry(heartbeat: now - 10_001), rssBytes: nil, now: now), .unresponsive(heartbeatAgeMs: 10_001))
        XCTAssertEqual(p.judge(entry(heartbeat: now - 10_000), rssBytes: nil, now: now), .healthy, "exactly the timeout is not beyond it")
        XCTAssertEqual(p.judge(entry(heartbeat: now, busySince: now - 12_000), rssBytes: nil, now: now), .stuck(busyMs: 12_000))
        XCTAssertEqual(p.judge(entry(heartbeat: now, busySince: now - 10_900), rssBytes: nil, now: now), .healthy,
                       "the worker logs the stuck request at the timeout; the master kills a second later")
        XCTAssertEqual(p.judge(entry(heartbeat: now, requests: 1000), rssBytes: nil, now: now), .recycleAfterRequests(1000))
        XCTAssertEqual(p.judge(entry(heartbeat: now, requests: 999), rssBytes: 101 << 20, now: now), .recycleAboveMemory(101 << 20))
        // A heartbeat written after the master read its clock is not an age.
        XCTAssertEqual(p.judge(entry(heartbeat: now + 5), rssBytes: nil, now: now), .healthy)
        XCTAssertEqual(policy().judge(entry(heartbeat: now, requests: 1 << 40), rssBytes: 1 << 40, now: now), .healthy,
                       "no recycling unless configured")
    }

    func testWorkerTableSlotsRoundTripThroughTheFile() throws {
        let path = NSTemporaryDirectory() + "portcullis-workers-\(getpid()).table"
        defer { unlink(path) }
        let master = try WorkerTable.create(path: path, slots: 8)
        master.claim(slot: 3, now: 500)
        XCTAssertEqual(master.read(slot: 3), WorkerTable.Entry(pid: 0, heartbeatMs: 500, requests: 0, busySinceMs: 0))
        let worker = try WorkerTable.open(path: path)
        XCTAssertEqual(worker.slots, 8)
        worker.beat(slot: 3, pid: 77, now: 900, requests: 12, busySince: 880, busyLoops: 2)
        XCTAssertEqual(master.read(slot: 3), WorkerTable.Entry(pid: 77, heartbeatMs: 900, requests: 12, busySinceMs: 880, busyLoops: 2))
        XCTAssertNil(master.read(slot: 8))
        try Data("not a table, just long enough to be one..............................".utf8).write(to: URL(fileURLWithPath: path + ".bad"))
        defer { unlink(path + ".bad") }
        XCTAssertThrowsError(try WorkerTable.open(path: path + ".bad"))
    }

    func testLoopActivityKeepsTheLastRequestStarted() {
        let activity = LoopActivity()
        XCTAssertNil(activity.read())
        activity.note(requestId: "r-1", route: "echo")
        activity.note(requestId: String(repeating: "x", count: 200), route: "ünïcode")
        let last = activity.read()
        XCTAssertEqual(last?.requestId, String(repeating: "x", count: LoopActivity.fieldBytes))
        XCTAssertEqual(last?.route, "ünïcode")
    }

    func testScaleTargets() {
        XCTAssertEqual(MasterControl.ScaleTarget("3"), .absolute(3))
        XCTAssertEqual(MasterControl.ScaleTarget("+2"), .relative(2))
        XCTAssertEqual(MasterControl.ScaleTarget("-1"), .relative(-1))
        XCTAssertNil(MasterControl.ScaleTarget("two"))
        XCTAssertNil(MasterControl.ScaleTarget(""))
    }

    func testPoolGrowthIsReachedOrWithdrawn() {
        let start = ContinuousClock.now
        var growth = PoolGrowth(from: 2, to: 4, timeoutSeconds: 5, now: start)
        XCTAssertEqual(growth.judge(ready: 3, now: start + .seconds(1)), .waiting)
        XCTAssertEqual(growth.judge(ready: 4, now: start + .seconds(1)), .reached)
        XCTAssertEqual(growth.judge(ready: 3, now: start + .seconds(5)),
                       .withdraw("only 3 of 4 workers ready after 5 s (server.ready_timeout_seconds)"))
        growth.workerEndedBeforeReady("worker 7 could not start before it was ready: no bundle")
        growth.workerEndedBeforeReady("worker 8 exited with 1 before it was ready")
        XCTAssertEqual(growth.judge(ready: 2, now: start + .seconds(1)),
                       .withdraw("worker 7 could not start before it was ready: no bundle"), "the first failure is the reason")
        XCTAssertEqual(growth.judge(ready: 4, now: start + .seconds(1)), .reached, "enough ready workers win over a failure")
    }

    func testServiceNotificationsAreOneLinePerField() {
        XCTAssertEqual(ServiceNotifier.message([("READY", "1"), ("STATUS", "generation 2,\n2 workers")]),
                       "READY=1\nSTATUS=generation 2, 2 workers")
        // Without NOTIFY_SOCKET nothing is sent; an address that is neither a path nor '@name' is refused.
        XCTAssertNil(ServiceNotifier(address: "").address)
        XCTAssertEqual(pc_notify_socket_send("relative.sock", "READY=1"), -EINVAL)
        XCTAssertEqual(pc_notify_socket_send("@", "READY=1"), -EINVAL)
        XCTAssertEqual(pc_notify_socket_send("/nonexistent/notify.sock", "READY=1"), -ENOENT)
    }

    func testExpiringKeysSoonestFirst() throws {
        let digest = try XCTUnwrap(KeyDigest(hex: String(repeating: "ab", count: 32)))
        let other = try XCTUnwrap(KeyDigest(hex: String(repeating: "cd", count: 32)))
        let now: Int64 = 1_800_000_000
        let consumers = [
            Consumer(id: "a", apiKeys: [APIKeyCredential(id: "later", digest: digest, expires: now + 30 * 86_400),
                                        APIKeyCredential(id: "soon", digest: other, expires: now + 2 * 86_400 + 60)]),
            Consumer(id: "b", apiKeys: [APIKeyCredential(id: "gone", digest: digest, expires: now),
                                        APIKeyCredential(id: "forever", digest: other)]),
        ]
        let found = APIKeyExpiry.expiring(consumers, now: now, warningDays: 14)
        XCTAssertEqual(found.map(\.keyId), ["gone", "soon"])
        XCTAssertEqual(found.map(\.expired), [true, false])
        XCTAssertEqual(found[0].describe(now: now), #"consumer "b" API key "gone" expired at 2027-01-15T08:00:00Z"#)
        XCTAssertEqual(found[1].describe(now: now), #"consumer "a" API key "soon" expires at 2027-01-17T08:01:00Z (in 2 days)"#)
        XCTAssertEqual(APIKeyExpiry.expiring(consumers, now: now, warningDays: 30).map(\.keyId), ["gone", "soon", "later"])
        XCTAssertEqual(APIKeyExpiry.expiring(consumers, now: now, warningDays: 0).map(\.keyId), ["gone"])
    }

    func testEffectiveConfigFillsDefaultsAndResolvesPaths() throws {
        let source = Array(#"{"server": {"runtime_dir": "../run"}, "plugins_dir": "rules", "upstreams": {"u": {"targets": ["http://a:1/"]}}, "routes": [], "comment": "kept"}"#.utf8)
        let config = try ConfigLoader.parse(bytes: source, file: "/etc/pc/portcullis.json")
        let effective = EffectiveConfig.document(of: config, source: source)
        XCTAssertEqual(effective["server"]?["runtime_dir"], "/etc/run")
        XCTAssertEqual(effective["server"]?["socket"], "/etc/pc/run/portcullis.sock")
        XCTAssertEqual(effective["server"]?["workers"], 2)
        XCTAssertEqual(effective["server"]?["socket_mode"], "0660")
        XCTAssertEqual(effective["server"]?["hard_timeout_seconds"], 60)
        XCTAssertEqual(effective["server"]?["ready_timeout_seconds"], 30)
        XCTAssertEqual(effective["server"]?["recycle_after_requests"], .null)
        XCTAssertEqual(effective["log"]?["access_log"], "-")
        XCTAssertEqual(effective["plugins_dir"], "/etc/pc/rules")
        XCTAssertEqual(effective["upstreams"]?["u"]?["targets"], ["http://a:1"])
        XCTAssertEqual(effective["upstreams"]?["u"]?["timeout_ms"], 30_000)
        XCTAssertEqual(effective["comment"], "kept")

        let withSecret = Array(#"{"upstreams": {}, "routes": [], "auth": {"jwt": {"issuers": [{"issuer": "i", "keys": [{"secret": "s3cr3t-0123456789-0123456789-0123", "alg": "HS256", "kid": "k"}]}]}}}"#.utf8)
        let shown = JSONCodec.serialize(EffectiveConfig.document(of: try ConfigLoader.parse(bytes: withSecret, file: "c.json"), source: withSecret))
        XCTAssertFalse(shown.contains("s3cr3t"), shown)
        XCTAssertTrue(shown.contains("(redacted)"), shown)
    }

    func testSupervisionSettingsAreValidated() {
        XCTAssertThrowsError(try ConfigLoader.parse(bytes: Array(#"{"server": {"hard_timeout_seconds": 0, "ready_timeout_seconds": 601, "recycle_above_rss_mb": 1}, "upstreams": {}, "routes": []}"#.utf8),
                                                    file: "c.json")) { error in
            let text = (error as? ConfigErrors)?.description ?? ""
            XCTAssertTrue(text.contains("/server/hard_timeout_seconds"), text)
            XCTAssertTrue(text.contains("/server/recycle_above_rss_mb"), text)
            XCTAssertTrue(text.contains("/server/ready_timeout_seconds"), text)
        }
    }

    /// The disk reader records exactly what validation read; a worker loading the bundle
    /// alone gets the same configuration even after the files changed.
    func testBundleHoldsWhatWasReadAndServesItAfterTheFilesChanged() throws {
        let dir = NSTemporaryDirectory() + "portcullis-bundle-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: dir + "/plugins", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let rule = { (tag: String) in #"{"name":"tag","type":"transform","phase":"request","operations":[{"op":"header.set","name":"X-Tag","value":"\#(tag)"}]}"# }
        try rule("old").write(toFile: dir + "/plugins/tag.json", atomically: true, encoding: .utf8)
        try "# notes".write(toFile: dir + "/plugins/README.md", atomically: true, encoding: .utf8)
        try JSONCodec.serialize(["keys": [.object(TestKeys.rsaJWK(kid: "k1", alg: "RS256"))]])
            .write(toFile: dir + "/jwks.json", atomically: true, encoding: .utf8)
        try """
        {"plugins_dir": "plugins", "upstreams": {"u": {"targets": ["http://a:1"]}},
         "auth": {"jwt": {"issuers": [{"issuer": "i", "jwks_file": "jwks.json"}]}},
         "routes": [{"name": "r", "match": {"prefix": "/"}, "upstream": "u", "plugins": ["tag"]}]}
        """.write(toFile: dir + "/portcullis.json", atomically: true, encoding: .utf8)

        let loaded = try GatewayLoader.load(configPath: dir + "/portcullis.json")
        XCTAssertEqual(loaded.bundle.files.keys.sorted(), [dir + "/jwks.json", dir + "/plugins/tag.json"])
        XCTAssertEqual(loaded.bundle.directories[dir + "/plugins"], ["README.md", "tag.json"])

        try rule("new").write(toFile: dir + "/plugins/tag.json", atomically: true, encoding: .utf8)
        try "{}".write(toFile: dir + "/jwks.json", atomically: true, encoding: .utf8)
        let again = try GatewayLoader.load(bundle: try XCTUnwrap(ConfigBundle.decode(loaded.bundle.encoded())))
        var request = TransformableRequest(method: "GET", path: "/", headers: HTTPHeaders(), body: nil)
        try again.chains[0].applyRequest(to: &request, context: TemplateContext(requestId: "r", route: "r", now: Date()))
        XCTAssertEqual(request.headers["X-Tag"], "old")
        XCTAssertEqual(again.config.auth.jwt.issuers[0].keys.map(\.kid), ["k1"])
        XCTAssertThrowsError(try GatewayLoader.load(configPath: dir + "/portcullis.json"), "the edited files are invalid on disk")
    }
}
