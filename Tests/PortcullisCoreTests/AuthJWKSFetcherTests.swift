import Foundation
import XCTest
@testable import PortcullisCore
@testable import PortcullisRuntime

/// The JWKS fetcher against a real local HTTP server (python3 -m http.server).
final class AuthJWKSFetcherTests: XCTestCase {
    var server: Process?
    var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "portcullis-jwks-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        if let server, server.isRunning { server.terminate(); server.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: directory)
    }

    func startServer() throws -> Int {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", directory]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        server = p
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        var text = ""
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, !text.contains(") ...") {
            text += String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
        }
        guard let range = text.range(of: "port "), let port = Int(text[range.upperBound...].prefix { $0.isNumber }) else {
            throw XCTSkip("python3 http.server did not start")
        }
        return port
    }

    func writeSet(kid: String) throws {
        let set: JSONValue = ["keys": [.object(TestKeys.rsaJWK(kid: kid, alg: "RS256"))]]
        try JSONCodec.serialize(set).write(toFile: directory + "/jwks.json", atomically: true, encoding: .utf8)
    }

    func testFetchRotateAndKeepLastGoodSet() throws {
        try writeSet(kid: "a")
        let port = try startServer()
        // Proxy variables must be ignored (a proxy on the discard port would fail the fetch).
        setenv("http_proxy", "http://127.0.0.1:9", 1)
        setenv("HTTP_PROXY", "http://127.0.0.1:9", 1)
        defer { unsetenv("http_proxy"); unsetenv("HTTP_PROXY") }
        let store = JWKSKeyStore(refetchCooldownSeconds: 1)
        let url = "http://127.0.0.1:\(port)/jwks.json"
        let fetcher = JWKSFetcher(url: url, store: store, refreshSeconds: 3600)
        XCTAssertTrue(fetcher.fetchNow())
        XCTAssertEqual(store.currentKeys().map(\.kid), ["a"])

        // Rotation: an unknown kid makes the running fetcher refetch, well before the refresh interval.
        var issuer = JWTIssuerConfig(issuer: "https://issuer.test", audiences: ["portcullis"], jwksURL: url)
        issuer.requiredClaims = ["exp"]
        let auth = Authenticator(settings: AuthSettings(jwt: JWTSettings(issuers: [issuer])), consumers: [], jwksSources: [url: store])
        fetcher.start()
        defer { fetcher.stop() }
        // The thread fetches once when it starts; the rotation below must come after that.
        let started = Date().addingTimeInterval(5)
        while Date() < started, !fetcher.firstFetchEnded { Thread.sleep(forTimeInterval: 0.02) }
        XCTAssertTrue(fetcher.firstFetchEnded)
        try writeSet(kid: "b")
        let token = Array(TestTokens.jwt(alg: .rs256, kid: "b", claims: claims()).utf8)
        XCTAssertEqual(auth.verifyToken(token, now: testNow), .failure(.unknownKey))
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline, store.currentKeys().first?.kid != "b" { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertEqual(store.currentKeys().map(\.kid), ["b"])
        XCTAssertEqual(try auth.verifyToken(token, now: testNow).get().consumerId, "alice")

        // Broken document, then server down: the last good set stays.
        try "not json".write(toFile: directory + "/jwks.json", atomically: true, encoding: .utf8)
        XCTAssertFalse(fetcher.fetchNow())
        try #"{"keys": [{"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}]}"#.write(toFile: directory + "/jwks.json", atomically: true, encoding: .utf8)
        XCTAssertFalse(fetcher.fetchNow())
        server?.terminate()
        server?.waitUntilExit()
        XCTAssertFalse(fetcher.fetchNow())
        XCTAssertEqual(store.currentKeys().map(\.kid), ["b"])
    }
}
