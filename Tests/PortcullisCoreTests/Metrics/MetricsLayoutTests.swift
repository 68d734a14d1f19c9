import Foundation
import XCTest
@testable import PortcullisCore
@testable import PortcullisRuntime

final class MetricsLayoutTests: XCTestCase {
    func testBucketsAreTheFirstBoundAtOrAboveTheDuration() {
        XCTAssertEqual(MetricsLayout.bucket(micros: 0), 0)
        XCTAssertEqual(MetricsLayout.bucket(micros: 100), 0)
        XCTAssertEqual(MetricsLayout.bucket(micros: 101), 1)
        XCTAssertEqual(MetricsLayout.bucket(micros: 1_000_000), 12)
        XCTAssertEqual(MetricsLayout.bucket(micros: 30_000_000), 16)
        XCTAssertEqual(MetricsLayout.bucket(micros: 30_000_001), 17)  // +Inf
        XCTAssertEqual(MetricsLayout.bucketCount, 18)
    }

    func testStatusClasses() {
        XCTAssertEqual(MetricsLayout.statusClass(200), 1)
        XCTAssertEqual(MetricsLayout.statusClass(101), 0)
        XCTAssertEqual(MetricsLayout.statusClass(429), 3)
        XCTAssertEqual(MetricsLayout.statusClass(599), 4)
        XCTAssertEqual(MetricsLayout.statusClass(0), 4, "no answer sent counts as 5xx")
        XCTAssertEqual(MetricsLayout.statusClass(600), 4)
    }

    func testRegionsDoNotOverlap() {
        let last = MetricsLayout.classOffset(route: MetricsLayout.routeSlots - 1, statusClass: 4) + MetricsLayout.classWords
        XCTAssertLessThanOrEqual(last, MetricsLayout.authOffset(route: MetricsLayout.routeSlots - 1, reason: 0))
        XCTAssertLessThan(MetricsLayout.transformErrorOffset(route: MetricsLayout.routeSlots - 1), MetricsLayout.limitOffset(0))
        XCTAssertEqual(MetricsLayout.limitOffset(MetricsLayout.limitSlots), MetricsLayout.targetOffset(0, .requests))
        XCTAssertEqual(MetricsLayout.targetOffset(MetricsLayout.targetSlots, .requests), MetricsLayout.blockWords)
        XCTAssertLessThanOrEqual(MetricsLayout.BlockHead.scoreboard.rawValue + MetricsLayout.scoreboardLoops * MetricsLayout.scoreboardWords,
                                 MetricsLayout.blockHeadWords)
        XCTAssertLessThanOrEqual(MetricsLayout.Header.allCases.count, MetricsLayout.headerWords)
    }

    func testAuthReasonsFromProblemTypes() {
        XCTAssertEqual(MetricsLayout.authReason(problemType: ProblemDetails.authenticationRequired().type), 0)
        XCTAssertEqual(MetricsLayout.authReason(problemType: ProblemDetails.invalidCredential("x").type), 1)
        XCTAssertEqual(MetricsLayout.authReason(problemType: ProblemDetails.insufficientScope(required: ["a"]).type), 2)
        XCTAssertEqual(MetricsLayout.authReason(problemType: ProblemDetails.forbiddenGroup().type), 3)
        XCTAssertEqual(MetricsLayout.authReason(problemType: "https://portcullis.dev/problems/other"), 4)
    }

    func testNamesKeepTheirSlotsAndOverflowToOther() {
        let first = MetricsNames.assign(["a", "b"], existing: [nil, nil, nil, nil, nil], firstFree: 2, overflow: 1)
        XCTAssertEqual(first.slots, [2, 3])
        var table: [String?] = [nil, nil, nil, nil, nil]
        for (slot, name) in first.added { table[slot] = name }
        // A reload that drops "a" and adds "c", "d": "b" keeps slot 3, "c" takes 4, "d" overflows.
        let second = MetricsNames.assign(["b", "c", "d"], existing: table, firstFree: 2, overflow: 1)
        XCTAssertEqual(second.slots, [3, 4, 1])
        XCTAssertEqual(second.added.map(\.name), ["c"])
        let long = String(repeating: "x", count: MetricsLayout.maxNameBytes + 1)
        XCTAssertEqual(MetricsNames.assign([long], existing: [nil, nil, nil], firstFree: 2, overflow: 1).slots, [1])
        XCTAssertEqual(MetricsNames.lookup(["b", "zzz"], in: table, firstFree: 2, overflow: 1), [3, 1])
    }

    func testDegradedTimeCountsOverlappingLoopsOnce() {
        // Loop A degraded at 1000 ms, loop B at 1500 ms, A recovers at 2000, B at 4000: one
        // period of 3000 ms.
        var (state, closed) = DegradedTime.apply(0, delta: 1, nowMs: 1000)
        XCTAssertEqual(DegradedTime.total(state: state, closedMs: 0, nowMs: 1700), 700, "an open period counts while it lasts")
        (state, closed) = DegradedTime.apply(state, delta: 1, nowMs: 1500)
        XCTAssertEqual(closed, 0)
        (state, closed) = DegradedTime.apply(state, delta: -1, nowMs: 2000)
        XCTAssertEqual(closed, 0)
        XCTAssertEqual(DegradedTime.loops(state), 1)
        XCTAssertEqual(DegradedTime.since(state), 1000)
        (state, closed) = DegradedTime.apply(state, delta: -1, nowMs: 4000)
        XCTAssertEqual(state, 0)
        XCTAssertEqual(closed, 3000)
        XCTAssertEqual(DegradedTime.total(state: state, closedMs: closed, nowMs: 9000), 3000, "nothing accrues while healthy")
        // A dead worker's two loops leave at once; more leaving than entered stays at zero.
        (state, _) = DegradedTime.apply(0, delta: 2, nowMs: 10_000)
        (state, closed) = DegradedTime.apply(state, delta: -5, nowMs: 10_250)
        XCTAssertEqual(state, 0)
        XCTAssertEqual(closed, 250)
    }

    func testSecondsAreRenderedWithoutFloatNoise() {
        XCTAssertEqual(PrometheusText.seconds(micros: 100), "0.0001")
        XCTAssertEqual(PrometheusText.seconds(micros: 2_500_000), "2.5")
        XCTAssertEqual(PrometheusText.seconds(micros: 30_000_000), "30")
        XCTAssertEqual(PrometheusText.escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd")
    }
}

/// The metrics file through its real mapping: what workers write is what a reader sums.
final class MetricsSegmentTests: XCTestCase {
    func makeConfig() -> GatewayConfig {
        var config = GatewayConfig()
        var a = RouteConfig(name: "alpha", match: RouteMatch(path: .prefix("/a")), upstream: "u")
        a.limits = [RateLimitSpec(name: "per-key", params: RateLimitParams(algorithm: .fixedWindow, limit: 1, windowMicros: 1_000_000, burst: 0), key: [.ip])]
        config.routes = [a, RouteConfig(name: "beta", match: RouteMatch(path: .prefix("/b")), upstream: "u", index: 1)]
        return config
    }

    func testWorkersCountInTheirBlocksAndReadersSumThem() throws {
        let path = temporaryPath("metrics-\(UUID().uuidString).shm")
        let master = try MetricsSegment.create(path: path)
        defer { unlink(path) }
        let config = makeConfig()
        master.assignNames(for: config)
        // Two workers, each its own mapping and block.
        let w1 = WorkerMetrics(segment: try MetricsSegment.open(path: path), blockIndex: 0, config: config)
        let w2 = WorkerMetrics(segment: try MetricsSegment.open(path: path), blockIndex: 1, config: config)
        w1.segment.claimBlock(0, loops: 2)
        w2.segment.claimBlock(1, loops: 1)
        w1.recordRequest(routeSlot: w1.routeSlot(0), status: 200, totalMicros: 150, upstreamMicros: 90)
        w2.recordRequest(routeSlot: w2.routeSlot(0), status: 204, totalMicros: 2_000_000, upstreamMicros: nil)
        w2.recordRequest(routeSlot: w2.routeSlot(nil), status: 404, totalMicros: 50, upstreamMicros: nil)
        w1.authFailure(routeIndex: 1, problemType: ProblemDetails.authenticationRequired().type)
        w1.rateLimited(routeIndex: 0, limitIndex: 0)
        w2.transformError(routeIndex: 1)

        let s = master.snapshot(rateTable: nil, upstreams: nil)
        let alpha = w1.routeSlots[0]
        XCTAssertEqual(s.routeLabel(alpha), "alpha")
        XCTAssertEqual(s.requests(route: alpha, statusClass: 1), 2)
        XCTAssertEqual(s.requests(route: MetricsLayout.unmatchedRoute, statusClass: 3), 1)
        XCTAssertEqual(s.workers.map(\.pid), [UInt64(getpid()), UInt64(getpid())])
        let text = PrometheusText.render(s, version: "test")
        XCTAssertTrue(text.contains("portcullis_requests_total{route=\"alpha\",class=\"2xx\"} 2\n"), text)
        XCTAssertTrue(text.contains("portcullis_requests_total{route=\"_unmatched\",class=\"4xx\"} 1\n"))
        XCTAssertTrue(text.contains("portcullis_request_duration_seconds_bucket{route=\"alpha\",class=\"2xx\",le=\"0.00025\"} 1\n"))
        XCTAssertTrue(text.contains("portcullis_request_duration_seconds_bucket{route=\"alpha\",class=\"2xx\",le=\"2.5\"} 2\n"))
        XCTAssertTrue(text.contains("portcullis_request_duration_seconds_sum{route=\"alpha\",class=\"2xx\"} 2.00015\n"))
        XCTAssertTrue(text.contains("portcullis_upstream_duration_seconds_count{route=\"alpha\",class=\"2xx\"} 1\n"))
        XCTAssertTrue(text.contains("portcullis_auth_failures_total{route=\"beta\",reason=\"missing_credential\"} 1\n"))
        XCTAssertTrue(text.contains("portcullis_rate_limited_total{route=\"alpha\",limit=\"per-key\"} 1\n"))
        XCTAssertTrue(text.contains("portcullis_transform_errors_total{route=\"beta\"} 1\n"))

        // Redis degraded mode: a worker's loop enters it; its death closes the period.
        w2.segment.redisDegraded(1, block: 1)
        XCTAssertEqual(DegradedTime.loops(master[.redisDegradedState]), 1)
        // A worker's death clears its gauges, not its counts.
        master.releaseBlock(1)
        XCTAssertEqual(master[.redisDegradedState], 0, "the dead worker's degraded loop is taken out")
        let after = master.snapshot(rateTable: nil, upstreams: nil)
        XCTAssertEqual(after.workers.count, 1)
        XCTAssertEqual(after.requests(route: alpha, statusClass: 1), 2)
    }

    func testUpstreamTargetsAreCountedAndTheirLiveStateRead() throws {
        let path = temporaryPath("metrics-targets-\(UUID().uuidString).shm")
        let master = try MetricsSegment.create(path: path)
        defer { unlink(path) }
        var config = makeConfig()
        config.upstreams = ["u": UpstreamConfig(name: "u", targets: ["http://a:1", "http://b:2"]),
                            "echo": UpstreamConfig(name: "echo", targets: ["http://e:3"])]
        master.assignNames(for: config)
        let w1 = WorkerMetrics(segment: try MetricsSegment.open(path: path), blockIndex: 0, config: config)
        let w2 = WorkerMetrics(segment: try MetricsSegment.open(path: path), blockIndex: 1, config: config)
        w1.segment.claimBlock(0, loops: 1)
        w2.segment.claimBlock(1, loops: 1)
        // Upstreams are indexed in name order: "echo" 0, "u" 1.
        w1.countTarget(.requests, upstream: 1, target: 0)
        w1.countTarget(.failures, upstream: 1, target: 0)
        w1.countTarget(.retries, upstream: 1, target: 0)
        w2.countTarget(.requests, upstream: 1, target: 1)
        w2.countTarget(.requests, upstream: 1, target: 0)
        let table = UpstreamStateTable.local()
        let down = try XCTUnwrap(table.slot(upstream: "u", target: "http://a:1"))
        _ = down.health.add(HealthWord(unhealthy: true, successes: 0, failures: 2).raw)
        _ = down.breaker.add(BreakerWord(state: .open, trips: 1, until: 5_000).raw)
        _ = down.inFlightCell(column: 0).add(3)
        _ = table.claimColumn(pid: getpid())

        let text = PrometheusText.render(master.snapshot(rateTable: nil, upstreams: table), version: "test")
        let a = "upstream=\"u\",target=\"http://a:1\"", b = "upstream=\"u\",target=\"http://b:2\""
        for line in ["portcullis_upstream_requests_total{\(a)} 2", "portcullis_upstream_failures_total{\(a)} 1",
                     "portcullis_upstream_retries_total{\(a)} 1", "portcullis_upstream_requests_total{\(b)} 1",
                     "portcullis_upstream_failures_total{\(b)} 0",
                     "portcullis_upstream_requests_total{upstream=\"echo\",target=\"http://e:3\"} 0",
                     "portcullis_upstream_up{\(a)} 0", "portcullis_upstream_up{\(b)} 1", "portcullis_upstream_in_flight{\(a)} 3",
                     "portcullis_upstream_breaker_state{\(a),state=\"open\"} 1", "portcullis_upstream_breaker_state{\(a),state=\"closed\"} 0",
                     "portcullis_upstream_breaker_state{\(b),state=\"closed\"} 1"] {
            XCTAssertTrue(text.contains(line + "\n"), "missing \(line) in\n\(text)")
        }

        // A reload without target a: its counters stay, its gauges go.
        config.upstreams["u"] = UpstreamConfig(name: "u", targets: ["http://b:2"])
        master.assignNames(for: config)
        let after = PrometheusText.render(master.snapshot(rateTable: nil, upstreams: table), version: "test")
        XCTAssertTrue(after.contains("portcullis_upstream_requests_total{\(a)} 2\n"), after)
        XCTAssertFalse(after.contains("portcullis_upstream_up{\(a)}"), after)
        XCTAssertTrue(after.contains("portcullis_upstream_up{\(b)} 1\n"), after)
    }

    func testOpenRefusesAFileOfAnotherShape() throws {
        let path = temporaryPath("metrics-bad-\(UUID().uuidString).shm")
        FileManager.default.createFile(atPath: path, contents: Data(count: 4096))
        defer { unlink(path) }
        XCTAssertThrowsError(try MetricsSegment.open(path: path))
    }
}
