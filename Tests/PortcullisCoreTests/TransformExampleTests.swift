import XCTest
import PortcullisCore
@testable import PortcullisPlugins

/// Every example rule file shipped in `plugins/`, loaded the way the gateway loads it and run
/// on a typical message.
final class TransformExampleTests: XCTestCase {
    static let pluginsDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("plugins").path

    let context = TransformTemplateTests.context
    var plugins: PluginSet!

    override func setUpWithError() throws {
        plugins = try PluginSet.load(directory: Self.pluginsDirectory, files: FixtureFiles())
    }

    private func json(_ bytes: [UInt8]?) throws -> JSONValue { try JSONCodec.parse(bytes ?? []) }

    func testAllExamplesLoad() {
        XCTAssertEqual(plugins.transforms.keys.sorted(), [
            "beta-channel", "envelope", "form-submitted-by", "inject-consumer", "maintenance-page", "not-found-problem",
            "path-versioning", "strip-internal", "v1-to-v2-request", "v2-to-v1-response",
        ])
    }

    func testContractTranslationBothWays() throws {
        let names = ["v1-to-v2-request", "v2-to-v1-response"]
        var req = TransformableRequest(method: "POST", path: "/users", headers: HTTPHeaders([("Content-Type", "application/json")]),
                                       body: Array(#"{"user_name":"ann","email":"a@example.com","street":"Main 1","city":"Oslo","note":"hi"}"#.utf8))
        XCTAssertTrue(try plugins.needsRequestBody(names: names, request: req, context: context))
        try plugins.applyRequest(names, to: &req, context: context)
        XCTAssertEqual(String(decoding: req.body!, as: UTF8.self),
                       #"{"name":"ann","note":"hi","contact":{"email":"a@example.com"},"address":{"street":"Main 1","city":"Oslo"}}"#)
        XCTAssertEqual(req.headers["x-api-version"], "2")

        var status = 201
        var headers = HTTPHeaders([("Content-Type", "application/json; charset=utf-8")])
        var body: [UInt8]? = Array(#"{"id":7,"name":"ann","contact":{"email":"a@example.com","phone":"+47"},"address":{"street":"Main 1","city":"Oslo","zip":"0150"}}"#.utf8)
        XCTAssertTrue(try plugins.needsResponseBody(names: names, status: status, headers: headers, context: context))
        try plugins.applyResponse(names, status: &status, headers: &headers, body: &body, context: context)
        XCTAssertEqual(String(decoding: body!, as: UTF8.self),
                       #"{"id":7,"user_name":"ann","email":"a@example.com","phone":"+47","street":"Main 1","city":"Oslo"}"#)
        XCTAssertEqual(headers["x-api-version"], "1")

        // An error answer is left in the v2 shape (the response rule set applies to 2xx only).
        status = 409
        body = Array(#"{"name":"conflict"}"#.utf8)
        XCTAssertFalse(try plugins.needsResponseBody(names: names, status: status, headers: headers, context: context))
    }

    func testInjectConsumer() throws {
        var req = TransformableRequest(method: "POST", path: "/orders", headers: HTTPHeaders([("Content-Type", "application/json")]),
                                       body: Array(#"{"item":"book","owner":{"id":"mallory"}}"#.utf8))
        try plugins.applyRequest(["inject-consumer"], to: &req, context: context)
        XCTAssertEqual(try json(req.body), try JSONCodec.parse(
            #"{"item":"book","owner":{"id":"ann","groups":["gold","beta"]},"received_at":"2023-11-14T22:13:20Z"}"#))
        XCTAssertEqual(req.headers["x-submitted-via"], "portcullis route users")

        var get = TransformableRequest(method: "GET", path: "/orders")
        try plugins.applyRequest(["inject-consumer"], to: &get, context: context)
        XCTAssertNil(get.headers["x-submitted-via"], "reads are not touched")
    }

    func testStripInternal() throws {
        var status = 200
        var headers = HTTPHeaders([("Content-Type", "application/json"), ("Server", "gunicorn"), ("X-Powered-By", "py"),
                                   ("X-Internal-Trace", "abc"), ("Cache-Control", "no-store")])
        var body: [UInt8]? = Array(#"{"id":1,"internal_id":"db-9","debug":{"sql":"select"},"items":[{"sku":"a","cost_price":3,"supplier":"s"},{"sku":"b"}]}"#.utf8)
        try plugins.applyResponse(["strip-internal"], status: &status, headers: &headers, body: &body, context: context)
        XCTAssertEqual(String(decoding: body!, as: UTF8.self), #"{"id":1,"items":[{"sku":"a"},{"sku":"b"}]}"#)
        XCTAssertEqual(headers, HTTPHeaders([("Content-Type", "application/json"), ("Cache-Control", "no-store")]))
    }

    func testPathVersioning() throws {
        var req = TransformableRequest(method: "GET", path: "/v1/users/42", rawQuery: "expand=orders")
        XCTAssertFalse(try plugins.needsRequestBody(names: ["path-versioning"], request: req, context: context))
        try plugins.applyRequest(["path-versioning"], to: &req, context: context)
        XCTAssertEqual(req.path, "/api/users/42")
        XCTAssertEqual(req.rawQuery, "expand=orders&api_version=1")
        XCTAssertEqual(req.headers["x-original-path"], "/v1/users/42")

        // The route prefix /v1/ also matches /v1, and a path may hold line separators: both
        // are rewritten, never passed through as they are.
        for (path, expected) in [("/v1", "/api"), ("/v1/", "/api/"), ("/v1/admin;\u{2028}x", "/api/admin;\u{2028}x"),
                                 ("/v1/a\u{2029}\u{85}b", "/api/a\u{2029}\u{85}b")] {
            var r = TransformableRequest(method: "GET", path: path)
            try plugins.applyRequest(["path-versioning"], to: &r, context: context)
            XCTAssertEqual(r.path, expected)
        }
        var other = TransformableRequest(method: "GET", path: "/v10/x")
        XCTAssertThrowsError(try plugins.applyRequest(["path-versioning"], to: &other, context: context)) {
            XCTAssertEqual(($0 as? TransformError)?.problem.status, 404)
        }
    }

    func testNotFoundBecomesProblemJSON() throws {
        var status = 404
        var headers = HTTPHeaders([("Content-Type", "text/html"), ("Content-Length", "22")])
        var body: [UInt8]? = Array("<h1>Not Found</h1>\n...".utf8)
        XCTAssertTrue(try plugins.needsResponseBody(names: ["not-found-problem"], status: status, headers: headers, context: context))
        let outcome = try plugins.applyResponse(["not-found-problem"], status: &status, headers: &headers, body: &body, context: context)
        XCTAssertEqual(status, 404)
        XCTAssertEqual(headers["content-type"], "application/problem+json")
        XCTAssertEqual(outcome, .replaced(byteCount: body!.count))
        XCTAssertEqual(headers["content-length"], String(body!.count))
        XCTAssertEqual(try json(body), try JSONCodec.parse("""
            {"type":"https://portcullis.dev/problems/resource-not-found","title":"Not Found","status":404,
             "detail":"no resource exists at /v1/users/42","instance":"/v1/users/42","request_id":"req-1"}
            """))

        status = 200
        XCTAssertFalse(try plugins.needsResponseBody(names: ["not-found-problem"], status: status, headers: headers, context: context))
    }

    func testEnvelope() throws {
        var status = 200
        var headers = HTTPHeaders([("Content-Type", "application/json")])
        var body: [UInt8]? = Array(#"[{"id":1}]"#.utf8)
        try plugins.applyResponse(["envelope"], status: &status, headers: &headers, body: &body, context: context)
        XCTAssertEqual(String(decoding: body!, as: UTF8.self),
                       #"{"data":[{"id":1}],"meta":{"request_id":"req-1","route":"users","served_at":"2023-11-14T22:13:20Z"}}"#)
    }

    func testMaintenancePage() throws {
        var status = 502
        var headers = HTTPHeaders([("Content-Type", "text/html"), ("Content-Length", "9")])
        XCTAssertTrue(try plugins.needsResponseBody(names: ["maintenance-page"], status: status, headers: headers, context: context))
        var body: [UInt8]? = nil  // the upstream's page is never read
        try plugins.applyResponse(["maintenance-page"], status: &status, headers: &headers, body: &body, context: context)
        XCTAssertEqual(status, 503)
        XCTAssertEqual(headers["retry-after"], "30")
        XCTAssertEqual(headers["content-type"], "text/plain; charset=utf-8")
        XCTAssertEqual(String(decoding: body ?? [], as: UTF8.self),
                       "We are down for maintenance. Please retry in 30 seconds (request req-1).\n")
        XCTAssertFalse(try plugins.needsResponseBody(names: ["maintenance-page"], status: 200, headers: headers, context: context))
    }

    func testBetaChannel() throws {
        func forwarded(_ headers: [(String, String)]) throws -> TransformableRequest {
            var req = TransformableRequest(method: "GET", path: "/", headers: HTTPHeaders(headers))
            try plugins.applyRequest(["beta-channel"], to: &req, context: context)
            return req
        }
        let opted = try forwarded([("Cookie", "beta=1; sid=x"), ("User-Agent", "Firefox")])
        XCTAssertEqual(opted.host, "beta.internal.example")
        XCTAssertEqual(opted.headers["x-channel"], "beta")
        XCTAssertEqual(opted.headers["cookie"], "sid=x")
        XCTAssertEqual(try forwarded([("X-Beta", "yes")]).host, "beta.internal.example")
        XCTAssertNil(try forwarded([("X-Beta", "no")]).host)
        XCTAssertNil(try forwarded([("X-Beta", "1"), ("User-Agent", "Googlebot/2.1")]).host)
    }

    func testFormSubmittedBy() throws {
        var req = TransformableRequest(method: "POST", path: "/comments",
                                       headers: HTTPHeaders([("Content-Type", "application/x-www-form-urlencoded")]),
                                       body: Array("text=Hello+there&csrf_token=abc&submitted_by=mallory".utf8))
        XCTAssertTrue(try plugins.needsRequestBody(names: ["form-submitted-by"], request: req, context: context))
        try plugins.applyRequest(["form-submitted-by"], to: &req, context: context)
        XCTAssertEqual(String(decoding: req.body ?? [], as: UTF8.self), "text=Hello%20there&submitted_by=ann")
    }
}
