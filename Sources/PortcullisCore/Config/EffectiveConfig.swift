import Foundation

/// The configuration as the gateway resolved it, for `portcullis check --print-effective`:
/// the file's own document with every `server` and `log` field at its effective value (defaults
/// filled in, paths absolute as resolved against the config file's directory), `plugins_dir`
/// resolved, every upstream field at its value in use, and JWT `secret`s shown as `"(redacted)"`.
/// Scripts read the socket path and pool size from it instead of re-deriving them.
public enum EffectiveConfig {
    public static func document(of config: GatewayConfig, source bytes: [UInt8]) -> JSONValue {
        var root = (try? JSONCodec.parse(bytes, rejectDuplicateKeys: true))?.objectValue ?? JSONObject()
        let s = config.server
        var server = JSONObject([
            ("socket", .string(s.socket)), ("socket_mode", .string(String(format: "%04o", s.socketMode))),
            ("socket_owner", s.socketOwner.map { .string($0) } ?? .null), ("socket_group", s.socketGroup.map { .string($0) } ?? .null),
            ("runtime_dir", .string(s.runtimeDirectory)), ("workers", .int(Int64(s.workers))),
            ("threads", .int(Int64(s.threadsPerWorker))), ("max_body_bytes", .int(s.maxBodyBytes)),
            ("max_header_bytes", .int(Int64(s.maxHeaderBytes))), ("shutdown_grace_seconds", .int(Int64(s.shutdownGraceSeconds))),
        ])
        for (key, value) in supervision(s) { server[key] = value }
        root["server"] = .object(server)
        root["log"] = .object(JSONObject([("access_log", .string(config.log.accessLog)), ("buffer_bytes", .int(Int64(config.log.bufferBytes)))]))
        root["plugins_dir"] = config.pluginsDirectory.map { .string($0) } ?? .null
        // Output that scripts pipe around never carries a shared secret (HS256 keys).
        if var auth = root["auth"]?.objectValue, var jwt = auth["jwt"]?.objectValue, let issuers = jwt["issuers"]?.arrayValue {
            jwt["issuers"] = .array(issuers.map { issuer in
                guard var i = issuer.objectValue, let keys = i["keys"]?.arrayValue else { return issuer }
                i["keys"] = .array(keys.map { key in
                    guard var k = key.objectValue, k["secret"] != nil else { return key }
                    k["secret"] = "(redacted)"
                    return .object(k)
                })
                return .object(i)
            })
            auth["jwt"] = .object(jwt)
            root["auth"] = .object(auth)
        }
        if var upstreams = root["upstreams"]?.objectValue {
            for (name, upstream) in config.upstreams where upstreams[name] != nil {
                upstreams[name] = EffectiveUpstream.document(upstream)
            }
            root["upstreams"] = .object(upstreams)
        }
        return .object(root)
    }

    static func supervision(_ s: ServerSettings) -> [(String, JSONValue)] {
        [("hard_timeout_seconds", .int(Int64(s.hardTimeoutSeconds))), ("ready_timeout_seconds", .int(Int64(s.readyTimeoutSeconds))),
         ("recycle_after_requests", s.recycleAfterRequests.map { .int(Int64($0)) } ?? .null),
         ("recycle_above_rss_mb", s.recycleAboveRSSMegabytes.map { .int(Int64($0)) } ?? .null)]
    }
}
