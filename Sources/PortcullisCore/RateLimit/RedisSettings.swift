import Foundation

/// How to reach the Redis shared by the gateway instances (`rate_limit.redis`).
public struct RedisSettings: Sendable, Equatable {
    /// Where Redis is: a TCP address, a unix socket, or the master a set of sentinels names.
    public var endpoint = RedisEndpoint.tcp(RedisAddress(host: "127.0.0.1", port: 6379))
    /// The ACL user of `AUTH` (nil: the single-argument `AUTH <password>`, Redis's `default` user).
    public var username: String?
    /// Sent with `AUTH` first on every new connection (nil: no `AUTH`).
    public var password: RedisPassword?
    /// Like `username` and `password`, for the connections that ask a sentinel for the master.
    public var sentinelUsername: String?
    public var sentinelPassword: RedisPassword?
    /// Prefix of every key (`<namespace>:rl:…`), so several deployments can share one Redis.
    public var namespace = "portcullis"
    /// Connect and command timeout (a sentinel's answer included).
    public var timeoutMs = 50
    /// Gateway instances sharing the limits; the `local` fallback divides each limit by it.
    public var instances = 1
    /// How long to wait after a failure before trying Redis again.
    public var retryMs = 1_000
    public init() {}
}

/// A TCP address: `host` as written in the configuration for `host`/`port` (an IP address
/// should be used there: hiredis resolves a name with a blocking `getaddrinfo`), a numeric
/// address for a sentinel (names are resolved when the configuration is loaded).
public struct RedisAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `host:port`, or `[v6]:port`.
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Parses `host:port` or `[v6 address]:port`; nil when malformed.
    public init?(parsing text: String) {
        var host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[close...].hasPrefix("]:") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { return nil }
        }
        guard !host.isEmpty, !host.contains(where: { $0 == " " || $0 == "/" }),
              portText.count <= 5, portText.allSatisfy(\.isASCII), let port = Int(portText), port > 0, port < 65_536 else { return nil }
        self.host = String(host)
        self.port = port
    }
}

/// Where the store connects.
public enum RedisEndpoint: Sendable, Equatable {
    /// `host` and `port`.
    case tcp(RedisAddress)
    /// `socket`: the path of Redis's unix socket.
    case unix(path: String)
    /// `sentinels` and `master_name`: the current master, asked of the sentinels in turn.
    case sentinel([RedisAddress], masterName: String)
}

/// A Redis password: compared and sent, never printed. Every textual form of it (and of the
/// settings holding it: `print`, `dump`, string interpolation, `Mirror`) is `<redacted>`.
public struct RedisPassword: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// Only for the `AUTH` command.
    public let secret: String
    public init(_ secret: String) { self.secret = secret }
    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

/// Reads `rate_limit.redis`.
enum RedisSettingsReader {
    static let keys: Set<String> = ["host", "port", "socket", "sentinels", "master_name", "username", "password_file",
                                    "password_env", "sentinel_username", "sentinel_password_file", "sentinel_password_env",
                                    "tls", "namespace", "timeout_ms", "instances", "retry_ms", "comment"]
    /// Bounds what a password file may hold (one line, Redis's passwords are short).
    static let maxPasswordBytes = 4_096
    /// `sun_path` holds 108 bytes with the terminating NUL.
    static let maxSocketPathBytes = 107

    /// `environment` looks variables up (the process environment outside tests); relative
    /// `password_file` paths are resolved against `baseDirectory` (the config file's).
    static func read(_ r: ConfigNode, baseDirectory: String, files: any ConfigFiles, environment: (String) -> String?) -> RedisSettings {
        r.rejectUnknownKeys(keys)
        var redis = RedisSettings()
        redis.endpoint = readEndpoint(r)
        if r["tls"].bool() == true {
            // Debian 12's libhiredis 0.14 is built without hiredis_ssl (TLS came with hiredis 1.0).
            r["tls"].fail("TLS to Redis is not supported (Debian's hiredis 0.14 has no TLS): reach Redis through a local TLS tunnel such as stunnel and point \"host\"/\"port\" or \"socket\" at it (docs/rate-limiting.md)")
        }
        (redis.username, redis.password) = readCredentials(r, prefix: "", baseDirectory: baseDirectory, files: files, environment: environment)
        (redis.sentinelUsername, redis.sentinelPassword) = readCredentials(r, prefix: "sentinel_", baseDirectory: baseDirectory,
                                                                           files: files, environment: environment)
        for key in ["sentinel_username", "sentinel_password_file", "sentinel_password_env"] where r[key].isPresent && !r["sentinels"].isPresent {
            r[key].fail("only applies with \"sentinels\"")
        }
        if let v = r["namespace"].nonEmptyString() {
            if v.contains(where: { $0 == " " || $0 == "\n" || $0 == "\r" }) {
                r["namespace"].fail("must not contain spaces or line breaks")
            } else {
                redis.namespace = v
            }
        }
        if let v = r["timeout_ms"].int(min: 1, max: 10_000) { redis.timeoutMs = Int(v) }
        if let v = r["instances"].int(min: 1, max: 10_000) { redis.instances = Int(v) }
        if let v = r["retry_ms"].int(min: 10, max: 600_000) { redis.retryMs = Int(v) }
        return redis
    }

    /// `host`/`port`, `socket`, or `sentinels` with `master_name`: exactly one kind.
    static func readEndpoint(_ r: ConfigNode) -> RedisEndpoint {
        let given = [("host", r["host"].isPresent || r["port"].isPresent), ("socket", r["socket"].isPresent),
                     ("sentinels", r["sentinels"].isPresent)].filter(\.1).map(\.0)
        if given.count > 1 {
            r.fail("give one of \"host\"/\"port\", \"socket\" or \"sentinels\", not \(given.map { "\"\($0)\"" }.joined(separator: " and "))")
        }
        if r["master_name"].isPresent && !r["sentinels"].isPresent {
            r["master_name"].fail("only applies with \"sentinels\"")
        }
        if r["socket"].isPresent {
            guard let path = r["socket"].nonEmptyString() else { return .unix(path: "") }
            if !path.hasPrefix("/") { r["socket"].fail("must be an absolute path") }
            if path.utf8.count > maxSocketPathBytes { r["socket"].fail("longer than \(maxSocketPathBytes) bytes (a unix socket path's limit)") }
            return .unix(path: path)
        }
        if r["sentinels"].isPresent {
            var written: [RedisAddress] = []
            var addresses: [RedisAddress] = []
            if let items = r["sentinels"].array() {
                if items.isEmpty { r["sentinels"].fail("at least one sentinel is required") }
                for item in items {
                    guard let text = item.nonEmptyString(required: true) else { continue }
                    if let a = RedisAddress(parsing: text) {
                        if written.contains(a) { item.fail("duplicate sentinel \"\(text)\""); continue }
                        written.append(a)
                        // Resolved here, once per load, because the sentinels are asked on the
                        // event loop, where hiredis's blocking lookup must not run.
                        switch HostResolver.addresses(of: a.host) {
                        case .success(let hosts):
                            for host in hosts where !addresses.contains(RedisAddress(host: host, port: a.port)) {
                                addresses.append(RedisAddress(host: host, port: a.port))
                            }
                        case .failure(let why):
                            item.fail("cannot resolve \"\(a.host)\": \(why.reason)")
                        }
                    } else {
                        item.fail("expected \"host:port\" (or \"[v6 address]:port\"), found \"\(text)\"")
                    }
                }
            }
            let name = r["master_name"].nonEmptyString(required: true) ?? ""
            if name.contains(where: { $0 == " " || $0.isNewline }) { r["master_name"].fail("must not contain spaces or line breaks") }
            return .sentinel(addresses, masterName: name)
        }
        var address = RedisAddress(host: "127.0.0.1", port: 6379)
        if let v = r["host"].nonEmptyString() { address.host = v }
        if let v = r["port"].int(min: 1, max: 65_535) { address.port = Int(v) }
        return .tcp(address)
    }

    /// `<prefix>username` and the password from `<prefix>password_file` (its content; one
    /// trailing line break is not part of it) or `<prefix>password_env`. Messages name the file
    /// or the variable, never the value.
    static func readCredentials(_ r: ConfigNode, prefix: String, baseDirectory: String, files: any ConfigFiles,
                                environment: (String) -> String?) -> (String?, RedisPassword?) {
        let (userKey, fileKey, envKey) = (prefix + "username", prefix + "password_file", prefix + "password_env")
        let username = r[userKey].nonEmptyString()
        if let username, username.contains(where: { $0 == " " || $0.isNewline }) {
            r[userKey].fail("must not contain spaces or line breaks")
        }
        if username != nil && !r[fileKey].isPresent && !r[envKey].isPresent {
            r[userKey].fail("needs \"\(fileKey)\" or \"\(envKey)\"")
        }
        if r[fileKey].isPresent && r[envKey].isPresent {
            r.fail("give \"\(fileKey)\" or \"\(envKey)\", not both")
            return (username, nil)
        }
        if let file = r[fileKey].nonEmptyString() {
            let path = file.hasPrefix("/") ? file : baseDirectory + "/" + file
            guard let data = files.contents(path) else {
                r[fileKey].fail("cannot read \(path)")
                return (username, nil)
            }
            guard data.count <= maxPasswordBytes else {
                r[fileKey].fail("\(path) is larger than \(maxPasswordBytes) bytes")
                return (username, nil)
            }
            var text = String(decoding: data, as: UTF8.self)
            // "\r\n" is one Character in Swift: one removeLast drops either line break.
            if text.hasSuffix("\r\n") || text.hasSuffix("\n") { text.removeLast() }
            return (username, checked(text, node: r[fileKey], source: path))
        }
        if let name = r[envKey].nonEmptyString() {
            guard let value = environment(name) else {
                r[envKey].fail("environment variable \(name) is not set")
                return (username, nil)
            }
            return (username, checked(value, node: r[envKey], source: "environment variable \(name)"))
        }
        return (username, nil)
    }

    private static func checked(_ text: String, node: ConfigNode, source: String) -> RedisPassword? {
        if text.isEmpty {
            node.fail("\(source) holds an empty password")
            return nil
        }
        if text.contains(where: \.isNewline) {
            node.fail("\(source) holds more than one line")
            return nil
        }
        return RedisPassword(text)
    }
}
