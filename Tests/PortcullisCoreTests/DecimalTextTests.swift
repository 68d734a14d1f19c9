import XCTest
@testable import PortcullisCore

/// Decimal digits written without a `String` are the `String`'s.
final class DecimalTextTests: XCTestCase {
    func testDigitsAreTheStringsDigits() {
        var g = SystemRandomNumberGenerator()
        let values: [Int] = [0, 1, -1, 9, 10, 11, 99, 100, 101, 999_999, 1_000_000, -1_000_000, .max, .min, .max - 1, .min + 1]
            + (0..<2_000).map { _ in Int.random(in: .min ... .max, using: &g) >> Int.random(in: 0...63, using: &g) }
        for v in values {
            var bytes: [UInt8] = [0x41]
            bytes.appendDecimal(v)
            XCTAssertEqual(String(decoding: bytes, as: UTF8.self), "A" + String(v))
            var each: [UInt8] = []
            DecimalText.forEachByte(of: v) { each.append($0) }
            XCTAssertEqual(each, Array(String(v).utf8))
            var hasher = StableHasher()
            hasher.writeDecimal(v)
            XCTAssertEqual(hasher.finalize(), StableHash.hash(String(v)))
        }
    }
}
