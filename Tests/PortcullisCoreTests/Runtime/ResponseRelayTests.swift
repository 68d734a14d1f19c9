import XCTest
@testable import PortcullisCore
@testable import PortcullisRuntime

/// The relay's decision on a response head: swallowed for a retry by status alone, otherwise
/// streamed as the bytes that arrived while no hook needs the header fields.
final class ResponseRelayTests: XCTestCase {
    private func fields(_ pairs: [(String, String)]) -> RawHeaderFields {
        var raw = RawHeaderFields()
        for (name, value) in pairs {
            Array(name.utf8).withUnsafeBytes { raw.appendName($0) }
            Array(value.utf8).withUnsafeBytes { raw.appendValue($0) }
        }
        raw.finish()
        return raw
    }

    /// A relay whose hooks swallow 503 (counting how often they are asked).
    private func relay(sink: RecordingSink, asked: @escaping () -> Void, base: ResponseHooks = .streaming) -> ResponseRelay {
        var hooks = base
        hooks.swallow = { status in
            asked()
            return status == 503
        }
        return ResponseRelay(sink: sink, body: nil, hooks: hooks, requestId: "r", url: "http://u") { _, _ in }
    }

    func testARetryableStatusIsSwallowedWithoutAnythingReachingTheClient() {
        let sink = RecordingSink()
        var asked = 0
        let relay = relay(sink: sink, asked: { asked += 1 })
        relay.head(status: 503, fields: fields([("Retry-After", "1")]))
        XCTAssertTrue(Array("busy".utf8).withUnsafeBytes { relay.bodyChunk($0) })
        let (outcome, collected) = relay.result(failure: nil, elapsedMs: 1)
        XCTAssertTrue(outcome.swallowed)
        XCTAssertNil(collected)
        XCTAssertFalse(sink.headSent)
        XCTAssertTrue(sink.body.isEmpty)
        XCTAssertEqual(asked, 1, "asked once: a yes takes a retry from the budget")
    }

    func testAResponseThatIsNotSwallowedStaysOnTheByteHead() {
        let sink = RecordingSink()
        var asked = 0
        let relay = relay(sink: sink, asked: { asked += 1 })
        XCTAssertTrue(relay.hooks.streamsPlainly, "a swallow hook alone keeps the plain path")
        relay.head(status: 200, fields: fields([("Content-Type", "text/plain"), ("Connection", "close")]))
        XCTAssertTrue(Array("ok".utf8).withUnsafeBytes { relay.bodyChunk($0) })
        let (outcome, _) = relay.result(failure: nil, elapsedMs: 1)
        XCTAssertFalse(outcome.swallowed)
        XCTAssertEqual(sink.rawHeads, 1)
        XCTAssertEqual(sink.status, 200)
        XCTAssertEqual(sink.headers["Content-Type"], "text/plain")
        XCTAssertNil(sink.headers["Connection"], "hop-by-hop fields are still dropped")
        XCTAssertEqual(sink.text, "ok")
        XCTAssertEqual(asked, 1)
    }

    func testWithAModeHookTheSwallowIsAskedFirstAndOnce() {
        let sink = RecordingSink()
        var asked = 0, modes = 0
        let base = ResponseHooks(mode: { _, _ in modes += 1; return .stream })
        let relay = relay(sink: sink, asked: { asked += 1 }, base: base)
        relay.head(status: 503, fields: fields([]))
        XCTAssertTrue(relay.result(failure: nil, elapsedMs: 1).0.swallowed)
        XCTAssertEqual([asked, modes], [1, 0])
        let other = RecordingSink()
        let second = self.relay(sink: other, asked: { asked += 1 }, base: base)
        second.head(status: 200, fields: fields([]))
        _ = second.result(failure: nil, elapsedMs: 1)
        XCTAssertEqual([asked, modes], [2, 1])
        XCTAssertEqual([other.status, other.rawHeads], [200, 0], "a mode hook needs HTTPHeaders")
    }
}
