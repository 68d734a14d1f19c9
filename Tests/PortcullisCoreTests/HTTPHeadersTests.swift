import XCTest
@testable import PortcullisCore

/// Lookups by name: any ASCII case, every field considered (same-length names that differ,
/// repeated fields, non-ASCII values kept as they are).
final class HTTPHeadersTests: XCTestCase {
    private let headers = HTTPHeaders([("Accept", "*/*"), ("X-Tag", "one"), ("x-tAg", "two"), ("X-Tab", "no"),
                                       ("Content-Type", "application/json"), ("X-TAG", "thr\u{e9}e")])

    func testSubscriptFindsTheFirstFieldOfTheNameInAnyCase() {
        XCTAssertEqual(headers["x-tag"], "one")
        XCTAssertEqual(headers["X-TAB"], "no")
        XCTAssertEqual(headers["content-type"], "application/json")
        XCTAssertNil(headers["X-Ta"])
        XCTAssertNil(headers["X-Tags"])
        XCTAssertNil(HTTPHeaders()["Accept"])
    }

    func testValuesListsEveryFieldOfTheNameInOrder() {
        XCTAssertEqual(headers.values("X-Tag"), ["one", "two", "thr\u{e9}e"])
        XCTAssertEqual(headers.values("accept"), ["*/*"])
        XCTAssertEqual(headers.values("X-Tad"), [])
        XCTAssertEqual(HTTPHeaders([("A", "1")]).values("a"), ["1"])
    }

    func testContainsMatchesNameAndLength() {
        XCTAssertTrue(headers.contains("CONTENT-TYPE"))
        XCTAssertFalse(headers.contains("Content-Typ"))
        XCTAssertFalse(headers.contains(""))
    }

    func testSetReplacesTheFirstAndRemovesTheOthers() {
        var h = headers
        h.set("x-tag", "only")
        XCTAssertEqual(h.fields.map(\.name), ["Accept", "X-Tag", "X-Tab", "Content-Type"])
        XCTAssertEqual(h.values("X-TAG"), ["only"])
        h.set("New", "n")
        XCTAssertEqual(h.fields.last?.name, "New")
        XCTAssertEqual(h["new"], "n")
    }
}
