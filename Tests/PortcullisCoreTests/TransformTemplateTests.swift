import XCTest
import PortcullisCore
@testable import PortcullisPlugins

final class TransformTemplateTests: XCTestCase {
    private func template(_ text: String) -> Template {
        guard case .success(let t) = Template.compile(text) else { fatalError("bad test template \(text)") }
        return t
    }

    static let context = TemplateContext(
        consumerId: "ann", consumerGroups: ["gold", "beta"],
        claims: JSONObject([("sub", "ann"), ("tier", 3), ("roles", ["admin", "dev"]), ("email_verified", true)]),
        pathParams: ["id": "42"], requestHeaders: HTTPHeaders([("X-Tenant", "acme"), ("Accept", "application/json")]),
        queryItems: [("page", "2"), ("q", "a b")], method: "POST", path: "/v1/users/42",
        requestId: "req-1", route: "users", now: Date(timeIntervalSince1970: 1_700_000_000))

    func testCompileSplitsPartsOnce() {
        XCTAssertEqual(template("id={{consumer.id}};").parts, [.literal("id="), .variable(.consumerId), .literal(";")])
        XCTAssertEqual(template("{{ header.X-Tenant }}").parts, [.variable(.header("x-tenant"))])
        XCTAssertTrue(template("plain").isStatic)
        XCTAssertFalse(template("{{route}}").isStatic)
        XCTAssertEqual(template("").parts, [])
    }

    func testCompileErrors() {
        XCTAssertEqual(Template.compile("{{consumer.idd}}"), .failure(TemplateSyntaxError(message: "unknown template variable \"consumer.idd\"")))
        XCTAssertEqual(Template.compile("a {{route"), .failure(TemplateSyntaxError(message: "unclosed \"{{\" in template \"a {{route\"")))
        XCTAssertEqual(Template.compile("{{claims.}}"), .failure(TemplateSyntaxError(message: "template variable \"claims.\" needs a name after \"claims.\"")))
    }

    func testEveryVariableRendersAsText() {
        let c = Self.context
        XCTAssertEqual(template("{{consumer.id}}").render(c), "ann")
        XCTAssertEqual(template("{{consumer.groups}}").render(c), "gold,beta")
        XCTAssertEqual(template("{{claims.sub}}/{{claims.tier}}/{{claims.roles}}/{{claims.email_verified}}").render(c),
                       #"ann/3/["admin","dev"]/true"#)
        XCTAssertEqual(template("/users/{{path.id}}").render(c), "/users/42")
        XCTAssertEqual(template("{{header.x-tenant}}|{{header.missing}}|").render(c), "acme||")
        XCTAssertEqual(template("{{query.page}} {{query.q}}").render(c), "2 a b")
        XCTAssertEqual(template("{{request_id}} {{route}} {{method}} {{path}}").render(c), "req-1 users POST /v1/users/42")
        XCTAssertEqual(template("{{timestamp}}").render(c), "2023-11-14T22:13:20Z")
        XCTAssertEqual(template("{{status}}").render(c, status: 404), "404")
        XCTAssertEqual(template("{{consumer.id}}").render(TemplateContext()), "", "anonymous renders empty")
    }

    func testWholeValueTemplatesKeepJSONTypes() {
        let c = Self.context
        XCTAssertEqual(template("{{consumer.groups}}").renderJSON(c), ["gold", "beta"])
        XCTAssertEqual(template("{{claims.tier}}").renderJSON(c), 3)
        XCTAssertEqual(template("{{claims.roles}}").renderJSON(c), ["admin", "dev"])
        XCTAssertEqual(template("{{status}}").renderJSON(c, status: 201), 201)
        XCTAssertEqual(template("{{claims.absent}}").renderJSON(c), .null)
        XCTAssertEqual(template("tier {{claims.tier}}").renderJSON(c), "tier 3")
    }

    func testJSONTemplateCompilesNestedStrings() throws {
        let value = try JSONCodec.parse(#"{"a":["{{consumer.id}}",1],"b":{"c":"static"},"d":"{{bad.var}}"}"#)
        guard case .failure(let f) = JSONTemplate.compile(value) else { return XCTFail("expected failure") }
        XCTAssertEqual(f.pointer, "/d")
        XCTAssertEqual(f.error.message, "unknown template variable \"bad.var\"")

        let ok = try JSONCodec.parse(#"{"a":["{{consumer.id}}",1],"b":{"c":"static"}}"#)
        guard case .success(let t) = JSONTemplate.compile(ok) else { return XCTFail("expected success") }
        XCTAssertEqual(t.render(Self.context), try JSONCodec.parse(#"{"a":["ann",1],"b":{"c":"static"}}"#))
        guard case .success(let literal) = JSONTemplate.compile(try JSONCodec.parse(#"{"x":[1,"y"]}"#)) else { return XCTFail() }
        XCTAssertTrue(literal.isLiteral, "values without placeholders stay literal")
    }

    func testRFC3339() {
        XCTAssertEqual(RFC3339.format(Date(timeIntervalSince1970: 0)), "1970-01-01T00:00:00Z")
        XCTAssertEqual(RFC3339.format(Date(timeIntervalSince1970: 951_782_400)), "2000-02-29T00:00:00Z")
        XCTAssertEqual(RFC3339.format(Date(timeIntervalSince1970: 4_102_444_799.9)), "2099-12-31T23:59:59Z")
        XCTAssertEqual(RFC3339.format(Date(timeIntervalSince1970: -1)), "1969-12-31T23:59:59Z")
    }
}
