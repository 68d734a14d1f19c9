import XCTest
import PortcullisCore
@testable import PortcullisPlugins
@testable import PortcullisRuntime

/// Issue 13, defects 1, 2, 5, 6 and the decided "unspecified" behaviours: conditions see the
/// message as earlier rule sets left it (also for body operations), only rule sets whose body
/// operations run limit the body, every kind of configuration error is reported at once, and
/// rendered values cannot climb out of a path template's prefix.
final class TransformOrderTests: XCTestCase {
    let context = TransformTemplateTests.context

    /// A chain of several rule sets (one file holding an array of them), in `names` order.
    private func chain(_ sets: String, _ names: [String]) throws -> TransformChain {
        try TransformFixture.set([("plugins/sets.json", "[" + sets + "]")]).chain(names)
    }

    private func jsonRequest(_ body: String, method: String = "POST", headers: [(String, String)] = []) -> TransformableRequest {
        TransformableRequest(method: method, path: "/p", headers: HTTPHeaders([("Content-Type", "application/json"),
                                                                               ("Content-Length", "\(body.utf8.count)")] + headers),
                             body: Array(body.utf8))
    }

    // MARK: Defect 1: body operations see earlier rule sets

    static let stagedRequest = """
        {"name":"a","type":"transform","phase":"request","operations":[{"op":"header.set","name":"X-Stage","value":"one"}]},
        {"name":"b","type":"transform","phase":"request","condition":{"headers":{"X-Stage":"one"}},
         "operations":[{"op":"body.set","path":"/x","value":true}]}
        """

    func testBodyConditionSeesAHeaderSetEarlier() throws {
        let chain = try chain(Self.stagedRequest, ["a", "b"])
        var req = jsonRequest(#"{"a":1}"#)
        XCTAssertTrue(chain.needsRequestBody(req, context: context), "b could apply once a has run")
        try chain.applyRequest(to: &req, context: context)
        XCTAssertEqual(String(decoding: req.body ?? [], as: UTF8.self), #"{"a":1,"x":true}"#)
    }

    func testBodyConditionIsStillDecidedWhenNothingEarlierChangesIt() throws {
        // Reversed order: nothing before b sets X-Stage, so b cannot apply and nothing is buffered.
        let chain = try chain(Self.stagedRequest, ["b", "a"])
        XCTAssertFalse(chain.needsRequestBody(jsonRequest("{}"), context: context))
        XCTAssertTrue(chain.needsRequestBody(jsonRequest("{}", headers: [("X-Stage", "one")]), context: context))
    }

    func testBodyConditionSeesAMethodSetEarlier() throws {
        let chain = try chain("""
            {"name":"m","type":"transform","phase":"request","operations":[{"op":"method.set","value":"POST"}]},
            {"name":"b","type":"transform","phase":"request","condition":{"methods":["POST"]},
             "operations":[{"op":"body.set","path":"/x","value":1}]}
            """, ["m", "b"])
        var req = jsonRequest("{}", method: "PUT")
        XCTAssertTrue(chain.needsRequestBody(req, context: context))
        try chain.applyRequest(to: &req, context: context)
        XCTAssertEqual(req.method, "POST")
        XCTAssertEqual(String(decoding: req.body ?? [], as: UTF8.self), #"{"x":1}"#)
    }

    func testResponseBodyConditionSeesAHeaderSetEarlier() throws {
        let chain = try chain("""
            {"name":"a","type":"transform","phase":"response","operations":[{"op":"header.set","name":"X-Stage","value":"one"}]},
            {"name":"b","type":"transform","phase":"response","condition":{"headers":{"X-Stage":"one"}},
             "operations":[{"op":"body.set","path":"/x","value":true}]}
            """, ["a", "b"])
        var status = 200
        var headers = HTTPHeaders([("Content-Type", "application/json")])
        var body: [UInt8]? = Array(#"{"a":1}"#.utf8)
        XCTAssertTrue(chain.needsResponseBody(status: status, headers: headers, context: context))
        try chain.applyResponse(status: &status, headers: &headers, body: &body, context: context)
        XCTAssertEqual(String(decoding: body ?? [], as: UTF8.self), #"{"a":1,"x":true}"#)
    }

    func testResponseBodyConditionSeesAStatusMappedEarlier() throws {
        let chain = try chain("""
            {"name":"m","type":"transform","phase":"response","operations":[{"op":"status.map","from":201,"to":200}]},
            {"name":"b","type":"transform","phase":"response","condition":{"status":200},
             "operations":[{"op":"body.wrap","path":"/data"}]}
            """, ["m", "b"])
        var status = 201
        var headers = HTTPHeaders([("Content-Type", "application/json")])
        var body: [UInt8]? = Array("[1]".utf8)
        XCTAssertTrue(chain.needsResponseBody(status: status, headers: headers, context: context))
        try chain.applyResponse(status: &status, headers: &headers, body: &body, context: context)
        XCTAssertEqual(String(decoding: body ?? [], as: UTF8.self), #"{"data":[1]}"#)
    }

    // MARK: Defect 2: a skipped rule set's limit does not apply

    static let bigAndSmall = """
        {"name":"big","type":"transform","phase":"request","max_body_bytes":100000,"operations":[{"op":"body.set","path":"/big","value":1}]},
        {"name":"small","type":"transform","phase":"request","max_body_bytes":256,"condition":{"methods":"PUT"},
         "operations":[{"op":"body.set","path":"/small","value":1}]}
        """

    func testSkippedRuleSetDoesNotLimitTheRequestBody() throws {
        let chain = try chain(Self.bigAndSmall, ["big", "small"])
        let padding = String(repeating: "p", count: 400)
        var post = jsonRequest(#"{"pad":"\#(padding)"}"#)
        XCTAssertEqual(chain.requestBodyNeed(post, context: context), BodyLimit(bytes: 100_000, ruleSet: "big"))
        try chain.applyRequest(to: &post, context: context)
        XCTAssertTrue(String(decoding: post.body ?? [], as: UTF8.self).hasSuffix(#","big":1}"#))

        var put = jsonRequest(#"{"pad":"\#(padding)"}"#, method: "PUT")
        XCTAssertEqual(chain.requestBodyNeed(put, context: context), BodyLimit(bytes: 256, ruleSet: "small"))
        XCTAssertThrowsError(try chain.applyRequest(to: &put, context: context)) { error in
            XCTAssertEqual((error as? TransformError)?.problem.detail, #"request body exceeds the 256 byte limit of rule set "small""#)
        }
    }

    func testAppliedLimitTellsCouldFromDoes() throws {
        // small reads a header an earlier rule set may remove: it could apply, so its limit is
        // the buffering limit; running the chain without the body tells whether it does.
        let chain = try chain("""
            {"name":"drop","type":"transform","phase":"request","condition":{"headers":{"X-Drop":true}},
             "operations":[{"op":"header.remove","name":"X-Small"}]},
            {"name":"small","type":"transform","phase":"request","max_body_bytes":10,"condition":{"headers":{"X-Small":true}},
             "operations":[{"op":"body.set","path":"/s","value":1}]}
            """, ["drop", "small"])
        let dropped = jsonRequest(#"{"a":"0123456789"}"#, headers: [("X-Drop", "1"), ("X-Small", "1")])
        XCTAssertEqual(chain.requestBodyNeed(dropped, context: context)?.bytes, 10)
        XCTAssertNil(try chain.appliedRequestBodyLimit(dropped, context: context))
        let kept = jsonRequest(#"{"a":"0123456789"}"#, headers: [("X-Small", "1")])
        XCTAssertEqual(try chain.appliedRequestBodyLimit(kept, context: context), BodyLimit(bytes: 10, ruleSet: "small"))
    }

    func testSkippedResponseRuleSetDoesNotLimitTheResponse() throws {
        let chain = try chain("""
            {"name":"nf","type":"transform","phase":"response","max_body_bytes":300,"condition":{"status":404},
             "operations":[{"op":"body.set","path":"/missing","value":true}]},
            {"name":"env","type":"transform","phase":"response","condition":{"status":"2xx"},"operations":[{"op":"body.wrap","path":"/data"}]}
            """, ["nf", "env"])
        let headers = HTTPHeaders([("Content-Type", "application/json")])
        XCTAssertEqual(chain.responseBodyNeed(status: 200, headers: headers, context: context), BodyLimit(bytes: 1 << 20, ruleSet: "env"))
        XCTAssertEqual(chain.responseBodyNeed(status: 404, headers: headers, context: context), BodyLimit(bytes: 300, ruleSet: "nf"))
        XCTAssertNil(chain.responseBodyNeed(status: 500, headers: headers, context: context))

        var status = 200
        var h = headers
        var body: [UInt8]? = Array(("[\"" + String(repeating: "x", count: 400) + "\"]").utf8)
        XCTAssertNoThrow(try chain.applyResponse(status: &status, headers: &h, body: &body, context: context))
    }

    func testStatusMapBodyDoesNotNeedTheDiscardedUpstreamBody() throws {
        let chain = try chain("""
            {"name":"nf","type":"transform","phase":"response","max_body_bytes":100,
             "operations":[{"op":"status.map","from":404,"body":{"missing":"{{path}}"}},{"op":"body.set","path":"/n","value":1}]}
            """, ["nf"])
        let json = HTTPHeaders([("Content-Type", "application/json")])
        let use = try chain.appliedResponseBodyUse(status: 404, headers: json, context: context)
        XCTAssertFalse(use.readsOriginal, "the body is replaced before it is read")
        XCTAssertEqual(use.limit, BodyLimit(bytes: 100, ruleSet: "nf"))
        let ok = try chain.appliedResponseBodyUse(status: 200, headers: json, context: context)
        XCTAssertTrue(ok.readsOriginal)

        // Applied with no body (the pipeline discarded it): the replacement is sent.
        var status = 404
        var headers = json
        var body: [UInt8]? = nil
        XCTAssertEqual(try chain.applyResponse(status: &status, headers: &headers, body: &body, context: context), .replaced(byteCount: 32))
        XCTAssertEqual(String(decoding: body ?? [], as: UTF8.self), #"{"missing":"/v1/users/42","n":1}"#)
    }

    // MARK: Defect 5: every kind of error at once

    func testCheckReportsConfigRuleFileAndReferenceErrorsTogether() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("portcullis-check-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("plugins"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try #"{"name":"broken","type":"transform","phase":"request","operations":[{"op":"header.sett","name":"X","value":"1"}]}"#
            .write(to: dir.appendingPathComponent("plugins/broken.json"), atomically: true, encoding: .utf8)
        let config = """
            {"plugins_dir": "plugins", "upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}},
             "routes": [{"name": "a", "match": {"prefix": "/a/"}, "upstream": "u", "plugins": ["broken", "v1-to-v3"]},
                        {"name": "b", "match": {"prefix": "/b/"}, "upstream": "nope"}]}
            """
        let path = dir.appendingPathComponent("portcullis.json").path
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try GatewayLoader.load(configPath: path)) { error in
            let lines = (error as? ConfigErrors)?.issues.map(\.description) ?? []
            XCTAssertTrue(lines.contains("\(path): /routes/1/upstream: unknown upstream \"nope\""), "\(lines)")
            XCTAssertTrue(lines.contains("\(dir.path)/plugins/broken.json: /operations/0/op: unknown operation \"header.sett\""), "\(lines)")
            XCTAssertTrue(lines.contains("\(path): /routes/0/plugins/1: unknown plugin rule set \"v1-to-v3\""), "\(lines)")
            XCTAssertFalse(lines.contains { $0.contains("/routes/0/plugins/0") }, "a declared but broken rule set is reported by its file only: \(lines)")
        }
    }

    // MARK: Defect 6: rendered values stay inside the path template's prefix

    private func rewrite(_ op: String, query: [(String, String)]) throws -> Result<String, TransformError> {
        let chain = try chain(#"{"name":"r","type":"transform","phase":"request","operations":[\#(op)]}"#, ["r"])
        var ctx = context
        ctx.queryItems = query
        var req = TransformableRequest(method: "GET", path: "/x")
        do {
            try chain.applyRequest(to: &req, context: ctx)
            return .success(req.path)
        } catch {
            return .failure(error)
        }
    }

    func testPathTemplateValuesCannotClimbOut() throws {
        let op = #"{"op":"path.rewrite","template":"/p/{{query.p}}"}"#
        XCTAssertEqual(try rewrite(op, query: [("p", "file.txt")]), .success("/p/file.txt"))
        XCTAssertEqual(try rewrite(op, query: [("p", "...")]), .success("/p/..."))
        for bad in ["../../admin", "..", ".", "a/b", "a\\b", "%2e%2e/x"] {
            guard case .failure(let error) = try rewrite(op, query: [("p", bad)]) else { return XCTFail("\(bad) was accepted") }
            XCTAssertEqual(error.problem.status, 400, bad)
            XCTAssertEqual(error.problem.type, "https://portcullis.dev/problems/transform-unsafe-path", bad)
        }
    }

    func testAllowSlashesStillRefusesDotSegments() throws {
        let op = #"{"op":"path.rewrite","template":"/files/{{query.p}}","allow_slashes":true}"#
        XCTAssertEqual(try rewrite(op, query: [("p", "a/b/c.txt")]), .success("/files/a/b/c.txt"))
        guard case .failure(let error) = try rewrite(op, query: [("p", "a/../../etc")]) else { return XCTFail("accepted") }
        XCTAssertEqual(error.problem.status, 400)
        XCTAssertEqual(error.problem.detail, #"rule set "r": the rewritten path contains a "." or ".." segment"#)
    }

    func testRegexReplacementValuesAreSegmentsButCapturesMayHoldSlashes() throws {
        let op = #"{"op":"path.rewrite","regex":"^/(.*)$","replacement":"/t/{{query.t}}/$1"}"#
        XCTAssertEqual(try rewrite(op, query: [("t", "acme")]), .success("/t/acme/x"))
        guard case .failure(let error) = try rewrite(op, query: [("t", "../admin")]) else { return XCTFail("accepted") }
        XCTAssertEqual(error.problem.status, 400)
    }

    // MARK: Decided behaviours (item 2)

    func testHeaderSetRenderingEmptyRemovesTheHeader() throws {
        let chain = try chain("""
            {"name":"h","type":"transform","phase":"request","operations":[
              {"op":"header.set","name":"X-Consumer","value":"{{consumer.id}}"},
              {"op":"header.add","name":"X-Added","value":"{{consumer.id}}"},
              {"op":"header.append","name":"X-Appended","value":"{{consumer.id}}"}]}
            """, ["h"])
        var anonymous = context
        anonymous.consumerId = nil
        var req = TransformableRequest(method: "GET", path: "/", headers: HTTPHeaders([("X-Consumer", "forged"), ("X-Appended", "a")]))
        try chain.applyRequest(to: &req, context: anonymous)
        XCTAssertNil(req.headers["x-consumer"], "a client-sent value does not survive")
        XCTAssertNil(req.headers["x-added"])
        XCTAssertEqual(req.headers.values("x-appended"), ["a"])
    }

    func testQueryRenameOfAnAbsentParameterChangesNothing() throws {
        let chain = try chain(#"{"name":"q","type":"transform","phase":"request","operations":[{"op":"query.rename","from":"a","to":"b"}]}"#, ["q"])
        var req = TransformableRequest(method: "GET", path: "/", rawQuery: "b=1&c=2")
        try chain.applyRequest(to: &req, context: context)
        XCTAssertEqual(req.rawQuery, "b=1&c=2")
    }

    func testContentEncodedRequestBodiesAreNotTransformed() throws {
        let chain = try chain(#"{"name":"b","type":"transform","phase":"request","operations":[{"op":"body.set","path":"/a","value":1}]}"#, ["b"])
        var gzip = jsonRequest("\u{1f}", headers: [("Content-Encoding", "gzip")])
        XCTAssertFalse(chain.needsRequestBody(gzip, context: context))
        XCTAssertEqual(try chain.applyRequest(to: &gzip, context: context), .untouched)
        XCTAssertTrue(chain.needsRequestBody(jsonRequest("{}", headers: [("Content-Encoding", "identity")]), context: context))
    }

    func testNumbersBeyondInt64AndDoubleKeepTheirText() throws {
        let big = #"{"id":123456789012345678901234567890,"neg":-99999999999999999999,"r":1e400,"ok":1.5}"#
        XCTAssertThrowsError(try JSONCodec.parse(Array(big.utf8)), "without the flag jansson's verdict stands")
        let kept = try JSONCodec.parse(Array(big.utf8), rejectDuplicateKeys: false, keepLargeNumbers: true)
        XCTAssertEqual(kept["id"], .number("123456789012345678901234567890"))
        XCTAssertEqual(kept["r"], .number("1e400"))
        XCTAssertEqual(kept["ok"], .double(1.5))
        let chain = try chain(#"{"name":"b","type":"transform","phase":"request","operations":[{"op":"body.set","path":"/x","value":"{{query.n | number}}"}]}"#, ["b"])
        var ctx = context
        ctx.queryItems = [("n", "98765432109876543210")]
        var req = jsonRequest(big)
        try chain.applyRequest(to: &req, context: ctx)
        XCTAssertEqual(String(decoding: req.body ?? [], as: UTF8.self),
                       #"{"id":123456789012345678901234567890,"neg":-99999999999999999999,"r":1e400,"ok":1.5,"x":98765432109876543210}"#)
    }
}
