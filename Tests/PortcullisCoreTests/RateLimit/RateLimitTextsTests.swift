import XCTest
@testable import PortcullisCore
@testable import PortcullisRuntime

/// The texts a limit's configuration fixes (``RateLimitTexts``) give exactly what formatting
/// them per request gave: the counter's hash, the RateLimit fields' head bytes and the access
/// log's `limits`, for random limits, parameters, names and key values.
final class RateLimitTextsTests: XCTestCase {
    let t0: Int64 = 1_700_000_000_000_000

    /// FNV-1a with the SplitMix64 finaliser over the whole text, written out here as the
    /// reference: the hash of a counter must not change (the table outlives a binary upgrade).
    func referenceHash(_ text: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in text.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        var z = h &+ 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        z = z ^ (z >> 31)
        return z == 0 ? 1 : z
    }

    /// Names and values with separators, quotes, controls, non-ASCII and escape-block scalars.
    static let pieces = ["a", "gold", "|", "1:a", "-", "\"q\"", "per key", "é", "日本", "\u{10FF41}", "tab\there", "nl\nx", "\u{7F}", "", "x,y;z=1"]

    func randomName<G: RandomNumberGenerator>(_ g: inout G) -> String {
        (0..<Int.random(in: 1...3, using: &g)).map { _ in Self.pieces.randomElement(using: &g)! }.joined()
    }

    func randomParams<G: RandomNumberGenerator>(_ g: inout G) -> RateLimitParams {
        let algorithm = [RateLimitAlgorithm.tokenBucket, .fixedWindow, .slidingWindow].randomElement(using: &g)!
        let window = Int64.random(in: 1...86_400, using: &g) * 1_000_000 + (algorithm == .tokenBucket ? 0 : Int64.random(in: 0...999_999, using: &g))
        let limit = Int64.random(in: 1...min(RateLimitParams.maxLimit(algorithm), algorithm == .tokenBucket ? window : .max), using: &g)
        return RateLimitParams(algorithm: algorithm, limit: limit, windowMicros: window,
                               burst: Bool.random(using: &g) ? Int64.random(in: 1...1_000_000_000, using: &g) : nil)
    }

    func randomSubject<G: RandomNumberGenerator>(_ g: inout G) -> RateLimitSubject {
        let headers = Bool.random(using: &g) ? ["x-tenant": randomName(&g)] : [:]
        return RateLimitSubject(credentialId: Bool.random(using: &g) ? randomName(&g) : nil,
                                consumerId: Bool.random(using: &g) ? randomName(&g) : nil, consumerGroups: [],
                                clientIP: ["192.0.2.1", "2001:db8::1", ""].randomElement(using: &g)!, routeName: randomName(&g),
                                header: { headers[$0] })
    }

    func testKeyHashFromThePrefixIsTheHashOfTheWrittenText() {
        var g = SystemRandomNumberGenerator()
        let allParts: [RateLimitKeyPart] = [.credential, .consumer, .ip, .route, .header("x-tenant")]
        for _ in 0..<2_000 {
            let name = randomName(&g), params = randomParams(&g), subject = randomSubject(&g)
            let parts = Array(allParts.shuffled(using: &g).prefix(Int.random(in: 1...allParts.count, using: &g)))
            let written = RateLimitKey.make(limitName: name, params: params, parts: parts, subject: subject)
            let derived = RateLimitKey(prefix: RateLimitTexts(name: name, params: params).keyPrefix, parts: parts, subject: subject)
            XCTAssertEqual(derived.hash, written.hash, written.text)
            XCTAssertEqual(derived.hash, referenceHash(written.text), written.text)
            XCTAssertEqual(written.text, name + "|" + params.description + parts.map { part in
                subject.value(of: part).map { "|\($0.utf8.count):\($0)" } ?? "|-"
            }.joined())
        }
    }

    func testKnownKeysKeepTheirHash() {
        let p = RateLimitParams(algorithm: .fixedWindow, limit: 5, windowMicros: 10_000_000)
        let subject = RateLimitSubject(credentialId: nil, consumerId: "a", consumerGroups: [], clientIP: "1.2.3.4", routeName: "r")
        let key = RateLimitKey(prefix: RateLimitTexts(name: "l", params: p).keyPrefix, parts: [.consumer, .ip], subject: subject)
        XCTAssertEqual(key.hash, referenceHash("l|fixed_window/5/10000000/5|1:a|7:1.2.3.4"))
        XCTAssertEqual(key, RateLimitKey(text: "l|fixed_window/5/10000000/5|1:a|7:1.2.3.4"), "keys are equal by their hash")
        XCTAssertEqual(StableHash.hash("portcullis"), referenceHash("portcullis"))
    }

    /// Outcomes of every verdict from random limits (hidden, shadow, concurrency, plans), and
    /// the bytes the head would get from their `String` fields.
    func testHeaderBytesEqualTheStringFields() {
        var g = SystemRandomNumberGenerator()
        for _ in 0..<1_000 {
            let limiter = RateLimiter(local: InMemoryRateLimitStore(), remote: nil, settings: RateLimitSettings())
            var specs: [RateLimitSpec] = []
            for i in 0..<Int.random(in: 1...4, using: &g) {
                var spec = RateLimitSpec(name: randomName(&g) + "\(i)", params: randomParams(&g), key: [.consumer])
                if Int.random(in: 0..<6, using: &g) == 0 { spec.hideClientHeaders = true }
                if Int.random(in: 0..<6, using: &g) == 0 { spec.mode = .shadow }
                if Int.random(in: 0..<4, using: &g) == 0 { spec.groups = [("gold", randomParams(&g))] }
                if Int.random(in: 0..<8, using: &g) == 0 {
                    spec.params = RateLimitParams(algorithm: .concurrency, limit: 2, windowMicros: 60_000_000)
                    spec.groups = []
                }
                specs.append(spec)
            }
            let subject = RateLimitSubject(credentialId: nil, consumerId: "c", consumerGroups: Bool.random(using: &g) ? ["gold"] : [],
                                           clientIP: "192.0.2.1", routeName: "r")
            for n in 0..<Int.random(in: 1...4, using: &g) {
                let outcome = limiter.evaluate(specs, subject: subject, now: t0 + Int64(n) * 1_000)
                var expected: [UInt8] = []
                HeaderHygiene.appendFields(outcome.headers, to: &expected)
                var written: [UInt8] = []
                outcome.appendHeaderFields(to: &written)
                XCTAssertEqual(String(decoding: written, as: UTF8.self), String(decoding: expected, as: UTF8.self))
                XCTAssertEqual(written, expected)
                XCTAssertEqual(outcome.addsHeaderFields, outcome.headers.count > 0)
                var line: [UInt8] = []
                outcome.appendLogSummary(jsonEscapedTo: &line)
                var quoted: [UInt8] = []
                JSONLineWriter.appendQuoted(outcome.logSummary, to: &quoted)
                XCTAssertEqual(line, Array(quoted.dropFirst().dropLast()), outcome.logSummary)
                // The same bytes straight into a head's or a log line's buffer.
                var buffer = ByteBuffer(capacity: 16)
                defer { buffer.deallocate() }
                buffer.appendASCII("x")
                outcome.appendHeaderFields(to: &buffer)
                XCTAssertEqual(buffer.array, Array("x".utf8) + expected)
                buffer.removeAll()
                outcome.appendLogSummary(jsonEscapedTo: &buffer)
                XCTAssertEqual(buffer.array, line)
            }
        }
    }

    /// The gateway copies the request into the subject only for limits that read it.
    func testOnlyKeyPartsAndCostsOfTheRequestReadIt() {
        let p = RateLimitParams(algorithm: .fixedWindow, limit: 5, windowMicros: 1_000_000)
        let other: [RateLimitKeyPart] = [.credential, .consumer, .ip, .route, .pathParam("id"), .claim("sub")]
        XCTAssertFalse(RateLimitSpec(name: "l", params: p, key: other).readsRequest)
        for part in [RateLimitKeyPart.path, .method, .header("x-t"), .query("q"), .cookie("c"), .variable("T")] {
            XCTAssertTrue(RateLimitSpec(name: "l", params: p, key: [.consumer, part]).readsRequest, part.description)
        }
        var byHeader = RateLimitSpec(name: "l", params: p, key: [.consumer])
        byHeader.cost = .header("x-cost", default: 1, max: 5)
        XCTAssertTrue(byHeader.readsRequest)
        var byClaim = byHeader
        byClaim.cost = .claim("w", default: 1, max: 5)
        XCTAssertFalse(byClaim.readsRequest)
    }

    /// The gateway makes the identity's credential text only for limits keyed on it; a route's
    /// inputs are those of all its limits.
    func testOnlyTheCredentialKeyPartReadsTheCredential() {
        let p = RateLimitParams(algorithm: .fixedWindow, limit: 5, windowMicros: 1_000_000)
        let others: [RateLimitKeyPart] = [.consumer, .ip, .route, .pathParam("id"), .claim("sub"), .path, .header("x-t")]
        XCTAssertFalse(RateLimitSpec(name: "l", params: p, key: others).readsCredential)
        XCTAssertTrue(RateLimitSpec(name: "l", params: p, key: [.route, .credential]).readsCredential)
        let byConsumer = RateLimitSpec(name: "a", params: p, key: [.consumer])
        let byCredential = RateLimitSpec(name: "b", params: p, key: [.credential])
        let byPath = RateLimitSpec(name: "c", params: p, key: [.path])
        XCTAssertEqual(RateLimitInputs([]), RateLimitInputs([byConsumer]))
        XCTAssertFalse(RateLimitInputs([byConsumer]).credential)
        XCTAssertFalse(RateLimitInputs([byConsumer]).request)
        XCTAssertTrue(RateLimitInputs([byConsumer, byCredential]).credential)
        XCTAssertFalse(RateLimitInputs([byConsumer, byCredential]).request)
        XCTAssertTrue(RateLimitInputs([byPath, byConsumer]).request)
        XCTAssertFalse(RateLimitInputs([byPath, byConsumer]).credential)
    }

    func testOtherVerdictsWriteRetryAfter() {
        let outcomes = [RateLimitOutcome(verdict: .limited, results: [], unavailableRetrySeconds: 0),
                        RateLimitOutcome(verdict: .storeUnavailable, results: [], unavailableRetrySeconds: 3),
                        RateLimitOutcome(verdict: .storeUnavailable, results: [], unavailableRetrySeconds: 0),
                        RateLimitOutcome(verdict: .invalidCost("x"), results: [], unavailableRetrySeconds: 0)]
        let written = outcomes.map { outcome -> String in
            var expected: [UInt8] = [], written: [UInt8] = []
            HeaderHygiene.appendFields(outcome.headers, to: &expected)
            outcome.appendHeaderFields(to: &written)
            XCTAssertEqual(written, expected)
            return String(decoding: written, as: UTF8.self)
        }
        XCTAssertEqual(written, ["Retry-After: 1\r\n", "Retry-After: 3\r\n", "Retry-After: 1\r\n", ""])
    }
}

/// The Redis key written into one string is the `<namespace>:rl:<16 hex digits>` it always was.
final class RedisKeyTextTests: XCTestCase {
    func testRedisKeyIsTheNamespaceAndTheHashInSixteenHexDigits() {
        var settings = RedisSettings()
        settings.namespace = "pc-ns"
        let store = RedisRateLimitStore(settings: settings, loop: EventLoop(index: 0))
        var g = SystemRandomNumberGenerator()
        let hashes: [UInt64] = [1, 0xF, 0x10, 0xABC, .max, 1 << 63] + (0..<500).map { _ in UInt64.random(in: 1...UInt64.max, using: &g) >> UInt64.random(in: 0...63, using: &g) }
        for hash in hashes where hash != 0 {
            let hex = String(hash, radix: 16)
            XCTAssertEqual(store.redisKey(RateLimitKey(hash: hash)), "pc-ns:rl:" + String(repeating: "0", count: 16 - hex.count) + hex)
        }
    }
}
