import XCTest
@testable import PortcullisCore

final class RouterTests: XCTestCase {
    private func route(_ name: String, _ path: RouteMatch.PathRule, methods: [String] = [], hosts: [String] = [],
                       headers: [(name: String, rule: RouteMatch.ValueRule)] = [],
                       query: [(name: String, rule: RouteMatch.ValueRule)] = [], index: Int) -> RouteConfig {
        RouteConfig(name: name, match: RouteMatch(path: path, hosts: hosts, methods: methods, headers: headers, query: query),
                    upstream: "u", index: index)
    }

    private func matchedName(_ routes: [RouteConfig], _ request: GatewayRequest) -> String? {
        if case .matched(let m) = Router(routes: routes).route(request) { return routes[m.routeIndex].name }
        return nil
    }

    func testExactBeatsPrefixAndLiteralBeatsParam() {
        let routes = [
            route("prefix", .prefix("/users/"), index: 0),
            route("param", .exact("/users/{id}"), index: 1),
            route("literal", .exact("/users/me"), index: 2),
        ]
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/users/me")), "literal")
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/users/42")), "param")
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/users/42/orders")), "prefix")
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/users")), "prefix")
    }

    func testLongerPrefixWinsAndTiesGoToDeclarationOrder() {
        let routes = [
            route("short", .prefix("/api/"), index: 0),
            route("long", .prefix("/api/v2/"), index: 1),
            route("first", .prefix("/dup/"), index: 2),
            route("second", .prefix("/dup/"), index: 3),
        ]
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/api/v2/things")), "long")
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/api/v1/things")), "short")
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/dup/x")), "first")
    }

    /// Literal segments are told apart by their bytes: same length, same prefix, a byte apart;
    /// composed and decomposed `é` (canonically equal `String`s) are different segments.
    func testLiteralSegmentsCompareByBytes() {
        let routes = [
            route("abc", .exact("/segment-abc/x"), index: 0),
            route("abd", .exact("/segment-abd/x"), index: 1),
            route("composed", .exact("/caf\u{e9}"), index: 2),
        ]
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/segment-abd/x")), "abd")
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/segment-abc/x")), "abc")
        XCTAssertNil(matchedName(routes, GatewayRequest(method: "GET", path: "/segment-abe/x")))
        XCTAssertNil(matchedName(routes, GatewayRequest(method: "GET", path: "/segment-ab/x")))
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/caf\u{e9}")), "composed")
        XCTAssertNil(matchedName(routes, GatewayRequest(method: "GET", path: "/cafe\u{301}")))
    }

    /// Children of a trie node are found by comparison up to `Node.fewLimit` of them and by
    /// hash beyond: both find every child, and nothing else.
    func testLiteralChildrenAreFoundByListAndByDictionary() {
        for count in [1, Router.Node.fewLimit, Router.Node.fewLimit + 1, 40] {
            let routes = (0..<count).map { route("r\($0)", .exact("/base/child-\($0)"), index: $0) }
            for i in 0..<count {
                XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/base/child-\(i)")), "r\(i)", "\(count) children")
            }
            XCTAssertNil(matchedName(routes, GatewayRequest(method: "GET", path: "/base/child-\(count)")))
            XCTAssertNil(matchedName(routes, GatewayRequest(method: "GET", path: "/base/child-")))
        }
    }

    /// Paths split into their non-empty segments, cut on the byte `/` (also next to non-ASCII).
    func testSplitPathKeepsNonEmptySegments() {
        XCTAssertEqual(PathPattern.splitPath(""), [])
        XCTAssertEqual(PathPattern.splitPath("/"), [])
        XCTAssertEqual(PathPattern.splitPath("a"), ["a"])
        XCTAssertEqual(PathPattern.splitPath("//a//bc/"), ["a", "bc"])
        XCTAssertEqual(PathPattern.splitPath("/caf\u{e9}/\u{1F600}x/y"), ["caf\u{e9}", "\u{1F600}x", "y"])
        XCTAssertEqual(PathPattern.splitPath("/\u{301}/e"), ["\u{301}", "e"], "a combining mark after / does not hide the separator")
        let sub = "xx/a/b"[...].dropFirst(2)
        XCTAssertEqual(PathPattern.splitPath(String(sub)), ["a", "b"])
    }

    /// A route that neither rewrites nor strips keeps the request's path (decided at load).
    func testKeepsRequestPath() {
        XCTAssertTrue(Router.keepsRequestPath(route("p", .prefix("/a/"), index: 0)))
        var stripped = route("s", .prefix("/a/"), index: 0)
        stripped.stripPrefix = true
        XCTAssertFalse(Router.keepsRequestPath(stripped))
        var exactStrip = route("e", .exact("/a"), index: 0)
        exactStrip.stripPrefix = true
        XCTAssertTrue(Router.keepsRequestPath(exactStrip), "strip_prefix only acts on prefix routes")
        var rewritten = route("r", .exact("/a"), index: 0)
        rewritten.rewrite = "/b"
        XCTAssertFalse(Router.keepsRequestPath(rewritten))
    }

    func testParamsAreCaptured() {
        let routes = [route("orders", .exact("/users/{user}/orders/{order}"), index: 0)]
        let decision = Router(routes: routes).route(GatewayRequest(method: "GET", path: "/users/7/orders/99"))
        XCTAssertEqual(decision, .matched(RouteMatchResult(routeIndex: 0, params: ["user": "7", "order": "99"], consumedSegments: 4)))
    }

    func testHostHeaderAndQueryConditions() {
        let routes = [
            route("any", .prefix("/"), index: 0),
            route("wild", .prefix("/"), hosts: ["*.example.com"], index: 1),
            route("exact", .prefix("/"), hosts: ["api.example.com"], index: 2),
            route("hdr", .prefix("/"), hosts: ["api.example.com"], headers: [("x-version", .equals("2"))], index: 3),
            route("q", .prefix("/"), query: [("debug", .present)], index: 4),
        ]
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/a", host: "other.org")), "any")
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/a", host: "www.example.com")), "wild")
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/a", host: "api.example.com")), "exact")
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/a", host: "api.example.com",
                                                          headers: HTTPHeaders([("X-Version", "2")]))), "hdr")
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/a", host: "api.example.com",
                                                          headers: HTTPHeaders([("X-Version", "3")]))), "exact")
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/a", rawQuery: "debug", host: "x.org")), "q")
        // "*.example.com" must not match the bare domain.
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/a", host: "example.com")), "any")
    }

    func testMethodMismatchGives405WithAllow() {
        let routes = [route("get", .exact("/items"), methods: ["GET"], index: 0), route("post", .exact("/items"), methods: ["POST"], index: 1)]
        XCTAssertEqual(Router(routes: routes).route(GatewayRequest(method: "DELETE", path: "/items")),
                       .methodNotAllowed(allowed: ["GET", "HEAD", "POST"]))
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "HEAD", path: "/items")), "get")
        XCTAssertEqual(Router(routes: routes).route(GatewayRequest(method: "GET", path: "/nothing")), .notFound)
    }

    func testMethodSpecificRouteBeatsAnyMethod() {
        let routes = [route("any", .exact("/x"), index: 0), route("post", .exact("/x"), methods: ["POST"], index: 1)]
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "POST", path: "/x")), "post")
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/x")), "any")
    }

    func testUpstreamPathRewriteAndStrip() {
        var strip = route("v1", .prefix("/v1/"), index: 0)
        strip.stripPrefix = true
        let result = RouteMatchResult(routeIndex: 0, params: [:], consumedSegments: 1)
        XCTAssertEqual(Router.upstreamPath(route: strip, result: result, requestPath: "/v1/users/3"), "/users/3")
        XCTAssertEqual(Router.upstreamPath(route: strip, result: result, requestPath: "/v1"), "/")

        var versioned = route("v1", .prefix("/v1/"), index: 0)
        versioned.rewrite = "/api/"
        XCTAssertEqual(Router.upstreamPath(route: versioned, result: result, requestPath: "/v1/users/3/"), "/api/users/3/")

        var exact = route("u", .exact("/users/{id}"), index: 0)
        exact.rewrite = "/internal/users/{id}"
        XCTAssertEqual(Router.upstreamPath(route: exact, result: RouteMatchResult(routeIndex: 0, params: ["id": "9"], consumedSegments: 2),
                                           requestPath: "/users/9"), "/internal/users/9")
        let plain = route("p", .prefix("/echo/"), index: 0)
        XCTAssertEqual(Router.upstreamPath(route: plain, result: result, requestPath: "/echo/a%20b"), "/echo/a%20b")
    }

    func testManyRoutesCompileIntoTrie() {
        let routes = (0..<2000).map { route("r\($0)", .exact("/service\($0)/items/{id}"), index: $0) }
        XCTAssertEqual(matchedName(routes, GatewayRequest(method: "GET", path: "/service1999/items/5")), "r1999")
        XCTAssertNil(matchedName(routes, GatewayRequest(method: "GET", path: "/service2000/items/5")))
    }
}
