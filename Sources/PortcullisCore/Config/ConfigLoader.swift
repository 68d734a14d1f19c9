import Foundation

/// Reads a gateway configuration document and validates it as a whole.
public enum ConfigLoader {
    static let httpMethods: Set<String> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"]

    /// Parses and validates a configuration read from `file` (relative paths inside it resolve
    /// against its directory). Files it refers to (`pem_file`, `jwks_file`, the Redis
    /// `password_file`) come from `files`.
    public static func parse(bytes: [UInt8], file: String, files: any ConfigFiles = NoConfigFiles()) throws(ConfigErrors) -> GatewayConfig {
        let (config, issues) = try parseReportingAll(bytes: bytes, file: file, files: files)
        if !issues.isEmpty { throw ConfigErrors(issues) }
        return config
    }

    /// Reads as much of the config as is valid, with every issue found, so that `check` can go
    /// on to the plugin rule files and report their issues in the same run. Throws only when
    /// the file is not JSON at all.
    public static func parseReportingAll(bytes: [UInt8], file: String,
                                         files: any ConfigFiles = NoConfigFiles()) throws(ConfigErrors) -> (GatewayConfig, [ConfigIssue]) {
        let json: JSONValue
        do {
            json = try JSONCodec.parse(bytes, rejectDuplicateKeys: true)
        } catch {
            throw ConfigErrors([ConfigIssue(file: file, pointer: "", message: error.description)])
        }
        let diagnostics = ConfigDiagnostics(file: file)
        let root = ConfigNode(value: json, pointer: "", diagnostics: diagnostics)
        let baseDirectory = (file as NSString).deletingLastPathComponent
        let config = read(root, baseDirectory: baseDirectory.isEmpty ? "." : baseDirectory, files: files)
        return (config, diagnostics.issues)
    }

    static func read(_ root: ConfigNode, baseDirectory: String, files: any ConfigFiles) -> GatewayConfig {
        guard root.value?.objectValue != nil else {
            root.fail("the configuration must be a JSON object")
            return GatewayConfig()
        }
        root.rejectUnknownKeys(["server", "log", "upstreams", "routes", "plugins_dir", "plugins_watch", "transform", "$schema", "comment", "consumers", "auth", "rate_limit", "metrics"])
        var config = GatewayConfig()
        config.server = readServer(root["server"], baseDirectory: baseDirectory)
        config.log = readLog(root["log"], baseDirectory: baseDirectory)
        if let dir = root["plugins_dir"].nonEmptyString() { config.pluginsDirectory = resolve(dir, baseDirectory) }
        config.watchPlugins = root["plugins_watch"].bool() ?? false
        if config.watchPlugins && config.pluginsDirectory == nil {
            root["plugins_watch"].fail("needs \"plugins_dir\"")
        }
        if root["transform"].object() != nil {
            root["transform"].rejectUnknownKeys(["max_body_bytes"])
            if let v = root["transform"]["max_body_bytes"].int(min: 1, max: 1 << 30) { config.transform.maxBodyBytes = v }
        }
        config.consumers = AuthConfigReader.readConsumers(root["consumers"])
        config.auth = AuthConfigReader.readAuth(root["auth"], baseDirectory: baseDirectory, files: files)
        config.rateLimit = RateLimitConfigReader.readSettings(root["rate_limit"], baseDirectory: baseDirectory, files: files)
        config.metrics = MetricsSettings.read(root["metrics"])
        for (name, node) in root["upstreams"].object(required: true) ?? [] {
            if let upstream = readUpstream(name: name, node) { config.upstreams[name] = upstream }
        }
        let routeNodes = root["routes"].array(required: true) ?? []
        var seenNames: [String: String] = [:]
        for (index, node) in routeNodes.enumerated() {
            guard var route = readRoute(node, index: index) else { continue }
            route.limits = RateLimitConfigReader.readLimits(node["limits"], settings: config.rateLimit)
            if config.upstreams[route.upstream] == nil && node["upstream"].isPresent && root["upstreams"].value != nil {
                node["upstream"].fail("unknown upstream \"\(route.upstream)\"")
            }
            if let first = seenNames[route.name] {
                node["name"].fail("duplicate route name \"\(route.name)\" (first at \(first))")
            } else {
                seenNames[route.name] = node.pointer
            }
            if let policy = route.auth {
                AuthConfigReader.validateRoutePolicy(policy, node: node["auth"], settings: config.auth, consumers: config.consumers)
            }
            if route.protocol.handsOff { validateHandoff(route, node: node, auth: config.auth) }
            config.routes.append(route)
        }
        return config
    }

    static func resolve(_ path: String, _ base: String) -> String {
        ((path.hasPrefix("/") ? path : base + "/" + path) as NSString).standardizingPath
    }

    static func readServer(_ node: ConfigNode, baseDirectory: String) -> ServerSettings {
        var s = ServerSettings()
        s.runtimeDirectory = resolve(s.runtimeDirectory, baseDirectory)
        s.socket = resolve(s.socket, baseDirectory)
        guard node.isPresent else { return s }
        if node.object() == nil { return s }
        node.rejectUnknownKeys(["socket", "socket_mode", "socket_owner", "socket_group", "runtime_dir", "workers",
                                "threads", "max_body_bytes", "max_header_bytes", "shutdown_grace_seconds",
                                "hard_timeout_seconds", "ready_timeout_seconds", "recycle_after_requests", "recycle_above_rss_mb"])
        if let v = node["runtime_dir"].nonEmptyString() { s.runtimeDirectory = resolve(v, baseDirectory) }
        if let v = node["socket"].nonEmptyString() {
            s.socket = resolve(v, baseDirectory)
            // sun_path holds 108 bytes including the terminator.
            if s.socket.utf8.count > 107 { node["socket"].fail("socket path is longer than 107 bytes") }
        }
        if let v = node["socket_mode"].string() {
            if let mode = UInt32(v, radix: 8), mode <= 0o777 { s.socketMode = mode } else {
                node["socket_mode"].fail("expected an octal mode such as \"0660\", found \"\(v)\"")
            }
        }
        s.socketOwner = node["socket_owner"].nonEmptyString()
        s.socketGroup = node["socket_group"].nonEmptyString()
        if let v = node["workers"].int(min: 1, max: 256) { s.workers = Int(v) }
        if let v = node["threads"].int(min: 1, max: 1024) { s.threadsPerWorker = Int(v) }
        if let v = node["max_body_bytes"].int(min: 0, max: 1 << 40) { s.maxBodyBytes = v }
        if let v = node["max_header_bytes"].int(min: 4096, max: 16 << 20) { s.maxHeaderBytes = Int(v) }
        if let v = node["shutdown_grace_seconds"].int(min: 0, max: 3600) { s.shutdownGraceSeconds = Int(v) }
        if let v = node["hard_timeout_seconds"].int(min: 1, max: 86_400) { s.hardTimeoutSeconds = Int(v) }
        if let v = node["ready_timeout_seconds"].int(min: 1, max: 600) { s.readyTimeoutSeconds = Int(v) }
        if let v = node["recycle_after_requests"].int(min: 1, max: 1 << 40) { s.recycleAfterRequests = Int(v) }
        if let v = node["recycle_above_rss_mb"].int(min: 16, max: 1 << 20) { s.recycleAboveRSSMegabytes = Int(v) }
        return s
    }

    static func readLog(_ node: ConfigNode, baseDirectory: String) -> LogSettings {
        var l = LogSettings()
        guard node.isPresent, node.object() != nil else { return l }
        node.rejectUnknownKeys(["access_log", "buffer_bytes"])
        if let v = node["access_log"].nonEmptyString() { l.accessLog = v == "-" ? v : resolve(v, baseDirectory) }
        if let v = node["buffer_bytes"].int(min: 4096, max: 1 << 30) { l.bufferBytes = Int(v) }
        return l
    }

    static func readUpstream(name: String, _ node: ConfigNode) -> UpstreamConfig? {
        guard node.object(required: true) != nil else { return nil }
        node.rejectUnknownKeys(UpstreamConfigReader.fields)
        var targets: [String] = []
        var weights: [Int] = []
        for t in node["targets"].array(required: true) ?? [] {
            let (urlNode, weight) = UpstreamConfigReader.target(t)
            guard let url = urlNode.nonEmptyString(required: t.value?.objectValue == nil) else { continue }
            if let problem = validateTargetURL(url) { urlNode.fail(problem); continue }
            let normalized = url.hasSuffix("/") ? String(url.dropLast()) : url
            if targets.contains(normalized) { urlNode.fail("duplicate target \"\(normalized)\""); continue }
            targets.append(normalized)
            weights.append(weight)
        }
        if node["targets"].value?.arrayValue?.isEmpty == true { node["targets"].fail("at least one target is required") }
        var u = UpstreamConfig(name: name, targets: targets)
        u.weights = weights
        if let v = node["connect_timeout_ms"].int(min: 1, max: 600_000) { u.connectTimeoutMs = Int(v) }
        if let v = node["timeout_ms"].int(min: 1, max: 3_600_000) { u.timeoutMs = Int(v) }
        if let v = node["x_accel_buffering"].bool() { u.allowAccelBuffering = v }
        UpstreamConfigReader.read(node, into: &u)
        return u
    }

    /// Targets are `http(s)://host[:port]` (port 1-65535) with no path, query or credentials.
    static func validateTargetURL(_ url: String) -> String? {
        let lower = url.lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://") else {
            return "target \"\(url)\" must start with http:// or https://"
        }
        let rest = url.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: false)
        // ["http:", "", "host:port", ...]
        if rest.count > 3 && !(rest.count == 4 && rest[3].isEmpty) {
            return "target \"\(url)\" must not have a path"
        }
        let authority = rest.count > 2 ? rest[2] : ""
        if authority.isEmpty { return "target \"\(url)\" has no host" }
        if authority.contains("@") { return "target \"\(url)\" must not contain credentials" }
        if authority.contains(where: { $0 == "?" || $0 == "#" || $0 == " " }) { return "target \"\(url)\" is not a valid URL" }
        // A bad port would otherwise only show up as a 502 on every request.
        let hostEnd = authority.hasPrefix("[") ? authority.firstIndex(of: "]") : authority.startIndex
        guard let hostEnd else { return "target \"\(url)\" is not a valid URL" }
        if let colon = authority[hostEnd...].lastIndex(of: ":") {
            let port = authority[authority.index(after: colon)...]
            guard port.count <= 5, port.allSatisfy({ $0.isASCII && $0.isNumber }), let p = Int(port), p >= 1, p <= 65_535 else {
                return "target \"\(url)\" has an invalid port (1-65535)"
            }
        }
        return nil
    }

    static func readRoute(_ node: ConfigNode, index: Int) -> RouteConfig? {
        guard node.object(required: true) != nil else { return nil }
        node.rejectUnknownKeys(["name", "match", "upstream", "strip_prefix", "rewrite", "plugins", "comment", "auth", "limits", "slow_ms", "protocol"])
        let name = node["name"].nonEmptyString() ?? "route-\(index)"
        let upstream = node["upstream"].nonEmptyString(required: true) ?? ""
        guard let match = readMatch(node["match"]) else { return nil }
        var route = RouteConfig(name: name, match: match, upstream: upstream, index: index)
        route.stripPrefix = node["strip_prefix"].bool() ?? false
        route.plugins = node["plugins"].array()?.compactMap { $0.nonEmptyString(required: true) } ?? []
        route.auth = AuthConfigReader.readRoutePolicy(node["auth"])
        if let v = node["slow_ms"].int(min: 0, max: 3_600_000) { route.slowMs = Int(v) }
        if let p = node["protocol"].string() {
            if let known = RouteProtocol(rawValue: p) { route.protocol = known } else {
                node["protocol"].fail("unknown protocol \"\(p)\" (http, websocket or grpc)")
            }
        }
        if route.stripPrefix, case .exact = match.path {
            node["strip_prefix"].fail("strip_prefix needs a \"prefix\" match")
        }
        if let rewrite = node["rewrite"].nonEmptyString() {
            let params = Set(PathPattern.paramNames(in: pathText(match.path)))
            if !rewrite.hasPrefix("/") { node["rewrite"].fail("must start with \"/\"") }
            for used in PathPattern.paramNames(in: rewrite) where !params.contains(used) {
                node["rewrite"].fail("uses {\(used)}, which the match path does not capture")
            }
            route.rewrite = rewrite
        }
        return route
    }

    /// What a `websocket` or `grpc` route cannot have: nginx carries its request after the
    /// handoff, with the fixed set of headers the snippet names (docs/protocols.md).
    static func validateHandoff(_ route: RouteConfig, node: ConfigNode, auth: AuthSettings) {
        let kind = route.protocol.rawValue
        if !route.plugins.isEmpty {
            node["plugins"].fail("rule sets do not apply to a \(kind) route: nginx carries its request after the handoff")
        }
        if route.protocol == .grpc {
            if route.stripPrefix { node["strip_prefix"].fail("a grpc route forwards the path unchanged") }
            if route.rewrite != nil { node["rewrite"].fail("a grpc route forwards the path unchanged") }
        }
        for (i, limit) in route.limits.enumerated() where limit.params.algorithm == .concurrency {
            node["limits"]["\(i)"]["algorithm"].fail("a concurrency limit cannot count \(kind) connections: the worker's part ends at the handoff")
        }
        if !NginxUpstreams.isBlockNameSafe(route.upstream) {
            node["upstream"].fail("the upstream of a \(kind) route needs a name of letters, digits, \"_\" and \"-\" (it names nginx upstream blocks)")
        }
        if route.auth != nil, !auth.apiKey.header.caseInsensitiveEquals(Handoff.apiKeyHeader) {
            node["auth"].fail("a \(kind) route needs auth.api_key.header \"\(Handoff.apiKeyHeader)\": the nginx snippet removes only that header from the client's request")
        }
    }

    static func pathText(_ rule: RouteMatch.PathRule) -> String {
        switch rule { case .exact(let p), .prefix(let p): return p }
    }

    static func readMatch(_ node: ConfigNode) -> RouteMatch? {
        guard node.object(required: true) != nil else { return nil }
        node.rejectUnknownKeys(["path", "prefix", "host", "methods", "headers", "query"])
        let exact = node["path"].nonEmptyString()
        let prefix = node["prefix"].nonEmptyString()
        let rule: RouteMatch.PathRule
        switch (exact, prefix) {
        case (let p?, nil): rule = .exact(p)
        case (nil, let p?): rule = .prefix(p)
        case (_?, _?): node.fail("give either \"path\" or \"prefix\", not both"); return nil
        case (nil, nil): node.fail("a \"path\" or a \"prefix\" is required"); return nil
        }
        let pathNode = exact != nil ? node["path"] : node["prefix"]
        if let problem = PathPattern.validate(pathText(rule)) { pathNode.fail(problem) }
        var match = RouteMatch(path: rule)
        for host in node["host"].stringList() ?? [] {
            let h = host.lowercased()
            if h.isEmpty || h.contains("/") || h.contains(" ") || (h.contains("*") && !(h.hasPrefix("*.") && !h.dropFirst(2).contains("*"))) {
                node["host"].fail("invalid host pattern \"\(host)\" (exact name or \"*.suffix\")")
            } else {
                match.hosts.append(h)
            }
        }
        for (i, m) in (node["methods"].stringList() ?? []).enumerated() {
            let upper = m.uppercased()
            if httpMethods.contains(upper) { match.methods.append(upper) } else {
                node["methods"]["\(i)"].fail("unknown HTTP method \"\(m)\"")
            }
        }
        match.headers = readValueRules(node["headers"], lowercaseNames: true)
        match.query = readValueRules(node["query"], lowercaseNames: false)
        return match
    }

    /// `{"name": true}` means present, `{"name": "v"}` means equals.
    static func readValueRules(_ node: ConfigNode, lowercaseNames: Bool) -> [(name: String, rule: RouteMatch.ValueRule)] {
        var rules: [(name: String, rule: RouteMatch.ValueRule)] = []
        for (key, child) in node.object() ?? [] {
            let name = lowercaseNames ? key.lowercased() : key
            switch child.value {
            case .bool(true)?: rules.append((name, .present))
            case .string(let s)?: rules.append((name, .equals(s)))
            default: child.fail("expected true (present) or a string (equals), found \(child.value?.typeName ?? "nothing")")
            }
        }
        return rules
    }
}
