import XCTest
@testable import PortcullisCore

final class RouterTests: XCTestCase {
    func testPlaceholderCompiles() throws {
        let router = Router(routes: [RouteConfig(name: "a", match: RouteMatch(path: .prefix("/echo/")), upstream: "u")])
        XCTAssertEqual(router.route(GatewayRequest(method: "GET", path: "/echo/x")),
                       .matched(RouteMatchResult(routeIndex: 0, params: [:], consumedSegments: 1)))
    }
}
