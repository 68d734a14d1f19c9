import XCTest
@testable import PortcullisCore

final class ConfigLoaderTests: XCTestCase {
    private func errors(_ json: String) -> [String] {
        do {
            _ = try ConfigLoader.parse(bytes: Array(json.utf8), file: "config/portcullis.json")
            return []
        } catch {
            return error.issues.map(\.description)
        }
    }

    private let upstreams = #""upstreams": {"echo": {"targets": ["http://127.0.0.1:9000"]}}"#

    func testValidConfigParses() throws {
        let config = try ConfigLoader.parse(bytes: Array("""
        {"server": {"socket": "/tmp/p.sock", "workers": 3, "threads": 4, "socket_mode": "0600"}, \(upstreams),
         "routes": [{"name": "echo", "match": {"prefix": "/echo/", "methods": ["get"], "headers": {"X-A": true}, "query": {"v": "2"}},
                     "upstream": "echo"}]}
        """.utf8), file: "c.json")
        XCTAssertEqual(config.server.workers, 3)
        XCTAssertEqual(config.server.socketMode, 0o600)
        XCTAssertEqual(config.routes[0].match.methods, ["GET"])
        XCTAssertEqual(config.routes[0].match.headers.first?.name, "x-a")
        XCTAssertEqual(config.upstreams["echo"]?.targets, ["http://127.0.0.1:9000"])
    }

    func testUnknownUpstreamNamesFilePointerAndValue() {
        let routes = (0..<4).map { i in #"{"name": "r\#(i)", "match": {"prefix": "/r\#(i)/"}, "upstream": "\#(i == 3 ? "userz" : "echo")"}"# }
        XCTAssertEqual(errors("{\(upstreams), \"routes\": [\(routes.joined(separator: ","))]}"),
                       [#"config/portcullis.json: /routes/3/upstream: unknown upstream "userz""#])
    }

    func testEveryErrorIsReportedInOnePass() {
        let found = errors("""
        {"server": {"workers": 0, "socket_mode": "rw"}, "upstreams": {"a": {"targets": ["ftp://x"], "timeout_ms": "5"}},
         "routes": [{"match": {"path": "/x", "prefix": "/y"}, "upstream": "a"},
                    {"match": {"path": "no-slash", "methods": ["FETCH"]}, "upstream": "a", "rewrite": "/{nope}"},
                    {"name": "dup", "match": {"prefix": "/a/"}, "upstream": "a", "colour": "red"},
                    {"name": "dup", "match": {"prefix": "/b/"}, "upstream": "a"}], "extra": 1}
        """)
        XCTAssertEqual(Set(found), [
            "config/portcullis.json: /extra: unknown field \"extra\"",
            "config/portcullis.json: /server/workers: must be between 1 and 256, found 0",
            "config/portcullis.json: /server/socket_mode: expected an octal mode such as \"0660\", found \"rw\"",
            "config/portcullis.json: /upstreams/a/targets/0: target \"ftp://x\" must start with http:// or https://",
            "config/portcullis.json: /upstreams/a/timeout_ms: expected an integer, found string",
            "config/portcullis.json: /routes/0/match: give either \"path\" or \"prefix\", not both",
            "config/portcullis.json: /routes/1/match/path: must start with \"/\"",
            "config/portcullis.json: /routes/1/match/methods/0: unknown HTTP method \"FETCH\"",
            "config/portcullis.json: /routes/1/rewrite: uses {nope}, which the match path does not capture",
            "config/portcullis.json: /routes/2/colour: unknown field \"colour\"",
            "config/portcullis.json: /routes/3/name: duplicate route name \"dup\" (first at /routes/2)",
        ])
    }

    func testInvalidJSONIsReportedWithPosition() {
        let found = errors("{\"routes\": [}")
        XCTAssertEqual(found.count, 1)
        XCTAssertTrue(found[0].hasPrefix("config/portcullis.json: /: invalid JSON at line 1"), found[0])
    }

    func testDuplicateKeysAreRejected() {
        let found = errors("{\(upstreams), \"routes\": [], \"routes\": []}")
        XCTAssertEqual(found.count, 1)
        XCTAssertTrue(found[0].contains("duplicate"), found[0])
    }

    func testMissingSectionsAndBadTypes() {
        XCTAssertEqual(Set(errors("{}")), [
            "config/portcullis.json: /upstreams: required field is missing",
            "config/portcullis.json: /routes: required field is missing",
        ])
        XCTAssertEqual(errors("[]"), ["config/portcullis.json: /: the configuration must be a JSON object"])
        XCTAssertEqual(errors("{\(upstreams), \"routes\": [{\"match\": {\"prefix\": \"/{a}b/\"}, \"upstream\": \"echo\"}]}"),
                       ["config/portcullis.json: /routes/0/match/prefix: segment \"{a}b\" must be literal or a whole {param}"])
        XCTAssertEqual(errors("{\(upstreams), \"routes\": [{\"match\": {\"path\": \"/x\"}, \"upstream\": \"echo\", \"strip_prefix\": true}]}"),
                       ["config/portcullis.json: /routes/0/strip_prefix: strip_prefix needs a \"prefix\" match"])
        XCTAssertEqual(errors("{\"upstreams\": {\"u\": {\"targets\": [\"http://user:pw@host\"]}}, \"routes\": []}"),
                       ["config/portcullis.json: /upstreams/u/targets/0: target \"http://user:pw@host\" must not contain credentials"])
    }

    /// configuration.md: a target is `http(s)://host[:port]`, port 1-65535 (80/443 when absent), a
    /// trailing "/" ignored; anything else is refused at load rather than failing every request.
    func testTargetPortsAreCheckedAtLoad() throws {
        let config = try ConfigLoader.parse(bytes: Array("""
        {"upstreams": {"u": {"targets": ["http://10.0.0.5", "https://api.example.com:8443/", "http://[fd00::5]:65535",
                                         {"url": "http://[fd00::6]", "weight": 2}]}}, "routes": []}
        """.utf8), file: "c.json")
        XCTAssertEqual(config.upstreams["u"]?.targets, ["http://10.0.0.5", "https://api.example.com:8443", "http://[fd00::5]:65535", "http://[fd00::6]"])
        for bad in ["http://h:0", "http://h:65536", "http://h:", "http://h:+80", "http://h:8o", "http://[fd00::5]:x", "http://[fd00::5"] {
            XCTAssertEqual(errors("{\"upstreams\": {\"u\": {\"targets\": [\"\(bad)\"]}}, \"routes\": []}").count, 1, bad)
        }
        XCTAssertEqual(errors(#"{"upstreams": {"u": {"targets": ["http://10.0.0.5:99999"]}}, "routes": []}"#),
                       [#"config/portcullis.json: /upstreams/u/targets/0: target "http://10.0.0.5:99999" has an invalid port (1-65535)"#])
    }

    func testRelativePathsResolveAgainstConfigDirectory() throws {
        let config = try ConfigLoader.parse(bytes: Array("{\(upstreams), \"routes\": [], \"server\": {\"socket\": \"run/x.sock\"}}".utf8),
                                            file: "/etc/portcullis/gw.json")
        XCTAssertEqual(config.server.socket, "/etc/portcullis/run/x.sock")
        XCTAssertEqual(config.server.runtimeDirectory, "/etc/portcullis/run")
    }
}
