import Foundation
import XCTest
@testable import PortcullisCore

final class RedisSettingsTests: XCTestCase {
    let secret = "s3cr3t-Pa55word"
    var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "redis-settings-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Reads `rate_limit` from `json` as if from `<directory>/gw.json`; `environment` is the
    /// whole environment the reader sees.
    private func read(_ json: String, environment: [String: String] = [:]) -> (RedisSettings?, [String]) {
        let diagnostics = ConfigDiagnostics(file: "gw.json")
        let node = ConfigNode(value: try! JSONCodec.parse(Array(json.utf8), rejectDuplicateKeys: true), pointer: "/rate_limit", diagnostics: diagnostics)
        let settings = RateLimitConfigReader.readSettings(node, baseDirectory: directory, files: FixtureFiles(), environment: { environment[$0] })
        return (settings.redis, diagnostics.issues.map(\.description))
    }

    private func write(_ name: String, _ text: String) {
        FileManager.default.createFile(atPath: directory + "/" + name, contents: Data(text.utf8))
    }

    func testHostAndPortStayTheDefault() {
        let (redis, issues) = read(#"{"redis": {}}"#)
        XCTAssertEqual(issues, [])
        XCTAssertEqual(redis?.endpoint, .tcp(RedisAddress(host: "127.0.0.1", port: 6379)))
        XCTAssertNil(redis?.password)
        XCTAssertNil(redis?.username)
    }

    func testUnixSocket() {
        let (redis, issues) = read(#"{"redis": {"socket": "/run/redis/redis.sock"}}"#)
        XCTAssertEqual(issues, [])
        XCTAssertEqual(redis?.endpoint, .unix(path: "/run/redis/redis.sock"))
    }

    func testSentinels() {
        let (redis, issues) = read(#"{"redis": {"sentinels": ["10.0.0.1:26379", "[::1]:26380", "[::ffff:10.0.0.3]:26381"], "master_name": "mymaster"}}"#)
        XCTAssertEqual(issues, [])
        XCTAssertEqual(redis?.endpoint, .sentinel([RedisAddress(host: "10.0.0.1", port: 26379), RedisAddress(host: "::1", port: 26380),
                                                   RedisAddress(host: "::ffff:10.0.0.3", port: 26381)], masterName: "mymaster"))
        XCTAssertEqual(RedisAddress(host: "::1", port: 26380).description, "[::1]:26380")
    }

    /// A sentinel's host name is resolved when the configuration is read: the store asks the
    /// numeric addresses, every one a name has, in the resolver's order, each once.
    func testSentinelHostNamesAreResolvedAtLoad() throws {
        let (redis, issues) = read(#"{"redis": {"sentinels": ["localhost:26379", "127.0.0.1:26379", "10.0.0.1:26380"], "master_name": "m"}}"#)
        XCTAssertEqual(issues, [])
        guard case .sentinel(let addresses, "m")? = redis?.endpoint else { return XCTFail("\(String(describing: redis?.endpoint))") }
        let localhost = try HostResolver.addresses(of: "localhost").get()
        XCTAssertTrue(localhost.contains("127.0.0.1"), "\(localhost)")
        XCTAssertTrue(localhost.allSatisfy { $0 == "127.0.0.1" || $0 == "::1" }, "\(localhost)")
        XCTAssertEqual(addresses, localhost.map { RedisAddress(host: $0, port: 26379) } + [RedisAddress(host: "10.0.0.1", port: 26380)],
                       "127.0.0.1:26379 is already one of localhost's addresses")
    }

    func testAnUnresolvableSentinelIsRefused() {
        let (_, issues) = read(#"{"redis": {"sentinels": ["10.0.0.1:26379", "no-such-host.invalid:26379"], "master_name": "m"}}"#)
        XCTAssertEqual(issues.count, 1, "\(issues)")
        XCTAssertTrue(issues.first?.hasPrefix(#"gw.json: /rate_limit/redis/sentinels/1: cannot resolve "no-such-host.invalid": "#) == true, "\(issues)")
        XCTAssertEqual(HostResolver.addresses(of: "[::1]").map { $0 }, .failure(HostResolver.Failure(reason: String(cString: gai_strerror(EAI_NONAME)))),
                       "brackets are the configuration's syntax, not a name")
    }

    func testPasswordFromAFileRelativeToTheConfig() {
        write("redis.pass", secret + "\n")
        let (redis, issues) = read(#"{"redis": {"username": "gateway", "password_file": "redis.pass"}}"#)
        XCTAssertEqual(issues, [])
        XCTAssertEqual(redis?.username, "gateway")
        XCTAssertEqual(redis?.password?.secret, secret, "one trailing line break is not part of the password")
    }

    func testSentinelCredentials() {
        write("sentinel.pass", secret + "\r\n")
        let (redis, issues) = read(#"{"redis": {"sentinels": ["10.0.0.1:26379"], "master_name": "m", "password_env": "P", "sentinel_username": "watcher", "sentinel_password_file": "sentinel.pass"}}"#,
                                   environment: ["P": "master-" + secret])
        XCTAssertEqual(issues, [])
        XCTAssertEqual(redis?.password?.secret, "master-" + secret)
        XCTAssertNil(redis?.username)
        XCTAssertEqual(redis?.sentinelUsername, "watcher")
        XCTAssertEqual(redis?.sentinelPassword?.secret, secret)
        XCTAssertFalse(String(describing: redis).contains(secret))
    }

    func testPasswordFromTheEnvironment() {
        let (redis, issues) = read(#"{"redis": {"password_env": "PORTCULLIS_REDIS_PASSWORD"}}"#,
                                   environment: ["PORTCULLIS_REDIS_PASSWORD": secret])
        XCTAssertEqual(issues, [])
        XCTAssertNil(redis?.username, "the default user: AUTH <password>")
        XCTAssertEqual(redis?.password?.secret, secret)
    }

    func testThePasswordIsNeverPrinted() {
        write("redis.pass", secret)
        let (redis, _) = read(#"{"redis": {"username": "gateway", "password_file": "redis.pass"}}"#)
        guard let redis else { return XCTFail("no settings") }
        var dumped = ""
        dump(redis, to: &dumped)
        var settings = RateLimitSettings()
        settings.redis = redis
        for text in [String(describing: redis), String(reflecting: redis), dumped, "\(settings)", "\(redis.password!)",
                     String(describing: Mirror(reflecting: redis).children.map(\.value))] {
            XCTAssertFalse(text.contains(secret), text)
        }
        XCTAssertTrue(String(describing: redis).contains("<redacted>"))
    }

    func testEveryErrorHasItsPointerAndNoSecret() {
        write("empty.pass", "\n")
        write("two-lines.pass", secret + "\nsecond line\n")
        let cases: [(String, [String: String], String)] = [
            (#"{"redis": {"host": "10.0.0.1", "socket": "/run/redis.sock"}}"#, [:],
             #"gw.json: /rate_limit/redis: give one of "host"/"port", "socket" or "sentinels", not "host" and "socket""#),
            (#"{"redis": {"port": 6380, "sentinels": ["10.0.0.1:26379"], "master_name": "m"}}"#, [:],
             #"gw.json: /rate_limit/redis: give one of "host"/"port", "socket" or "sentinels", not "host" and "sentinels""#),
            (#"{"redis": {"socket": "redis.sock"}}"#, [:], "gw.json: /rate_limit/redis/socket: must be an absolute path"),
            (#"{"redis": {"socket": "/\#(String(repeating: "s", count: 120))"}}"#, [:],
             "gw.json: /rate_limit/redis/socket: longer than 107 bytes (a unix socket path's limit)"),
            (#"{"redis": {"sentinels": ["10.0.0.1:26379"]}}"#, [:], "gw.json: /rate_limit/redis/master_name: required field is missing"),
            (#"{"redis": {"sentinels": [], "master_name": "m"}}"#, [:], "gw.json: /rate_limit/redis/sentinels: at least one sentinel is required"),
            (#"{"redis": {"sentinels": ["10.0.0.1"], "master_name": "m"}}"#, [:],
             #"gw.json: /rate_limit/redis/sentinels/0: expected "host:port" (or "[v6 address]:port"), found "10.0.0.1""#),
            (#"{"redis": {"sentinels": ["10.0.0.1:0"], "master_name": "m"}}"#, [:],
             #"gw.json: /rate_limit/redis/sentinels/0: expected "host:port" (or "[v6 address]:port"), found "10.0.0.1:0""#),
            (#"{"redis": {"sentinels": ["localhost:1", "localhost:1"], "master_name": "m"}}"#, [:], #"gw.json: /rate_limit/redis/sentinels/1: duplicate sentinel "localhost:1""#),
            (#"{"redis": {"master_name": "m"}}"#, [:], #"gw.json: /rate_limit/redis/master_name: only applies with "sentinels""#),
            (#"{"redis": {"password_file": "missing.pass"}}"#, [:], "gw.json: /rate_limit/redis/password_file: cannot read \(directory)/missing.pass"),
            (#"{"redis": {"password_file": "empty.pass"}}"#, [:], "gw.json: /rate_limit/redis/password_file: \(directory)/empty.pass holds an empty password"),
            (#"{"redis": {"password_file": "two-lines.pass"}}"#, [:],
             "gw.json: /rate_limit/redis/password_file: \(directory)/two-lines.pass holds more than one line"),
            (#"{"redis": {"password_env": "NOT_SET"}}"#, [:], "gw.json: /rate_limit/redis/password_env: environment variable NOT_SET is not set"),
            (#"{"redis": {"password_env": "EMPTY"}}"#, ["EMPTY": ""], "gw.json: /rate_limit/redis/password_env: environment variable EMPTY holds an empty password"),
            (#"{"redis": {"password_env": "TWO"}}"#, ["TWO": secret + "\nx"], "gw.json: /rate_limit/redis/password_env: environment variable TWO holds more than one line"),
            (#"{"redis": {"password_env": "P", "password_file": "x"}}"#, ["P": secret],
             #"gw.json: /rate_limit/redis: give "password_file" or "password_env", not both"#),
            (#"{"redis": {"username": "gateway"}}"#, [:], #"gw.json: /rate_limit/redis/username: needs "password_file" or "password_env""#),
            (#"{"redis": {"password": "inline"}}"#, [:], #"gw.json: /rate_limit/redis/password: unknown field "password""#),
            (#"{"redis": {"sentinel_password_env": "P"}}"#, ["P": secret], #"gw.json: /rate_limit/redis/sentinel_password_env: only applies with "sentinels""#),
            (#"{"redis": {"sentinels": ["127.0.0.1:1"], "master_name": "m", "sentinel_username": "w"}}"#, [:],
             #"gw.json: /rate_limit/redis/sentinel_username: needs "sentinel_password_file" or "sentinel_password_env""#),
            (#"{"redis": {"sentinels": ["127.0.0.1:1"], "master_name": "m", "sentinel_password_env": "NOPE"}}"#, [:],
             "gw.json: /rate_limit/redis/sentinel_password_env: environment variable NOPE is not set"),
            (#"{"redis": {"tls": true}}"#, [:],
             #"gw.json: /rate_limit/redis/tls: TLS to Redis is not supported (Debian's hiredis 0.14 has no TLS): reach Redis through a local TLS tunnel such as stunnel and point "host"/"port" or "socket" at it (docs/rate-limiting.md)"#),
        ]
        for (json, environment, expected) in cases {
            let (_, issues) = read(json, environment: environment)
            XCTAssertEqual(issues, [expected], json)
            XCTAssertFalse(issues.contains { $0.contains(secret) }, "no message holds the password: \(issues)")
        }
    }

    /// Through the loader: a relative `password_file` is resolved against the config file's directory.
    func testTheLoaderResolvesThePasswordFileAgainstTheConfigFile() throws {
        write("redis.pass", secret)
        let json = """
            {"rate_limit": {"redis": {"password_file": "redis.pass", "socket": "/run/redis.sock"}},
             "upstreams": {"echo": {"targets": ["http://127.0.0.1:9000"]}},
             "routes": [{"name": "r", "match": {"prefix": "/"}, "upstream": "echo"}]}
            """
        let config = try ConfigLoader.parse(bytes: Array(json.utf8), file: directory + "/gw.json", files: FixtureFiles())
        XCTAssertEqual(config.rateLimit.redis?.password?.secret, secret)
        XCTAssertEqual(config.rateLimit.redis?.endpoint, .unix(path: "/run/redis.sock"))
    }
}
