import XCTest
import PortcullisCore
@testable import PortcullisPlugins

/// Issue 13 item 3: `replace`, `host.set`, `body.append`, `body.template`, cookie operations,
/// the condition language and the new template variables, conversions and escape.
final class TransformRound2OpsTests: XCTestCase {
    let context = TransformTemplateTests.context

    private func chain(_ phase: String, _ ops: String, condition: String? = nil) throws -> TransformChain {
        let cond = condition.map { #","condition":"# + $0 } ?? ""
        return try TransformFixture.chain(#"{"name":"t","type":"transform","phase":"\#(phase)"\#(cond),"operations":[\#(ops)]}"#)
    }

    private func jsonRequest(_ body: String) -> TransformableRequest {
        TransformableRequest(method: "POST", path: "/p", headers: HTTPHeaders([("Content-Type", "application/json")]), body: Array(body.utf8))
    }

    private func body(_ ops: String, _ json: String) throws -> String {
        var req = jsonRequest(json)
        try chain("request", ops).applyRequest(to: &req, context: context)
        return String(decoding: req.body ?? [], as: UTF8.self)
    }

    // MARK: replace

    func testReplaceOnlyWhenPresent() throws {
        let c = try chain("request", """
            {"op":"header.replace","name":"X-Tenant","value":"t-{{header.X-Tenant}}"},
            {"op":"header.replace","name":"X-Absent","value":"no"},
            {"op":"query.replace","name":"page","value":"9"},
            {"op":"query.replace","name":"absent","value":"no"}
            """)
        var req = TransformableRequest(method: "GET", path: "/", rawQuery: "page=1&page=2&q=x", headers: HTTPHeaders([("X-Tenant", "acme")]))
        try c.applyRequest(to: &req, context: context)
        XCTAssertEqual(req.headers["x-tenant"], "t-acme")
        XCTAssertNil(req.headers["x-absent"])
        XCTAssertEqual(req.rawQuery, "page=9&q=x")
        XCTAssertEqual(try body(#"{"op":"body.replace","path":"/a","value":2},{"op":"body.replace","path":"/b","value":3}"#, #"{"a":1}"#), #"{"a":2}"#)
        var strict = jsonRequest("{}")
        XCTAssertThrowsError(try chain("request", #"{"op":"body.replace","path":"/b","value":3,"strict":true}"#).applyRequest(to: &strict, context: context)) {
            XCTAssertEqual(($0 as? TransformError)?.problem.status, 422)
        }
    }

    // MARK: append

    func testAppendTurnsAValueIntoAnArray() throws {
        let op = #"{"op":"body.append","path":"/tags","value":"{{consumer.id}}"}"#
        XCTAssertEqual(try body(op, #"{"tags":["a"]}"#), #"{"tags":["a","ann"]}"#)
        XCTAssertEqual(try body(op, #"{"tags":"a"}"#), #"{"tags":["a","ann"]}"#)
        XCTAssertEqual(try body(op, #"{}"#), #"{"tags":["ann"]}"#)
        XCTAssertEqual(try body(#"{"op":"body.append","path":"/n/list","value":{"x":1}}"#, #"{}"#), #"{"n":{"list":[{"x":1}]}}"#)
    }

    // MARK: host

    func testHostSet() throws {
        var req = TransformableRequest(method: "GET", path: "/")
        try chain("request", #"{"op":"host.set","value":"api.internal:8443"}"#).applyRequest(to: &req, context: context)
        XCTAssertEqual(req.host, "api.internal:8443")
        var ctx = context
        ctx.requestHeaders = HTTPHeaders([("X-Tenant", "bad host")])
        var refused = TransformableRequest(method: "GET", path: "/")
        XCTAssertThrowsError(try chain("request", #"{"op":"host.set","value":"{{header.X-Tenant}}.example"}"#).applyRequest(to: &refused, context: ctx)) {
            XCTAssertEqual(($0 as? TransformError)?.problem.status, 500)
        }
        XCTAssertEqual(TransformFixture.errors(#"{"name":"h","type":"transform","phase":"request","operations":[{"op":"host.set","value":"a b"}]}"#),
                       ["plugins/bad.json: /operations/0/value: not a host name, IP address or host:port"])
        XCTAssertEqual(TransformFixture.errors(#"{"name":"h","type":"transform","phase":"request","operations":[{"op":"header.set","name":"Host","value":"a"}]}"#),
                       [#"plugins/bad.json: /operations/0/name: header "Host" is managed by the gateway and cannot be transformed (use host.set)"#])
        XCTAssertEqual(TransformFixture.errors(#"{"name":"h","type":"transform","phase":"response","operations":[{"op":"host.set","value":"a"}]}"#),
                       [#"plugins/bad.json: /operations/0/op: operation "host.set" is only allowed in the request phase"#])
    }

    // MARK: whole body

    func testBodyTemplateReplacesAnyBody() throws {
        var req = TransformableRequest(method: "POST", path: "/", headers: HTTPHeaders([("Content-Type", "text/csv"), ("Content-Length", "3")]),
                                       body: Array("a,b".utf8))
        let outcome = try chain("request", #"{"op":"body.template","template":"id={{consumer.id}}","content_type":"application/x-www-form-urlencoded"}"#)
            .applyRequest(to: &req, context: context)
        XCTAssertEqual(outcome, .replaced(byteCount: 6))
        XCTAssertEqual(String(decoding: req.body ?? [], as: UTF8.self), "id=ann")
        XCTAssertEqual(req.headers["content-type"], "application/x-www-form-urlencoded")
        XCTAssertEqual(req.headers["content-length"], "6")

        var status = 500
        var headers = HTTPHeaders([("Content-Type", "text/html"), ("Content-Encoding", "gzip")])
        var responseBody: [UInt8]? = nil
        let c = try chain("response", """
            {"op":"body.template","template":"{\\"error\\":\\"{{status}}\\"}","content_type":"application/json"},
            {"op":"body.set","path":"/id","value":"{{request_id}}"}
            """)
        XCTAssertTrue(c.needsResponseBody(status: status, headers: headers, context: context))
        XCTAssertFalse(try c.appliedResponseBodyUse(status: status, headers: headers, context: context).readsOriginal)
        try c.applyResponse(status: &status, headers: &headers, body: &responseBody, context: context)
        XCTAssertEqual(String(decoding: responseBody ?? [], as: UTF8.self), #"{"error":"500","id":"req-1"}"#)
        XCTAssertEqual(headers["content-type"], "application/json")
        XCTAssertNil(headers["content-encoding"])
    }

    // MARK: cookies

    func testCookieOperations() throws {
        var req = TransformableRequest(method: "GET", path: "/", headers: HTTPHeaders([("Cookie", "a=1; session=abc; b=2")]))
        try chain("request", """
            {"op":"cookie.remove","name":"session"},
            {"op":"cookie.set","name":"a","value":"{{consumer.id}}"},
            {"op":"cookie.set","name":"c","value":"3"}
            """).applyRequest(to: &req, context: context)
        XCTAssertEqual(req.headers["cookie"], "a=ann; b=2; c=3")

        var status = 200
        var headers = HTTPHeaders([("Set-Cookie", "tracking=x; Path=/"), ("Set-Cookie", "keep=1"), ("Set-Cookie", "sid=old")])
        var none: [UInt8]? = nil
        try chain("response", """
            {"op":"cookie.remove","name":"tracking"},
            {"op":"cookie.set","name":"sid","value":"{{request_id}}","attributes":"Path=/; HttpOnly; Secure"}
            """).applyResponse(status: &status, headers: &headers, body: &none, context: context)
        XCTAssertEqual(headers.values("set-cookie"), ["keep=1", "sid=req-1; Path=/; HttpOnly; Secure"])

        var ctx = context
        ctx.requestHeaders = HTTPHeaders([("X-Tenant", "a;b")])
        var bad = TransformableRequest(method: "GET", path: "/")
        XCTAssertThrowsError(try chain("request", #"{"op":"cookie.set","name":"t","value":"{{header.X-Tenant}}"}"#).applyRequest(to: &bad, context: ctx)) {
            XCTAssertEqual(($0 as? TransformError)?.problem.type, "https://portcullis.dev/problems/transform-unsafe-value")
        }
    }

    // MARK: conditions

    private func applies(_ condition: String, method: String = "GET", path: String = "/v1/x", rawQuery: String = "",
                         headers: [(String, String)] = [], context ctx: TemplateContext? = nil) throws -> Bool {
        let c = try chain("request", #"{"op":"header.set","name":"X-Hit","value":"1"}"#, condition: condition)
        var req = TransformableRequest(method: method, path: path, rawQuery: rawQuery, headers: HTTPHeaders(headers))
        try c.applyRequest(to: &req, context: ctx ?? context)
        return req.headers["x-hit"] == "1"
    }

    func testValueRules() throws {
        XCTAssertTrue(try applies(#"{"headers":{"User-Agent":{"regex":"^curl/"}}}"#, headers: [("User-Agent", "curl/8.0")]))
        XCTAssertFalse(try applies(#"{"headers":{"User-Agent":{"regex":"^curl/"}}}"#, headers: [("User-Agent", "wget")]))
        XCTAssertFalse(try applies(#"{"headers":{"User-Agent":{"regex":"^curl/"}}}"#))
        XCTAssertTrue(try applies(#"{"headers":{"X-Env":["dev","test"]}}"#, headers: [("X-Env", "test")]))
        XCTAssertFalse(try applies(#"{"headers":{"X-Env":{"any_of":["dev","test"]}}}"#, headers: [("X-Env", "prod")]))
        XCTAssertTrue(try applies(#"{"headers":{"X-Env":{"not":"prod"}}}"#, headers: [("X-Env", "dev")]))
        XCTAssertTrue(try applies(#"{"headers":{"X-Env":{"not":"prod"}}}"#), "an absent header is not prod")
        XCTAssertFalse(try applies(#"{"headers":{"X-Env":{"not":{"present":true}}}}"#, headers: [("X-Env", "dev")]))
        XCTAssertTrue(try applies(#"{"query":{"debug":true,"page":{"regex":"^[0-9]+$"}}}"#, rawQuery: "debug&page=12"))
        XCTAssertFalse(try applies(#"{"query":{"page":{"regex":"^[0-9]+$"}}}"#, rawQuery: "page=x"))
        XCTAssertTrue(try applies(#"{"path":{"regex":"^/v1/"}}"#))
        XCTAssertFalse(try applies(#"{"path":{"regex":"^/v2/"}}"#))
        XCTAssertTrue(try applies(#"{"cookies":{"beta":"1"}}"#, headers: [("Cookie", "a=b; beta=1")]))
        XCTAssertFalse(try applies(#"{"cookies":{"beta":"1"}}"#, headers: [("Cookie", "beta=0")]))
        XCTAssertTrue(try applies(#"{"consumer":{"any_of":["ann","bob"]}}"#))
        var anonymous = context
        anonymous.consumerId = nil
        XCTAssertTrue(try applies(#"{"consumer":false}"#, context: anonymous))
        XCTAssertFalse(try applies(#"{"consumer":true}"#, context: anonymous))
        XCTAssertTrue(try applies(#"{"claims":{"sub":{"regex":"^a"},"roles":{"any_of":["ops","dev"]}}}"#))
        XCTAssertFalse(try applies(#"{"claims":{"roles":{"not":"admin"}}}"#), "no element of the array may be admin")
        XCTAssertTrue(try applies(#"{"claims":{"tier":3,"email_verified":true}}"#), "scalars keep their equality meaning")
    }

    func testClientIPNetworks() throws {
        var ctx = context
        ctx.clientIP = "10.1.2.3"
        XCTAssertTrue(try applies(#"{"client_ip":"10.0.0.0/8"}"#, context: ctx))
        XCTAssertFalse(try applies(#"{"client_ip":["192.168.0.0/16","127.0.0.1"]}"#, context: ctx))
        XCTAssertTrue(try applies(#"{"client_ip":{"not":["192.168.0.0/16"]}}"#, context: ctx))
        ctx.clientIP = "::ffff:10.9.9.9"
        XCTAssertTrue(try applies(#"{"client_ip":"10.0.0.0/8"}"#, context: ctx), "an IPv4-mapped address is its IPv4 address")
        ctx.clientIP = "2001:db8::1"
        XCTAssertTrue(try applies(#"{"client_ip":"2001:db8::/32"}"#, context: ctx))
        XCTAssertFalse(try applies(#"{"client_ip":"10.0.0.0/8"}"#, context: ctx))
        ctx.clientIP = "unix:"
        XCTAssertFalse(try applies(#"{"client_ip":"0.0.0.0/0"}"#, context: ctx))
        XCTAssertTrue(try applies(#"{"client_ip":{"not":"0.0.0.0/0"}}"#, context: ctx))
    }

    func testAnyAndNot() throws {
        let condition = #"{"any":[{"methods":"POST"},{"headers":{"X-Force":true}}],"not":{"query":{"dry_run":true}}}"#
        XCTAssertTrue(try applies(condition, method: "POST"))
        XCTAssertTrue(try applies(condition, headers: [("X-Force", "1")]))
        XCTAssertFalse(try applies(condition))
        XCTAssertFalse(try applies(condition, method: "POST", rawQuery: "dry_run=1"))
    }

    func testConditionErrorsAreReportedWithPointers() {
        let errors = TransformFixture.errors("""
            {"name":"c","type":"transform","phase":"request",
             "condition":{"headers":{"A":{"regex":"("}},"client_ip":["10.0.0.0/33"],"query":{"q":{"equals":"a","not":"b"}},
                          "any":[],"cookies":{"x":5}},
             "operations":[{"op":"header.set","name":"X","value":"1"}]}
            """)
        XCTAssertTrue(errors.contains(#"plugins/bad.json: /condition/headers/A/regex: invalid regular expression "(""#), "\(errors)")
        XCTAssertTrue(errors.contains(#"plugins/bad.json: /condition/client_ip/0: invalid IP address or CIDR network "10.0.0.0/33""#), "\(errors)")
        XCTAssertTrue(errors.contains(#"plugins/bad.json: /condition/query/q: give exactly one of "equals", "any_of", "regex", "not", "present""#), "\(errors)")
        XCTAssertTrue(errors.contains("plugins/bad.json: /condition/any: at least one condition is required"), "\(errors)")
        XCTAssertTrue(errors.contains { $0.hasPrefix("plugins/bad.json: /condition/cookies/x: expected true (present)") }, "\(errors)")
    }

    func testPathConditionAfterARewriteCouldApply() throws {
        let set = try TransformFixture.set([("plugins/s.json", """
            [{"name":"r","type":"transform","phase":"request","operations":[{"op":"path.rewrite","template":"/v2/x"}]},
             {"name":"b","type":"transform","phase":"request","condition":{"path":{"regex":"^/v2/"}},"operations":[{"op":"body.set","path":"/v","value":2}]}]
            """)])
        let c = try set.chain(["r", "b"])
        var req = jsonRequest("{}")
        req.path = "/v1/x"
        XCTAssertTrue(c.needsRequestBody(req, context: context))
        try c.applyRequest(to: &req, context: context)
        XCTAssertEqual(String(decoding: req.body ?? [], as: UTF8.self), #"{"v":2}"#)
    }

    // MARK: templates

    private func render(_ text: String, _ ctx: TemplateContext? = nil) -> String {
        guard case .success(let t) = Template.compile(text) else { return "compile error" }
        return t.render(ctx ?? context)
    }

    private func renderJSON(_ text: String, _ ctx: TemplateContext? = nil) -> JSONValue? {
        guard case .success(let t) = Template.compile(text) else { return nil }
        return t.renderJSON(ctx ?? context)
    }

    func testNewVariablesAndEscape() {
        var ctx = context
        ctx.clientIP = "203.0.113.9"
        ctx.host = "api.example.com"
        ctx.scheme = "https"
        ctx.requestHeaders = HTTPHeaders([("Cookie", "sid=abc; theme=\"dark\"")])
        XCTAssertEqual(render("{{client_ip}} {{host}} {{scheme}} {{cookie.sid}} {{cookie.theme}} [{{cookie.none}}]", ctx),
                       "203.0.113.9 api.example.com https abc dark []")
        XCTAssertEqual(render("{{time.unix}} {{time.unix_ms}}"), "1700000000 1700000000000")
        XCTAssertEqual(render(#"\{{literal}} and {{route}}"#), "{{literal}} and users")
        XCTAssertEqual(render(#"a\{{b"#), "a{{b")
        XCTAssertEqual(Template.compile("{{query.n | hex}}"),
                       .failure(TemplateSyntaxError(message: "unknown conversion \"hex\" (known: number, boolean, string)")))
    }

    func testTypedConversions() {
        var ctx = context
        ctx.queryItems = [("n", "42"), ("f", "2.5"), ("b", "true"), ("z", "0"), ("x", "abc")]
        XCTAssertEqual(renderJSON("{{query.n | number}}", ctx), .int(42))
        XCTAssertEqual(renderJSON("{{ query.f|number }}", ctx), .double(2.5))
        XCTAssertEqual(renderJSON("{{query.b | boolean}}", ctx), .bool(true))
        XCTAssertEqual(renderJSON("{{query.z | boolean}}", ctx), .bool(false))
        XCTAssertEqual(renderJSON("{{query.x | number}}", ctx), .null)
        XCTAssertEqual(renderJSON("{{query.missing | number}}", ctx), .null)
        XCTAssertEqual(renderJSON("{{claims.tier | string}}", ctx), .string("3"))
        XCTAssertEqual(renderJSON("{{time.unix}}", ctx), .int(1_700_000_000))
        XCTAssertEqual(render("n={{query.n | number}}", ctx), "n=42")
    }

    // MARK: form bodies

    func testFormFieldOperations() throws {
        let c = try chain("request", """
            {"op":"form.remove","name":"password"},
            {"op":"form.rename","from":"user","to":"username"},
            {"op":"form.set","name":"tenant","value":"{{consumer.id}}"},
            {"op":"form.replace","name":"absent","value":"never"},
            {"op":"form.add","name":"note","value":"kept"},
            {"op":"form.append","name":"tag","value":"a b"}
            """)
        var req = TransformableRequest(method: "POST", path: "/",
                                       headers: HTTPHeaders([("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"), ("Content-Length", "36")]),
                                       body: Array("user=ann&password=s3cret&note=x&tag=1".utf8))
        XCTAssertTrue(c.needsRequestBody(req, context: context))
        let outcome = try c.applyRequest(to: &req, context: context)
        let text = "username=ann&note=x&tag=1&tenant=ann&tag=a%20b"
        XCTAssertEqual(String(decoding: req.body ?? [], as: UTF8.self), text)
        XCTAssertEqual(outcome, .replaced(byteCount: text.utf8.count))
        XCTAssertEqual(req.headers["content-length"], "\(text.utf8.count)")

        // A JSON body, or a form body with a content coding, is no form.
        let json = TransformableRequest(method: "POST", path: "/", headers: HTTPHeaders([("Content-Type", "application/json")]), body: Array("{}".utf8))
        XCTAssertFalse(c.needsRequestBody(json, context: context))
        let gzip = TransformableRequest(method: "POST", path: "/", headers: HTTPHeaders([("Content-Type", "application/x-www-form-urlencoded"),
                                                                                          ("Content-Encoding", "gzip")]))
        XCTAssertFalse(c.needsRequestBody(gzip, context: context))
        XCTAssertEqual(TransformFixture.errors(#"{"name":"f","type":"transform","phase":"response","operations":[{"op":"form.set","name":"a","value":"1"}]}"#),
                       [#"plugins/bad.json: /operations/0/op: operation "form.set" is only allowed in the request phase"#])
    }
}
