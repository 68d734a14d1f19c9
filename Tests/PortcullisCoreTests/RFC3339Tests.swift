import Foundation
import XCTest
@testable import PortcullisCore

final class RFC3339Tests: XCTestCase {
    func testMillisecondsArePaddedAndTruncated() {
        XCTAssertEqual(RFC3339.format(Date(timeIntervalSince1970: 1_700_000_000.123_9), milliseconds: true), "2023-11-14T22:13:20.123Z")
        XCTAssertEqual(RFC3339.format(Date(timeIntervalSince1970: 1_700_000_000.25), milliseconds: true), "2023-11-14T22:13:20.250Z")
        XCTAssertEqual(RFC3339.format(Date(timeIntervalSince1970: 0), milliseconds: true), "1970-01-01T00:00:00.000Z")
        XCTAssertEqual(RFC3339.format(Date(timeIntervalSince1970: -1), milliseconds: false), "1969-12-31T23:59:59Z")
    }

    func testFormatRoundTripsThroughParse() {
        for seconds: Int64 in [0, 951_782_400, 1_700_000_000, 4_102_444_799] {
            let text = RFC3339.format(Date(timeIntervalSince1970: TimeInterval(seconds)))
            XCTAssertEqual(RFC3339.parse(text), seconds, text)
        }
    }
}
