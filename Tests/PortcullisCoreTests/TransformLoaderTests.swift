import XCTest
import Foundation
import PortcullisCore
@testable import PortcullisPlugins

/// Builds plugin sets from inline rule files for the transform tests.
enum TransformFixture {
    static func set(_ files: [(String, String)], maxBody: Int64 = 1 << 20) throws -> PluginSet {
        try PluginSet.parse(files: files.map { ($0.0, Array($0.1.utf8)) }, defaultMaxBodyBytes: maxBody)
    }

    /// One rule set in `plugins/test.json`, returned as a chain.
    static func chain(_ json: String, maxBody: Int64 = 1 << 20) throws -> TransformChain {
        let set = try set([("plugins/test.json", json)], maxBody: maxBody)
        return try set.chain(set.transforms.keys.sorted())
    }

    /// The issues a set of rule files is refused with, as printed.
    static func errors(_ files: [(String, String)]) -> [String] {
        do {
            _ = try set(files)
            return []
        } catch let error as ConfigErrors {
            return error.issues.map(\.description)
        } catch {
            return ["unexpected \(error)"]
        }
    }

    static func errors(_ json: String) -> [String] { errors([("plugins/bad.json", json)]) }
}

final class TransformLoaderTests: XCTestCase {
    func testInvalidJSONIsRefusedWithPosition() {
        XCTAssertEqual(TransformFixture.errors(#"{"name": "x", "type": }"#),
                       ["plugins/bad.json: /: invalid JSON at line 1, column 23: unexpected token near '}'"])
    }

    func testUnknownOperationNamesFilePointerAndOp() {
        let errors = TransformFixture.errors("""
            {"name":"a","type":"transform","phase":"request","operations":[
              {"op":"header.set","name":"X-A","value":"1"},
              {"op":"header.remove","name":"X-B"},
              {"op":"header.sett","name":"X-C","value":"2"}]}
            """)
        XCTAssertEqual(errors, [#"plugins/bad.json: /operations/2/op: unknown operation "header.sett""#])
    }

    func testBadPointerIsRefused() {
        XCTAssertEqual(TransformFixture.errors(#"{"name":"a","type":"transform","phase":"request","operations":[{"op":"body.remove","path":"internal"}]}"#),
                       [#"plugins/bad.json: /operations/0/path: invalid JSON pointer "internal": must be empty or start with "/""#])
        XCTAssertEqual(TransformFixture.errors(#"{"name":"a","type":"transform","phase":"request","operations":[{"op":"body.move","from":"/a~7","path":"/b"}]}"#),
                       [#"plugins/bad.json: /operations/0/from: invalid JSON pointer "/a~7": "~" must be followed by 0 or 1"#])
    }

    func testStaticCRLFHeaderTemplateIsRefusedAtLoad() {
        XCTAssertEqual(TransformFixture.errors(#"{"name":"a","type":"transform","phase":"request","operations":[{"op":"header.set","name":"X-A","value":"ok\r\nX-Evil: 1"}]}"#),
                       ["plugins/bad.json: /operations/0/value: value contains CR, LF or another control character"])
        XCTAssertEqual(TransformFixture.errors(#"{"name":"a","type":"transform","phase":"response","operations":[{"op":"header.add","name":"X-A","value":"{{consumer.id}}\n"}]}"#),
                       ["plugins/bad.json: /operations/0/value: value contains CR, LF or another control character"],
                       "the literal part of a dynamic template is checked at load time too")
    }

    func testDuplicateNamesAcrossFiles() {
        let rule = #"{"name":"same","type":"transform","phase":"request","operations":[{"op":"header.remove","name":"X-A"}]}"#
        XCTAssertEqual(TransformFixture.errors([("plugins/a.json", rule), ("plugins/b.json", "[\(rule)]")]),
                       [#"plugins/b.json: /0/name: duplicate rule set name "same" (first in plugins/a.json: /)"#])
    }

    func testDuplicateKeysAreRefused() {
        let errors = TransformFixture.errors(#"{"name":"a","name":"b","type":"transform","phase":"request","operations":[]}"#)
        XCTAssertEqual(errors.count, 1)
        XCTAssertTrue(errors[0].hasPrefix("plugins/bad.json: /: invalid JSON at line 1"), errors[0])
        XCTAssertTrue(errors[0].contains("duplicate object key"), errors[0])
    }

    func testEveryIssueOfEveryFileIsReported() {
        let errors = TransformFixture.errors([
            ("plugins/a.json", #"{"name":"bad name","type":"transform","phase":"sideways","operations":[],"extra":1}"#),
            ("plugins/b.json", #"{"name":"b","type":"cache","phase":"request","operations":[]}"#),
            ("plugins/c.json", #"{"name":"c","type":"transform","phase":"request","condition":{"status":404},"operations":[{"op":"status.map","from":404,"to":200},{"op":"query.set","name":"a","value":"{{status}}"},{"op":"path.rewrite","regex":"^/v1/(.*)$","replacement":"/api/$2"},{"op":"path.rewrite","regex":"([","replacement":"/"},{"op":"header.set","name":"Content-Length","value":"1"},{"op":"header.set","name":"Bad Name","value":"1"},{"op":"body.move","from":"/a","path":"/a/b"},{"op":"body.set","path":"/a"}]}"#),
            ("plugins/d.json", #"{"name":"d","type":"transform","phase":"response","operations":[{"op":"method.set","value":"GET"},{"op":"header.set","name":"X-A","value":"{{consumer.idd}}"},{"op":"status.map","from":"6xx","to":200},{"op":"body.set","path":"/x","value":{"y":["{{nope}}"]}}]}"#),
            ("plugins/README.md", "not json, not read by load(directory:) but parse() reads what it is given"),
        ].filter { $0.0.hasSuffix(".json") })
        XCTAssertEqual(errors, [
            #"plugins/a.json: /extra: unknown field "extra""#,
            #"plugins/a.json: /name: rule set name "bad name" may hold only letters, digits, ".", "_" and "-""#,
            #"plugins/a.json: /phase: unknown phase "sideways" (expected "request" or "response")"#,
            "plugins/a.json: /operations: at least one operation is required",
            #"plugins/b.json: /type: unknown plugin type "cache" (known: transform)"#,
            "plugins/c.json: /condition/status: a status condition needs the response phase",
            #"plugins/c.json: /operations/0/op: operation "status.map" is only allowed in the response phase"#,
            #"plugins/c.json: /operations/1/value: template variable "status" is only available in the response phase"#,
            "plugins/c.json: /operations/2/replacement: replacement uses $2 but the regex has 1 capture group",
            #"plugins/c.json: /operations/3/regex: invalid regular expression "([""#,
            #"plugins/c.json: /operations/4/name: header "Content-Length" is managed by the gateway and cannot be transformed"#,
            #"plugins/c.json: /operations/5/name: invalid header name "Bad Name""#,
            #"plugins/c.json: /operations/6/path: cannot move "/a" into itself"#,
            "plugins/c.json: /operations/7/value: required field is missing",
            #"plugins/d.json: /operations/0/op: operation "method.set" is only allowed in the request phase"#,
            #"plugins/d.json: /operations/1/value: unknown template variable "consumer.idd""#,
            #"plugins/d.json: /operations/2/from: expected a status code (100-599), "4xx" or "400-499""#,
            #"plugins/d.json: /operations/3/value/y/0: unknown template variable "nope""#,
        ])
    }

    func testLoadDirectoryReadsOnlyJSONFilesInNameOrder() throws {
        let dir = "/etc/pc/plugins"
        var files = ConfigBundle(configPath: "/etc/pc/portcullis.json", configBytes: [])
        files.record(directory: dir, names: ["2.json", "1.json", "README.md"])
        files.record(file: dir + "/README.md", bytes: Array("# notes".utf8))
        files.record(file: dir + "/1.json", bytes: Array(#"{"name":"one","type":"transform","phase":"request","operations":[{"op":"header.remove","name":"X-A"}]}"#.utf8))
        files.record(file: dir + "/2.json", bytes: Array(#"[{"name":"two","type":"transform","phase":"response","max_body_bytes":512,"operations":[{"op":"body.remove","path":"/a"}]}]"#.utf8))
        let set = try PluginSet.load(directory: dir, files: files, defaultMaxBodyBytes: 4096)
        XCTAssertEqual(set.transforms.keys.sorted(), ["one", "two"])
        XCTAssertEqual(set.transforms["one"]?.maxBodyBytes, 4096)
        XCTAssertEqual(set.transforms["two"]?.maxBodyBytes, 512)
        XCTAssertEqual(set.transforms["two"]?.file, dir + "/2.json")

        files.record(directory: dir, names: ["1.json", "2.json", "3.json", "README.md"])
        files.record(file: dir + "/3.json", bytes: Array(#"{"name":"three","type":"transform","phase":"request","operations":[{"op":"header.sett"}]}"#.utf8))
        XCTAssertThrowsError(try PluginSet.load(directory: dir, files: files)) { error in
            XCTAssertEqual((error as? ConfigErrors)?.description, dir + #"/3.json: /operations/0/op: unknown operation "header.sett""#)
        }
        XCTAssertThrowsError(try PluginSet.load(directory: dir + "/missing", files: files)) { error in
            XCTAssertEqual((error as? ConfigErrors)?.description, dir + "/missing: /: cannot read the plugins directory")
        }
    }

    /// plugins.md, Rule files: hidden `.json` files are ignored, a file holds an object or a
    /// non-empty array, and the managed headers are exactly the listed ones.
    func testDocumentedRuleFileShapeAndManagedHeaders() throws {
        let dir = "/etc/pc/plugins"
        var files = ConfigBundle(configPath: "/etc/pc/portcullis.json", configBytes: [])
        files.record(directory: dir, names: [".draft.json", "1.json"])
        files.record(file: dir + "/.draft.json", bytes: Array("not json".utf8))
        files.record(file: dir + "/1.json", bytes: Array(#"{"name":"one","type":"transform","phase":"request","operations":[{"op":"header.remove","name":"X-A"}]}"#.utf8))
        XCTAssertEqual(try PluginSet.load(directory: dir, files: files).transforms.keys.sorted(), ["one"])

        XCTAssertEqual(TransformFixture.errors("[]"), ["plugins/bad.json: /: a rule file must hold at least one rule set"])
        XCTAssertEqual(TransformFixture.errors("3"), ["plugins/bad.json: /: a rule file must hold a rule set object or an array of them, found number"])
        func setting(_ name: String) -> [String] {
            TransformFixture.errors(#"{"name":"h","type":"transform","phase":"request","operations":[{"op":"header.set","name":"\#(name)","value":"v"}]}"#)
        }
        for managed in ["Connection", "keep-alive", "Transfer-Encoding", "TE", "Trailer", "Upgrade", "Proxy-Connection",
                        "Proxy-Authenticate", "Proxy-Authorization", "Content-Length", "X-Request-ID", "X-Forwarded-For",
                        "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "Forwarded", "X-Real-IP"] {
            XCTAssertEqual(setting(managed), [#"plugins/bad.json: /operations/0/name: header "\#(managed)" is managed by the gateway and cannot be transformed"#])
        }
        XCTAssertEqual(setting("Host"), [#"plugins/bad.json: /operations/0/name: header "Host" is managed by the gateway and cannot be transformed (use host.set)"#])
        for free in ["X-Forwarded-Prefix", "Proxy", "Expect"] { XCTAssertEqual(setting(free), [], free) }
    }

    func testBundleRoundTripsThroughItsFileEncoding() throws {
        var bundle = ConfigBundle(configPath: "config/portcullis.json", configBytes: Array(#"{"routes": []}"#.utf8))
        bundle.record(directory: "plugins", names: ["a.json"])
        bundle.record(file: "plugins/a.json", bytes: [0, 1, 2, 255])
        bundle.record(file: "config/key.pem", bytes: Array("-----BEGIN PUBLIC KEY-----\n".utf8))
        XCTAssertEqual(ConfigBundle.decode(bundle.encoded()), bundle)
        XCTAssertNil(ConfigBundle.decode(Array(#"{"format": 2}"#.utf8)))
        XCTAssertNil(ConfigBundle.decode(Array("not json".utf8)))
    }

    func testRouteReferencesAreValidated() throws {
        let set = try TransformFixture.set([("plugins/a.json", #"{"name":"known","type":"transform","phase":"request","operations":[{"op":"header.remove","name":"X-A"}]}"#)])
        let config = try ConfigLoader.parse(bytes: Array("""
            {"upstreams":{"u":{"targets":["http://127.0.0.1:9"]}},
             "transform":{"max_body_bytes":2048},
             "routes":[{"name":"r0","match":{"prefix":"/a/"},"upstream":"u"},
                       {"name":"r1","match":{"prefix":"/b/"},"upstream":"u","plugins":["known","unknown"]}]}
            """.utf8), file: "config/portcullis.json")
        XCTAssertEqual(config.routes[1].plugins, ["known", "unknown"])
        XCTAssertEqual(config.transform.maxBodyBytes, 2048)
        XCTAssertEqual(set.validate(routeReferences: config.routes, configFile: "config/portcullis.json").map(\.description),
                       [#"config/portcullis.json: /routes/1/plugins/1: unknown plugin rule set "unknown""#])
        XCTAssertThrowsError(try set.chain(["unknown"])) { error in
            XCTAssertEqual((error as? TransformError)?.problem.status, 500)
        }
        let chains = try set.chains(for: [config.routes[0]])
        XCTAssertTrue(chains[0].isEmpty)
    }

    func testConfigRejectsBadTransformSection() {
        XCTAssertThrowsError(try ConfigLoader.parse(bytes: Array("""
            {"upstreams":{"u":{"targets":["http://127.0.0.1:9"]}},"transform":{"max_body_bytes":0,"x":1},
             "routes":[{"match":{"prefix":"/a/"},"upstream":"u","plugins":"p"}]}
            """.utf8), file: "c.json")) { error in
            XCTAssertEqual((error as? ConfigErrors)?.issues.map(\.description), [
                #"c.json: /transform/x: unknown field "x""#,
                "c.json: /transform/max_body_bytes: must be between 1 and 1073741824, found 0",
                "c.json: /routes/0/plugins: expected an array, found string",
            ])
        }
    }
}
