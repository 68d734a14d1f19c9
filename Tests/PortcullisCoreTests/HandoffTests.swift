import Foundation
import XCTest
@testable import PortcullisCore

/// The worker's side of WebSocket and gRPC routes: the route protocol and what it refuses, the
/// handoff answer, gRPC refusals and the generated nginx upstreams (docs/protocols.md).
final class HandoffTests: XCTestCase {
    private let upstreams = #""upstreams": {"echo": {"targets": ["http://127.0.0.1:9000", "https://ws.example.com"]}, "odd.name": {"targets": ["http://127.0.0.1:9001"]}}"#

    private func parse(_ routes: String, extra: String = "") throws(ConfigErrors) -> GatewayConfig {
        try ConfigLoader.parse(bytes: Array("{\(upstreams), \(extra) \"routes\": [\(routes)]}".utf8), file: "c.json")
    }

    private func errors(_ routes: String, extra: String = "") -> [String] {
        do {
            _ = try parse(routes, extra: extra)
            return []
        } catch {
            return error.issues.map(\.description)
        }
    }

    func testProtocolDefaultsToHTTPAndParsesEachValue() throws {
        let config = try parse(#"""
        {"name": "a", "match": {"prefix": "/a/"}, "upstream": "echo"},
        {"name": "w", "match": {"prefix": "/w/"}, "upstream": "echo", "protocol": "websocket"},
        {"name": "g", "match": {"prefix": "/g/"}, "upstream": "echo", "protocol": "grpc"},
        {"name": "h", "match": {"prefix": "/h/"}, "upstream": "echo", "protocol": "http"}
        """#)
        XCTAssertEqual(config.routes.map(\.protocol), [.http, .websocket, .grpc, .http])
        XCTAssertEqual(config.routes.map(\.protocol.handsOff), [false, true, true, false])
    }

    func testWhatAHandoffRouteCannotHaveIsRefusedWithItsPointer() {
        XCTAssertEqual(errors(#"{"match": {"prefix": "/a/"}, "upstream": "echo", "protocol": "ftp"}"#),
                       [#"c.json: /routes/0/protocol: unknown protocol "ftp" (http, websocket or grpc)"#])
        XCTAssertEqual(errors(#"{"match": {"prefix": "/a/"}, "upstream": "echo", "protocol": "websocket", "plugins": ["x"]}"#),
                       ["c.json: /routes/0/plugins: rule sets do not apply to a websocket route: nginx carries its request after the handoff"])
        XCTAssertEqual(errors(#"{"match": {"prefix": "/a/"}, "upstream": "echo", "protocol": "grpc", "strip_prefix": true}"#),
                       ["c.json: /routes/0/strip_prefix: a grpc route forwards the path unchanged"])
        XCTAssertEqual(errors(#"{"match": {"prefix": "/a/"}, "upstream": "odd.name", "protocol": "grpc"}"#),
                       [#"c.json: /routes/0/upstream: the upstream of a grpc route needs a name of letters, digits, "_" and "-" (it names nginx upstream blocks)"#])
        XCTAssertEqual(errors(#"{"match": {"prefix": "/a/"}, "upstream": "echo", "protocol": "websocket", "limits": [{"name": "c", "algorithm": "concurrency", "limit": 2, "key": ["route"]}]}"#),
                       ["c.json: /routes/0/limits/0/algorithm: a concurrency limit cannot count websocket connections: the worker's part ends at the handoff"])
        let consumers = #""consumers": [{"id": "c", "api_keys": [{"id": "k", "sha256": "090d1548c9d65f413a1a2c828a0bee3a7ae02d2137caf51e6029e6c3cb1f1fa4"}]}], "auth": {"api_key": {"header": "X-Key"}},"#
        XCTAssertEqual(errors(#"{"match": {"prefix": "/a/"}, "upstream": "echo", "protocol": "websocket", "auth": {"methods": ["api_key"]}}"#, extra: consumers),
                       [#"c.json: /routes/0/auth: a websocket route needs auth.api_key.header "X-API-Key": the nginx snippet removes only that header from the client's request"#])
        // The same on an http route is fine.
        XCTAssertEqual(errors(#"{"match": {"prefix": "/a/"}, "upstream": "odd.name", "strip_prefix": true}"#), [])
    }

    func testAnswerCarriesTargetBlockHostURIAndOnlyTheCarriedHeaders() {
        var decided = HTTPHeaders()
        decided.add("X-Forwarded-For", "10.1.2.3")
        decided.add("X-Consumer-ID", "alice")
        decided.add("X-Request-ID", "req-1")
        decided.add("Cookie", "a=b")   // not gateway-owned: nginx passes the client's own
        let fields = Handoff.answerFields(proto: .websocket, upstream: "echo", targetIndex: 1, targetURL: "https://ws.example.com:8443",
                                          uri: "/chat?room=1", upstreamHeaders: decided)
        XCTAssertEqual(fields["X-Accel-Redirect"], "@portcullis_websocket")
        XCTAssertEqual(fields["X-Portcullis-Target"], "https://portcullis_echo_1")
        XCTAssertEqual(fields["X-Portcullis-Host"], "ws.example.com:8443")
        XCTAssertEqual(fields["X-Portcullis-URI"], "/chat?room=1")
        XCTAssertEqual(fields["X-Portcullis-Set-X-Consumer-ID"], "alice")
        XCTAssertEqual(fields["X-Portcullis-Set-X-Forwarded-For"], "10.1.2.3")
        XCTAssertNil(fields["X-Portcullis-Set-Cookie"])
        XCTAssertNil(fields["X-Portcullis-Set-X-Credential-ID"], "absent: nginx sets it empty, so it is not sent")
        XCTAssertNil(fields["X-Portcullis-Answer-RateLimit-Limit"], "no limits decided: nothing for the client")

        var limits = HTTPHeaders()
        limits.add("RateLimit-Limit", "30")
        limits.add("RateLimit-Policy", #""per-key";q=30;w=60"#)
        limits.add("Retry-After", "3")   // not an answered field: never carried
        let limited = Handoff.answerFields(proto: .websocket, upstream: "echo", targetIndex: 0, targetURL: "http://127.0.0.1:9000",
                                           uri: "/x", upstreamHeaders: decided, clientHeaders: limits)
        XCTAssertEqual(limited["X-Portcullis-Answer-RateLimit-Limit"], "30")
        XCTAssertEqual(limited["X-Portcullis-Answer-RateLimit-Policy"], #""per-key";q=30;w=60"#)
        XCTAssertNil(limited["X-Portcullis-Answer-Retry-After"])
        XCTAssertNil(limited["RateLimit-Limit"], "nginx drops the answer's own fields at the redirect")

        let grpc = Handoff.answerFields(proto: .grpc, upstream: "echo", targetIndex: 0, targetURL: "http://127.0.0.1:9000",
                                        uri: "/x", upstreamHeaders: decided)
        XCTAssertEqual(grpc["X-Accel-Redirect"], "@portcullis_grpc")
        XCTAssertEqual(grpc["X-Portcullis-Target"], "grpc://portcullis_echo_0")
        XCTAssertNil(grpc["X-Portcullis-URI"], "gRPC keeps the client's path")
    }

    /// The snippet sets every carried header in both named locations from its carrier; a name
    /// added to `Handoff.carried` without its nginx lines would let the client's copy through.
    /// Every removed field is set empty. Likewise every answered field is captured, hidden from
    /// the upstream and added.
    func testTheSnippetSetsEveryCarriedHeaderInBothLocations() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let snippet = try String(contentsOf: root.appendingPathComponent("nginx/portcullis.conf"), encoding: .utf8)
        func location(_ name: String) -> String {
            guard let start = snippet.range(of: "location \(name) {"),
                  let end = snippet.range(of: "\n}", range: start.upperBound..<snippet.endIndex) else { return "" }
            return String(snippet[start.upperBound..<end.lowerBound])
        }
        for (proto, directive) in [(RouteProtocol.websocket, "proxy_set_header"), (.grpc, "grpc_set_header")] {
            let body = location(Handoff.location(proto))
            XCTAssertFalse(body.isEmpty, "no location \(Handoff.location(proto))")
            for name in Handoff.carried {
                let variable = "$portcullis_set_" + name.lowercased().replacingOccurrences(of: "-", with: "_")
                let carrier = "$upstream_http_" + (Handoff.carrierPrefix + name).lowercased().replacingOccurrences(of: "-", with: "_")
                XCTAssertTrue(body.contains("set \(variable) \(carrier);"), "\(proto): \(name) is not captured")
                XCTAssertTrue(body.contains("\(directive) \(name) \(variable);"), "\(proto): \(name) is not set")
            }
            for name in Handoff.removed {
                XCTAssertTrue(body.contains("\(directive) \(name) \"\";"), "\(proto): the client's \(name) is not dropped")
            }
            let hide = directive == "proxy_set_header" ? "proxy_hide_header" : "grpc_hide_header"
            for name in Handoff.answered {
                let variable = "$portcullis_answer_" + name.lowercased().replacingOccurrences(of: "-", with: "_")
                let carrier = "$upstream_http_" + (Handoff.answerPrefix + name).lowercased().replacingOccurrences(of: "-", with: "_")
                XCTAssertTrue(body.contains("set \(variable) \(carrier);"), "\(proto): \(name) is not captured")
                XCTAssertTrue(body.contains("\(hide) \(name);"), "\(proto): the upstream's \(name) is not hidden")
                XCTAssertTrue(body.contains("add_header \(name) \(variable) always;"), "\(proto): \(name) is not added")
            }
        }
        XCTAssertTrue(snippet.contains("fastcgi_param PORTCULLIS_UPGRADE     $http_upgrade if_not_empty;"))
        XCTAssertTrue(Set(Handoff.removed.map { $0.lowercased() }).isDisjoint(with: Handoff.carried.map { $0.lowercased() }),
                      "a removed field set empty after its carried value would win or clash")
    }

    func testGRPCRefusalsAreTrailersOnlyWithTheMappedStatus() {
        XCTAssertEqual(GRPCRefusal.code(forHTTPStatus: 401), 16)
        XCTAssertEqual(GRPCRefusal.code(forHTTPStatus: 403), 7)
        XCTAssertEqual(GRPCRefusal.code(forHTTPStatus: 429), 8)
        XCTAssertEqual(GRPCRefusal.code(forHTTPStatus: 503), 14)
        XCTAssertEqual(GRPCRefusal.code(forHTTPStatus: 504), 4)
        XCTAssertEqual(GRPCRefusal.code(forHTTPStatus: 418), 2)
        var headers = HTTPHeaders()
        headers.add("Retry-After", "3")
        let problem = ProblemDetails(status: 429, type: "rate-limited", title: "Too Many Requests", detail: "limit 5% reached\nnow", headers: headers)
        let (status, head) = GRPCRefusal.head(problem)
        XCTAssertEqual(status, 200)
        XCTAssertEqual(head["Content-Type"], "application/grpc")
        XCTAssertEqual(head["grpc-status"], "8")
        XCTAssertEqual(head["grpc-message"], "limit 5%25 reached%0anow")
        XCTAssertEqual(head["Content-Length"], "0")
        XCTAssertEqual(head["Retry-After"], "3")
        XCTAssertEqual(head["portcullis-problem"], "https://portcullis.dev/problems/rate-limited")
    }

    func testNginxUpstreamsListsEachTargetOfHandoffRoutesOnce() throws {
        let config = try parse(#"""
        {"name": "w", "match": {"prefix": "/w/"}, "upstream": "echo", "protocol": "websocket"},
        {"name": "g", "match": {"prefix": "/g/"}, "upstream": "echo", "protocol": "grpc"},
        {"name": "h", "match": {"prefix": "/h/"}, "upstream": "odd.name"}
        """#)
        let text = NginxUpstreams.render(config, source: "c.json")
        XCTAssertTrue(text.contains("log_format portcullis_handoff escape=json"))
        XCTAssertEqual(text.components(separatedBy: "upstream portcullis_echo_0 {").count, 2)
        XCTAssertTrue(text.contains("upstream portcullis_echo_0 {\n    server 127.0.0.1:9000;\n    keepalive 16;\n}"))
        XCTAssertTrue(text.contains("upstream portcullis_echo_1 {\n    server ws.example.com:443;"))
        XCTAssertFalse(text.contains("odd.name"), "an http route's upstream needs no block")
        XCTAssertEqual(NginxUpstreams.serverAddress(of: "http://[::1]:81"), "[::1]:81")
        XCTAssertEqual(NginxUpstreams.serverAddress(of: "http://[::1]"), "[::1]:80")
    }
}
