import Foundation
import XCTest
@testable import PortcullisCore

/// Runs every Wycheproof JWS vector (Fixtures/wycheproof, Apache-2.0, see its LICENSE) through
/// the verifier: `invalid` must be rejected, `valid` accepted, except the deliberate
/// deviations listed in `deliberatelyRejected`, which must be rejected.
final class AuthWycheproofTests: XCTestCase {
    /// Vectors Wycheproof calls valid that Portcullis rejects on purpose, with the reason.
    static let deliberatelyRejected: [Int: String] = [
        346: "the key declares alg PS256 but the token uses PS384; the algorithm is bound to the key",
        350: "the key declares alg PS256 but the token uses PS384; the algorithm is bound to the key",
        372: "'?' inside the base64url header: strict base64url refuses characters outside the alphabet",
        373: "'?' inside the base64url payload: strict base64url refuses characters outside the alphabet",
    ]

    /// Vectors whose token in this copy of the file is byte-identical to another vector marked
    /// valid (the padding their name describes is absent), so no verifier can satisfy both
    /// labels. The test checks that they really are duplicates and then skips them; padded
    /// tokens are covered by `AuthJWTAttackTests.testBadBase64URL`.
    static let contradictoryDuplicates: [Int: Int] = [367: 357, 370: 357]

    static func fixture() throws -> JSONValue {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/wycheproof/json_web_signature_test.json")
        return try JSONCodec.parse(Array(try Data(contentsOf: url)), rejectDuplicateKeys: true)
    }

    func testEveryVector() throws {
        let document = try Self.fixture()
        var counts = (validAccepted: 0, invalidRejected: 0, deviations: 0, keyRefused: 0, skipped: 0)
        var tokens: [Int: String] = [:]
        for group in document["testGroups"]?.arrayValue ?? [] {
            for test in group["tests"]?.arrayValue ?? [] { tokens[Int(test["tcId"]?.intValue ?? -1)] = test["jws"]?.stringValue }
        }
        let groups = try XCTUnwrap(document["testGroups"]?.arrayValue)
        for group in groups {
            var jwk = try XCTUnwrap((group["public"] ?? group["private"])?.objectValue)
            // Wycheproof writes "ES521" for the P-521 key; RFC 7518 §3.1 registers it as ES512.
            if jwk["alg"] == "ES521" { jwk["alg"] = "ES512" }
            let key: VerificationKey?
            do { key = try VerificationKey.jwk(jwk) } catch { key = nil }
            for test in try XCTUnwrap(group["tests"]?.arrayValue) {
                let id = Int(test["tcId"]?.intValue ?? -1)
                let expected = test["result"]?.stringValue
                let token = try XCTUnwrap(test["jws"]?.stringValue, "tc \(id): jws is not a compact string")
                var accepted = false
                if let key {
                    do {
                        let parsed = try ParsedJWS.parse(Array(token.utf8), maxBytes: 1 << 20)
                        _ = try parsed.verify(with: [key])
                        accepted = true
                    } catch {}
                } else {
                    counts.keyRefused += 1
                }
                if let twin = Self.contradictoryDuplicates[id] {
                    XCTAssertEqual(tokens[id], tokens[twin], "tc \(id) is no longer a duplicate of tc \(twin); run it")
                    counts.skipped += 1
                } else if let reason = Self.deliberatelyRejected[id] {
                    XCTAssertFalse(accepted, "tc \(id) should be rejected: \(reason)")
                    counts.deviations += 1
                } else if expected == "valid" {
                    XCTAssertTrue(accepted, "tc \(id) (\(test["comment"]?.stringValue ?? "")) valid but rejected")
                    if accepted { counts.validAccepted += 1 }
                } else {
                    XCTAssertFalse(accepted, "tc \(id) (\(test["comment"]?.stringValue ?? "")) invalid but accepted")
                    if !accepted { counts.invalidRejected += 1 }
                }
            }
        }
        XCTAssertEqual(counts.validAccepted + counts.invalidRejected + counts.deviations + counts.skipped, document["numberOfTests"]?.intValue.map(Int.init))
        XCTAssertEqual(counts.validAccepted, 42)
        XCTAssertEqual(counts.invalidRejected, 353)
        print("wycheproof: \(counts.validAccepted) valid accepted, \(counts.invalidRejected) invalid rejected, \(counts.deviations) deliberate deviations, \(counts.skipped) contradictory duplicates skipped, \(counts.keyRefused) refused at key load")
    }
}
