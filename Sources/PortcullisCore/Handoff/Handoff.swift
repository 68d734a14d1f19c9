/// The worker's answer that hands an admitted `websocket` or `grpc` request to nginx: an
/// `X-Accel-Redirect` to a named location of the shipped snippet, plus the decisions nginx
/// carries out there (docs/protocols.md).
///
/// nginx reads these answer fields as `$upstream_http_x_portcullis_*` with `set` in the named
/// location (its rewrite phase still sees the worker's answer) and applies them with
/// `proxy_set_header` / `grpc_set_header` and `proxy_pass` / `grpc_pass`. A header directive
/// names a fixed header, so the headers the gateway owns are a fixed list (``carried``); a
/// carried header the worker leaves out is set empty, which nginx does not send, so the
/// client's own value of it never passes.
public enum Handoff {
    /// The only API key header the snippet removes from the client's request.
    public static let apiKeyHeader = "X-API-Key"

    /// Headers whose upstream value the worker decides, in the order the snippet sets them.
    /// Each travels in the answer as ``carrierPrefix`` + its name.
    public static let carried = [
        "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-ID",
        "X-Consumer-ID", "X-Consumer-Groups", "X-Credential-ID", "X-Authenticated-Scopes",
        "traceparent", "tracestate", "Authorization", apiKeyHeader, "Forwarded", "X-Real-IP",
        "X-Forwarded-Port", "X-Forwarded-Prefix", "X-Forwarded-Server", "X-Forwarded-Uri", "Proxy-Authorization",
    ]
    public static let carrierPrefix = "X-Portcullis-Set-"
    /// Well-known `X-Forwarded-*` fields the gateway never sets, which upstreams may trust as
    /// identity or scheme (oauth2-proxy, Envoy's XFCC, Rack): the snippet sets each empty, so a
    /// client's copy never passes. nginx has no directive that removes fields by prefix, so an
    /// `X-Forwarded-*` name in neither list passes on these routes (docs/protocols.md).
    public static let removed = [
        "X-Forwarded-Ssl", "X-Forwarded-Scheme", "X-Forwarded-Protocol", "X-Forwarded-Method",
        "X-Forwarded-Client-Cert", "X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Groups",
        "X-Forwarded-Preferred-Username", "X-Forwarded-Access-Token",
    ]
    /// Fields the gateway adds to the client's response on these routes, as on the answers of
    /// HTTP routes: the RateLimit fields of the request's admission (docs/rate-limiting.md).
    /// Each travels in the answer as ``answerPrefix`` + its name; the snippet adds it to the
    /// 101 or gRPC response headers and hides the upstream's own field of that name.
    public static let answered = ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy", "RateLimit"]
    public static let answerPrefix = "X-Portcullis-Answer-"
    /// `scheme://block` of the chosen target (an nginx upstream block, ``NginxUpstreams``).
    public static let targetField = "X-Portcullis-Target"
    /// The `Host` (gRPC `:authority`) the upstream gets: the target's `host:port`, as on HTTP routes.
    public static let hostField = "X-Portcullis-Host"
    /// The request target (path and query) a WebSocket upstream gets.
    public static let uriField = "X-Portcullis-URI"
    public static let redirectField = "X-Accel-Redirect"

    /// The snippet's named location for `proto`.
    public static func location(_ proto: RouteProtocol) -> String {
        "@portcullis_" + proto.rawValue
    }

    /// The answer's header fields for a request of `proto` sent to target `targetIndex`
    /// (`targetURL`, e.g. `http://10.0.0.5:8080`) of upstream `upstream`, with the request
    /// target `uri` and the upstream headers the worker decided (`upstreamHeaders`, as an HTTP
    /// route would send them), and the fields the client's response gets (`clientHeaders`: the
    /// admission's RateLimit fields; only ``answered`` names travel).
    public static func answerFields(proto: RouteProtocol, upstream: String, targetIndex: Int, targetURL: String,
                                    uri: String, upstreamHeaders: HTTPHeaders, clientHeaders: HTTPHeaders = HTTPHeaders()) -> HTTPHeaders {
        var fields = HTTPHeaders()
        fields.add(redirectField, location(proto))
        let tls = targetURL.utf8.count > 5 && targetURL.prefix(6).lowercased() == "https:"
        let scheme: String
        switch proto {
        case .grpc: scheme = tls ? "grpcs://" : "grpc://"
        case .websocket, .http: scheme = tls ? "https://" : "http://"
        }
        fields.add(targetField, scheme + NginxUpstreams.blockName(upstream: upstream, target: targetIndex))
        fields.add(hostField, authority(of: targetURL))
        if proto == .websocket { fields.add(uriField, uri) }
        for name in carried {
            if let value = upstreamHeaders.values(name).first { fields.add(carrierPrefix + name, value) }
        }
        if clientHeaders.count > 0 {
            for name in answered {
                if let value = clientHeaders.values(name).first { fields.add(answerPrefix + name, value) }
            }
        }
        return fields
    }

    /// `host:port` of a target URL (`http://10.0.0.5:8080` → `10.0.0.5:8080`).
    public static func authority(of url: String) -> String {
        guard let range = url.range(of: "://") else { return url }
        let rest = url[range.upperBound...]
        return String(rest.prefix { $0 != "/" })
    }
}

extension ProblemDetails {
    /// A WebSocket handshake on a route that does not carry WebSocket.
    public static func websocketNotEnabled(route: String, protocol proto: RouteProtocol) -> ProblemDetails {
        ProblemDetails(status: 400, type: "websocket-not-enabled", title: "Bad Request",
                       detail: "route \"\(route)\" is a \(proto.rawValue) route: a WebSocket handshake needs a route with \"protocol\": \"websocket\"")
    }

    /// A request without a WebSocket handshake on a `websocket` route.
    public static func websocketUpgradeRequired(route: String) -> ProblemDetails {
        var headers = HTTPHeaders()
        headers.add("Upgrade", "websocket")
        return ProblemDetails(status: 426, type: "websocket-upgrade-required", title: "Upgrade Required",
                              detail: "route \"\(route)\" carries WebSocket only: send a handshake (Upgrade: websocket)",
                              headers: headers)
    }
}
