import XCTest
import PortcullisCore
@testable import PortcullisPlugins

final class TransformOperationTests: XCTestCase {
    let context = TransformTemplateTests.context

    private func request(_ ops: String, condition: String? = nil, maxBody: Int64 = 1 << 20) throws -> TransformChain {
        let cond = condition.map { #","condition":"# + $0 } ?? ""
        return try TransformFixture.chain(#"{"name":"t","type":"transform","phase":"request"\#(cond),"operations":[\#(ops)]}"#, maxBody: maxBody)
    }

    private func response(_ ops: String, condition: String? = nil, maxBody: Int64 = 1 << 20) throws -> TransformChain {
        let cond = condition.map { #","condition":"# + $0 } ?? ""
        return try TransformFixture.chain(#"{"name":"t","type":"transform","phase":"response"\#(cond),"operations":[\#(ops)]}"#, maxBody: maxBody)
    }

    private func jsonRequest(_ body: String, method: String = "POST") -> TransformableRequest {
        TransformableRequest(method: method, path: "/v1/users/42", rawQuery: "a=1&b=2",
                             headers: HTTPHeaders([("Content-Type", "application/json"), ("Content-Length", "\(body.utf8.count)")]),
                             body: Array(body.utf8))
    }

    /// Runs a request chain over `body` and returns the resulting body text.
    private func transformBody(_ ops: String, _ body: String) throws -> String {
        var req = jsonRequest(body)
        try request(ops).applyRequest(to: &req, context: context)
        return String(decoding: req.body ?? [], as: UTF8.self)
    }

    // MARK: Headers

    func testHeaderOperations() throws {
        let chain = try request("""
            {"op":"header.add","name":"X-Tenant","value":"ignored"},
            {"op":"header.add","name":"X-New","value":"{{consumer.id}}"},
            {"op":"header.set","name":"Accept","value":"application/json"},
            {"op":"header.append","name":"X-Multi","value":"two"},
            {"op":"header.remove","name":"x-drop"},
            {"op":"header.rename","from":"X-Old","to":"X-Renamed"},
            {"op":"header.rename","from":"X-Absent","to":"X-Tenant"}
            """)
        var req = TransformableRequest(method: "GET", path: "/", headers: HTTPHeaders([
            ("X-Tenant", "acme"), ("Accept", "*/*"), ("accept", "text/html"), ("X-Multi", "one"), ("X-Drop", "a"),
            ("X-Old", "1"), ("X-Old", "2"), ("X-Renamed", "stale"),
        ]))
        XCTAssertEqual(try chain.applyRequest(to: &req, context: context), .untouched)
        XCTAssertEqual(req.headers, HTTPHeaders([
            ("X-Tenant", "acme"), ("Accept", "application/json"), ("X-Multi", "one"), ("X-New", "ann"),
            ("X-Multi", "two"), ("X-Renamed", "1"), ("X-Renamed", "2"),
        ]))
    }

    func testDynamicHeaderValueWithCRLFIsRefusedAtRunTime() throws {
        let chain = try request(#"{"op":"header.set","name":"X-Tenant","value":"t={{header.x-tenant}}"}"#)
        var ctx = context
        ctx.requestHeaders = HTTPHeaders([("X-Tenant", "a\r\nX-Admin: yes")])
        var req = TransformableRequest(method: "GET", path: "/")
        XCTAssertThrowsError(try chain.applyRequest(to: &req, context: ctx)) { error in
            let e = error as? TransformError
            XCTAssertEqual(e?.problem.status, 500)
            XCTAssertEqual(e?.problem.detail, #"rule set "t": the value rendered for header X-Tenant contains CR, LF or another control character"#)
            XCTAssertEqual(e?.ruleSet, "t")
        }
    }

    // MARK: Query, path, method

    func testQueryOperations() throws {
        let chain = try request("""
            {"op":"query.add","name":"a","value":"not added"},
            {"op":"query.add","name":"tenant","value":"{{header.x-tenant}}"},
            {"op":"query.set","name":"b","value":"x y"},
            {"op":"query.append","name":"a","value":"3"},
            {"op":"query.remove","name":"drop"},
            {"op":"query.rename","from":"old","to":"new"}
            """)
        var req = TransformableRequest(method: "GET", path: "/", rawQuery: "a=1&b=2&drop=x&b=9&old=o&new=stale")
        try chain.applyRequest(to: &req, context: context)
        XCTAssertEqual(req.rawQuery, "a=1&b=x%20y&new=o&tenant=acme&a=3")
    }

    func testUntouchedQueryKeepsItsBytes() throws {
        let chain = try request(#"{"op":"header.remove","name":"X-A"}"#)
        var req = TransformableRequest(method: "GET", path: "/", rawQuery: "q=a+b&x=%2f")
        try chain.applyRequest(to: &req, context: context)
        XCTAssertEqual(req.rawQuery, "q=a+b&x=%2f")
    }

    func testPathTemplateRegexAndMethod() throws {
        var req = TransformableRequest(method: "POST", path: "/v1/users/42")
        try request(#"{"op":"path.rewrite","template":"/internal/users/{{path.id}}/by/{{consumer.id}}"},{"op":"method.set","value":"put"}"#)
            .applyRequest(to: &req, context: context)
        XCTAssertEqual(req.path, "/internal/users/42/by/ann")
        XCTAssertEqual(req.method, "PUT")

        let regex = try request(#"{"op":"path.rewrite","regex":"^/v1/users/([0-9]+)(/.*)?$","replacement":"/api/people/$1$2?{{route}}$$"}"#)
        req.path = "/v1/users/7/orders"
        try regex.applyRequest(to: &req, context: context)
        XCTAssertEqual(req.path, "/api/people/7/orders?users$")
        req.path = "/v2/other"
        XCTAssertThrowsError(try regex.applyRequest(to: &req, context: context), "no match fails closed") {
            XCTAssertEqual(($0 as? TransformError)?.problem.status, 404)
            XCTAssertEqual(($0 as? TransformError)?.problem.type.hasSuffix("/rewrite-no-match"), true)
        }
        let passing = try request(#"{"op":"path.rewrite","regex":"^/v1/(.*)$","replacement":"/api/$1","on_no_match":"pass"}"#)
        try passing.applyRequest(to: &req, context: context)
        XCTAssertEqual(req.path, "/v2/other", "on_no_match pass: no match, no change")
    }

    func testRegexDotMatchesLineSeparators() throws {
        let regex = try request(#"{"op":"path.rewrite","regex":"^/v1/(.*)$","replacement":"/api/$1"}"#)
        for tail in ["admin;\u{2028}x", "a\u{2029}b", "a\u{85}b"] {
            var req = TransformableRequest(method: "GET", path: "/v1/" + tail)
            try regex.applyRequest(to: &req, context: context)
            XCTAssertEqual(req.path, "/api/" + tail)
        }
    }

    func testOnNoMatchIsValidated() {
        XCTAssertEqual(TransformFixture.errors(#"{"name":"a","type":"transform","phase":"request","operations":[{"op":"path.rewrite","regex":"^/a","replacement":"/b","on_no_match":"ignore"}]}"#),
                       [#"plugins/bad.json: /operations/0/on_no_match: must be "error" or "pass", found "ignore""#])
    }

    func testRewrittenPathMustStayAbsoluteAndClean() throws {
        var ctx = context
        ctx.pathParams = ["id": "1\n2"]
        var req = TransformableRequest(method: "GET", path: "/x")
        XCTAssertThrowsError(try request(#"{"op":"path.rewrite","template":"/u/{{path.id}}"}"#).applyRequest(to: &req, context: ctx)) {
            XCTAssertEqual(($0 as? TransformError)?.problem.status, 500)
        }
        XCTAssertEqual(TransformFixture.errors(#"{"name":"a","type":"transform","phase":"request","operations":[{"op":"path.rewrite","template":"{{path.id}}"}]}"#),
                       [#"plugins/bad.json: /operations/0/template: must start with "/""#])
    }

    // MARK: Body operations

    func testBodySetAddRemove() throws {
        XCTAssertEqual(try transformBody("""
            {"op":"body.set","path":"/owner/id","value":"{{consumer.id}}"},
            {"op":"body.set","path":"/tags/0","value":"first"},
            {"op":"body.set","path":"/tags/-","value":{"by":"{{consumer.groups}}"}},
            {"op":"body.add","path":"/name","value":"not overwritten"},
            {"op":"body.add","path":"/tags/1","value":"inserted"},
            {"op":"body.add","path":"/new","value":[1,2]},
            {"op":"body.remove","path":"/secret"},
            {"op":"body.remove","path":"/missing/deep"}
            """, #"{"name":"n","tags":["x","y"],"secret":1}"#),
            #"{"name":"n","tags":["first","inserted","y",{"by":["gold","beta"]}],"owner":{"id":"ann"},"new":[1,2]}"#)
    }

    func testBodyRenameMoveCopyWithEscapedPointers() throws {
        XCTAssertEqual(try transformBody("""
            {"op":"body.rename","path":"/a~1b","to":"ab"},
            {"op":"body.move","from":"/m~0n","path":"/nested/mn"},
            {"op":"body.copy","from":"/list/1","path":"/list/-"},
            {"op":"body.move","from":"/list/0","path":"/first"},
            {"op":"body.rename","path":"/missing","to":"x"}
            """, #"{"a/b":1,"m~n":2,"list":["p","q"],"z":0}"#),
            #"{"ab":1,"list":["q","q"],"z":0,"nested":{"mn":2},"first":"p"}"#)
    }

    func testAllowAndDenyLists() throws {
        let body = #"{"id":1,"name":"n","internal":{"cost":3},"items":[{"sku":"a","cost":1},{"sku":"b","cost":2}],"meta":{"a":1,"b":2}}"#
        XCTAssertEqual(try transformBody(#"{"op":"body.allow","fields":["id","/items/sku","/meta/b"]}"#, body),
                       #"{"id":1,"items":[{"sku":"a"},{"sku":"b"}],"meta":{"b":2}}"#)
        XCTAssertEqual(try transformBody(#"{"op":"body.deny","fields":["internal","/items/cost","/meta/a","/absent/x"]}"#, body),
                       #"{"id":1,"name":"n","items":[{"sku":"a"},{"sku":"b"}],"meta":{"b":2}}"#)
    }

    func testWrapAndUnwrap() throws {
        XCTAssertEqual(try transformBody(#"{"op":"body.wrap","path":"/data/item"}"#, #"[1,2]"#), #"{"data":{"item":[1,2]}}"#)
        XCTAssertEqual(try transformBody(#"{"op":"body.unwrap","path":"/data"}"#, #"{"data":{"x":1},"meta":{}}"#), #"{"x":1}"#)
        XCTAssertEqual(try transformBody(#"{"op":"body.unwrap","path":"/data"},{"op":"body.set","path":"/y","value":2}"#, #"{"other":1}"#),
                       #"{"other":1,"y":2}"#, "a missing unwrap target is skipped")
    }

    func testTypeMismatchesAreSkippedUnlessStrict() throws {
        let body = #"{"name":"text","list":[1]}"#
        XCTAssertEqual(try transformBody(#"{"op":"body.set","path":"/name/first","value":1},{"op":"body.set","path":"/list/x","value":1},{"op":"body.set","path":"/list/5","value":1},{"op":"body.set","path":"/ok","value":true}"#, body),
                       #"{"name":"text","list":[1],"ok":true}"#)
        var req = jsonRequest(body)
        XCTAssertThrowsError(try request(#"{"op":"body.set","path":"/name/first","value":1,"strict":true}"#).applyRequest(to: &req, context: context)) { error in
            let problem = (error as? TransformError)?.problem
            XCTAssertEqual(problem?.status, 422)
            XCTAssertEqual(problem?.detail, #"request body does not fit rule set "t": /name: expected an object or array, found string"#)
        }
        var status = 200
        var headers = HTTPHeaders([("Content-Type", "application/json")])
        var respBody: [UInt8]? = Array(body.utf8)
        XCTAssertThrowsError(try response(#"{"op":"body.remove","path":"/list/3","strict":true}"#)
            .applyResponse(status: &status, headers: &headers, body: &respBody, context: context)) { error in
            let problem = (error as? TransformError)?.problem
            XCTAssertEqual(problem?.status, 502)
            XCTAssertEqual(problem?.detail, #"upstream response body does not fit rule set "t": /list/3: not found"#)
        }
    }

    func testWholeBodyPointer() throws {
        XCTAssertEqual(try transformBody(#"{"op":"body.set","path":"","value":{"replaced":"{{request_id}}"}}"#, #"{"a":1}"#), #"{"replaced":"req-1"}"#)
    }

    // MARK: Safety

    func testNonJSONBodiesPassUntouched() throws {
        let chain = try request(#"{"op":"body.set","path":"/a","value":1},{"op":"header.set","name":"X-A","value":"1"}"#)
        var req = TransformableRequest(method: "POST", path: "/", headers: HTTPHeaders([("Content-Type", "text/plain")]), body: Array("{}".utf8))
        XCTAssertFalse(chain.needsRequestBody(req, context: context))
        XCTAssertEqual(try chain.applyRequest(to: &req, context: context), .untouched)
        XCTAssertEqual(req.body, Array("{}".utf8))
        XCTAssertEqual(req.headers["x-a"], "1", "header operations still run")

        var json = jsonRequest("{}")
        XCTAssertTrue(chain.needsRequestBody(json, context: context))
        json.contentType = "application/vnd.api+json; charset=utf-8"
        XCTAssertTrue(chain.needsRequestBody(json, context: context))
        var empty = TransformableRequest(method: "POST", path: "/", headers: HTTPHeaders([("Content-Type", "application/json")]), body: [])
        XCTAssertEqual(try chain.applyRequest(to: &empty, context: context), .untouched, "an empty body is left alone")
        XCTAssertFalse(try request(#"{"op":"header.set","name":"X-A","value":"1"}"#).needsRequestBody(json, context: context))
    }

    func testContentLengthIsReportedAndUpdated() throws {
        var req = jsonRequest(#"{"a":1}"#)
        let outcome = try request(#"{"op":"body.set","path":"/bb","value":"xyz"}"#).applyRequest(to: &req, context: context)
        XCTAssertEqual(String(decoding: req.body ?? [], as: UTF8.self), #"{"a":1,"bb":"xyz"}"#)
        XCTAssertEqual(outcome, .replaced(byteCount: 18))
        XCTAssertEqual(req.headers["content-length"], "18")
    }

    func testInvalidJSONBodies() throws {
        var req = jsonRequest(#"{"a":"#)
        XCTAssertThrowsError(try request(#"{"op":"body.remove","path":"/a"}"#).applyRequest(to: &req, context: context)) { error in
            let problem = (error as? TransformError)?.problem
            XCTAssertEqual(problem?.status, 400)
            XCTAssertEqual(problem?.type, "https://portcullis.dev/problems/transform-invalid-json")
            XCTAssertTrue(problem?.detail.hasPrefix("request body is not valid JSON: invalid JSON at line 1") ?? false, problem?.detail ?? "")
        }
        var status = 200
        var headers = HTTPHeaders([("Content-Type", "application/json")])
        var body: [UInt8]? = Array("<html>".utf8)
        XCTAssertThrowsError(try response(#"{"op":"body.remove","path":"/a"}"#).applyResponse(status: &status, headers: &headers, body: &body, context: context)) { error in
            XCTAssertEqual((error as? TransformError)?.problem.status, 502)
            XCTAssertTrue((error as? TransformError)?.problem.detail.hasPrefix("upstream response body is not valid JSON: ") ?? false)
        }
    }

    func testBodySizeLimits() throws {
        var req = jsonRequest(#"{"a":"0123456789"}"#)
        let small = try request(#"{"op":"body.remove","path":"/a"}"#, maxBody: 10)
        XCTAssertEqual(small.requestBodyNeed(req, context: context), BodyLimit(bytes: 10, ruleSet: "t"))
        XCTAssertThrowsError(try small.applyRequest(to: &req, context: context)) { error in
            let problem = (error as? TransformError)?.problem
            XCTAssertEqual(problem?.status, 413)
            XCTAssertEqual(problem?.detail, #"request body exceeds the 10 byte limit of rule set "t""#)
        }
        var growing = jsonRequest(#"{}"#)
        XCTAssertThrowsError(try request(#"{"op":"body.set","path":"/a","value":"0123456789"}"#, maxBody: 10).applyRequest(to: &growing, context: context)) {
            XCTAssertEqual(($0 as? TransformError)?.problem.status, 413, "the transformed body is limited too")
        }
        var status = 200
        var headers = HTTPHeaders([("Content-Type", "application/json")])
        var body: [UInt8]? = Array(#"{"a":"0123456789"}"#.utf8)
        XCTAssertThrowsError(try response(#"{"op":"body.remove","path":"/a"}"#, maxBody: 10).applyResponse(status: &status, headers: &headers, body: &body, context: context)) { error in
            XCTAssertEqual((error as? TransformError)?.problem.status, 502)
            XCTAssertEqual((error as? TransformError)?.problem.detail, #"upstream response body exceeds the 10 byte limit of rule set "t""#)
        }
    }

    // MARK: Response phase

    func testStatusMapAndResponseBody() throws {
        let chain = try response("""
            {"op":"status.map","from":["4xx"],"to":400},
            {"op":"status.map","from":"500-599","to":503,"content_type":"application/problem+json","body":{"status":"{{status}}","id":"{{request_id}}"}},
            {"op":"header.set","name":"X-Status","value":"{{status}}"}
            """)
        var status = 418
        var headers = HTTPHeaders([("Content-Type", "text/plain"), ("Content-Length", "5")])
        var body: [UInt8]? = Array("teapot".utf8)
        XCTAssertFalse(chain.needsResponseBody(status: status, headers: headers, context: context))
        XCTAssertEqual(try chain.applyResponse(status: &status, headers: &headers, body: &body, context: context), .untouched)
        XCTAssertEqual(status, 400)
        XCTAssertEqual(headers["x-status"], "400")
        XCTAssertEqual(body, Array("teapot".utf8))

        status = 502
        XCTAssertTrue(chain.needsResponseBody(status: status, headers: headers, context: context))
        let outcome = try chain.applyResponse(status: &status, headers: &headers, body: &body, context: context)
        XCTAssertEqual(status, 503)
        XCTAssertEqual(String(decoding: body ?? [], as: UTF8.self), #"{"status":502,"id":"req-1"}"#)
        XCTAssertEqual(outcome, .replaced(byteCount: 27))
        XCTAssertEqual(headers["content-type"], "application/problem+json")
        XCTAssertEqual(headers["content-length"], "27")
    }

    func testCompressedResponsesAreNotParsed() throws {
        let chain = try response(#"{"op":"body.remove","path":"/a"}"#)
        var status = 200
        var headers = HTTPHeaders([("Content-Type", "application/json"), ("Content-Encoding", "gzip")])
        var body: [UInt8]? = [0x1f, 0x8b, 0x08]
        XCTAssertFalse(chain.needsResponseBody(status: status, headers: headers, context: context))
        XCTAssertEqual(try chain.applyResponse(status: &status, headers: &headers, body: &body, context: context), .untouched)
        XCTAssertEqual(body, [0x1f, 0x8b, 0x08])
    }

    func testResponseWithoutBufferedBodyIsUntouched() throws {
        var status = 200
        var headers = HTTPHeaders([("Content-Type", "application/json")])
        var body: [UInt8]? = nil
        XCTAssertEqual(try response(#"{"op":"body.wrap","path":"/data"}"#).applyResponse(status: &status, headers: &headers, body: &body, context: context), .untouched)
        XCTAssertNil(body)
    }

    // MARK: Conditions

    func testConditions() throws {
        let chain = try request(#"{"op":"header.set","name":"X-Hit","value":"1"}"#,
                                condition: #"{"methods":["post","PUT"],"headers":{"X-Tenant":"acme","X-Debug":false,"X-Key":true},"claims":{"tier":3,"roles":"admin"},"consumer_groups":["silver","gold"]}"#)
        func hit(method: String = "POST", headers: [(String, String)] = [("X-Tenant", "acme"), ("X-Key", "k")], context ctx: TemplateContext? = nil) throws -> Bool {
            var req = TransformableRequest(method: method, path: "/", headers: HTTPHeaders(headers))
            try chain.applyRequest(to: &req, context: ctx ?? context)
            return req.headers["x-hit"] == "1"
        }
        XCTAssertTrue(try hit())
        XCTAssertFalse(try hit(method: "GET"))
        XCTAssertFalse(try hit(headers: [("X-Tenant", "other"), ("X-Key", "k")]))
        XCTAssertFalse(try hit(headers: [("X-Tenant", "acme")]))
        XCTAssertFalse(try hit(headers: [("X-Tenant", "acme"), ("X-Key", "k"), ("X-Debug", "1")]))
        var noClaims = context
        noClaims.claims = nil
        XCTAssertFalse(try hit(context: noClaims))
        var otherRoles = context
        otherRoles.claims?["roles"] = ["dev"]
        XCTAssertFalse(try hit(context: otherRoles))
        var otherGroups = context
        otherGroups.consumerGroups = ["bronze"]
        XCTAssertFalse(try hit(context: otherGroups))
    }

    func testStatusConditionsAndOrder() throws {
        let set = try TransformFixture.set([("plugins/x.json", """
            [{"name":"errors","type":"transform","phase":"response","condition":{"status":["4xx",500,"502-504"]},
              "operations":[{"op":"header.append","name":"X-Seen","value":"errors"}]},
             {"name":"all","type":"transform","phase":"response",
              "operations":[{"op":"header.append","name":"X-Seen","value":"all"}]}]
            """)])
        func seen(_ code: Int, order: [String]) throws -> [String] {
            var status = code
            var headers = HTTPHeaders()
            var body: [UInt8]? = nil
            try set.applyResponse(order, status: &status, headers: &headers, body: &body, context: context)
            return headers.values("x-seen")
        }
        XCTAssertEqual(try seen(404, order: ["errors", "all"]), ["errors", "all"])
        XCTAssertEqual(try seen(404, order: ["all", "errors"]), ["all", "errors"])
        XCTAssertEqual(try seen(500, order: ["errors"]), ["errors"])
        XCTAssertEqual(try seen(503, order: ["errors"]), ["errors"])
        XCTAssertEqual(try seen(501, order: ["errors"]), [])
        XCTAssertEqual(try seen(200, order: ["errors", "all"]), ["all"])
    }
}
