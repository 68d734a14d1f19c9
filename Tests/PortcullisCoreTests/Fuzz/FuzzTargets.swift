import Foundation
import PortcullisCore
import PortcullisPlugins
#if !FUZZ_BUILD
// Fuzz builds compile RequestDecoder.swift into the harness instead (scripts/fuzz.sh).
import PortcullisRuntime
#endif

/// The fuzz targets: each takes arbitrary bytes and drives one parser of untrusted (or
/// operator-written) input. A target must never crash; where the code promises an invariant
/// (a lossless round trip, a rewritten path that stays absolute), the target checks it with
/// `precondition`, so a violation is a crash libFuzzer reports.
///
/// The same file is compiled twice: by `scripts/fuzz.sh` with `-sanitize=fuzzer,address`
/// around `Tests/Fuzz/main.swift` (time-based fuzzing, `make fuzz`), and into the unit tests,
/// where `FuzzCorpusReplayTests` runs every saved input of `Tests/Fuzz/corpus/<target>/` once.
enum FuzzTargets {
    static let all: [String: @Sendable ([UInt8]) -> Void] = [
        "jws": jws, "jwks": jwks, "config": config, "rules": rules, "pointer_template": pointerTemplate,
        "transform": transform, "fastcgi_params": fastcgiParams, "router": router,
    ]

    // MARK: JWS / JWT

    static let hmacKey = try! VerificationKey.secret(Array("fuzz-hs256-secret-0123456789abcdef".utf8), algorithm: .hs256, kid: "h1")

    /// Compact JWS parsing, signature verification with a bound key, then the claims as the
    /// authenticator parses them.
    static func jws(_ data: [UInt8]) {
        guard let parsed = try? ParsedJWS.parse(data, maxBytes: 16_384) else { return }
        _ = try? parsed.verify(with: [hmacKey])
        _ = try? JSONCodec.parse(parsed.payload, rejectDuplicateKeys: true)
    }

    /// A JWK Set document from a JWKS URL or file.
    static func jwks(_ data: [UInt8]) {
        guard let document = try? JSONCodec.parse(data, rejectDuplicateKeys: true) else { return }
        _ = VerificationKey.jwkSet(document)
    }

    // MARK: Loaders

    /// The gateway configuration file (auth, limits, routes, upstreams).
    static func config(_ data: [UInt8]) {
        _ = try? ConfigLoader.parse(bytes: data, file: "fuzz.json")
    }

    /// A transformation rule file; a set that loads is also chained and applied once.
    static func rules(_ data: [UInt8]) {
        guard let set = try? PluginSet.parse(files: [(path: "plugins/fuzz.json", bytes: data)]),
              let name = set.transforms.keys.first else { return }
        var request = TransformableRequest(method: "POST", path: "/v1/users/7", rawQuery: "a=1&b=%E9",
                                           headers: HTTPHeaders([("Content-Type", "application/json")]))
        request.body = Array(#"{"id":7,"items":[1,{"a":null}],"s":"x"}"#.utf8)
        if let outcome = try? set.applyRequest([name], to: &request, context: context) {
            _ = outcome
            precondition(request.path.hasPrefix("/"), "a rewritten path is absolute")
        }
        var status = 200
        var headers = HTTPHeaders([("Content-Type", "application/json")])
        var body: [UInt8]? = Array(#"{"data":[1,2,{"k":"v"}],"internal":true}"#.utf8)
        _ = try? set.applyResponse([name], status: &status, headers: &headers, body: &body, context: context)
    }

    // MARK: JSON Pointer and templates

    static let context = TemplateContext(
        consumerId: "ann", consumerGroups: ["g1", "g2"], claims: JSONObject([("sub", "ann"), ("n", .int(3))]),
        pathParams: ["id": "7"], requestHeaders: HTTPHeaders([("X-A", "b")]), queryItems: [("q", "1")],
        method: "GET", path: "/v1/users/7", requestId: "rid", route: "users")

    /// RFC 6901 pointers and `{{...}}` templates, parsed from the same text; what compiles is
    /// rendered, and a pointer is applied to a fixed document.
    static func pointerTemplate(_ data: [UInt8]) {
        let text = RawText.decode(data)
        if case .success(let pointer) = JSONPointer.parse(text) {
            _ = pointer.tokens
        }
        if case .success(let template) = Template.compile(text) {
            _ = template.render(context, status: 200)
            _ = template.renderJSON(context, status: 404)
        }
    }

    // MARK: Transform engine on arbitrary bodies

    static let shippedRules: PluginSet = {
        let files: [(path: String, bytes: [UInt8])] = [
            ("plugins/envelope.json", Array(#"{"name":"envelope","type":"transform","phase":"response","condition":{"status":"200-299"},"operations":[{"op":"body.wrap","path":"/data"},{"op":"body.set","path":"/meta","value":{"request_id":"{{request_id}}","route":"{{route}}"}}]}"#.utf8)),
            ("plugins/strip.json", Array(#"{"name":"strip","type":"transform","phase":"response","operations":[{"op":"body.deny","fields":["internal_id","debug","items[].cost_price"]},{"op":"body.rename","path":"/a","to":"b"},{"op":"body.move","from":"/x","path":"/y/z"},{"op":"body.copy","from":"/data/0","path":"/first"},{"op":"body.unwrap","path":"/wrapped"}]}"#.utf8)),
            ("plugins/req.json", Array(#"{"name":"req","type":"transform","phase":"request","operations":[{"op":"body.set","path":"/by","value":"{{consumer.id}}"},{"op":"body.add","path":"/list/-","value":1},{"op":"body.remove","path":"/secret"},{"op":"body.allow","fields":["by","list","name","nested.keep"]}]}"#.utf8)),
        ]
        return try! PluginSet.parse(files: files)
    }()

    /// Request and response rule sets on an arbitrary body claimed to be JSON.
    static func transform(_ data: [UInt8]) {
        var request = TransformableRequest(method: "POST", path: "/x", headers: HTTPHeaders([("Content-Type", "application/json")]))
        request.body = data
        _ = try? shippedRules.applyRequest(["req"], to: &request, context: context)
        var status = 200
        var headers = HTTPHeaders([("Content-Type", "application/json")])
        var body: [UInt8]? = data
        _ = try? shippedRules.applyResponse(["strip", "envelope"], status: &status, headers: &headers, body: &body, context: context)
    }

    // MARK: FastCGI params

    /// `NAME=VALUE` entries as libfcgi hands them over (the input split on NUL), decoded as a
    /// request; then the raw-byte invariant on every kept value.
    static func fastcgiParams(_ data: [UInt8]) {
        let entries = data.split(separator: 0, omittingEmptySubsequences: false).map(Array.init)
        var pointers: [UnsafeBufferPointer<UInt8>] = []
        let copies = entries.map { entry -> UnsafeMutableBufferPointer<UInt8> in
            let copy = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(entry.count, 1))
            _ = copy.initialize(from: entry)
            pointers.append(UnsafeBufferPointer(rebasing: UnsafeBufferPointer(copy)[0..<entry.count]))
            return copy
        }
        defer { copies.forEach { $0.deallocate() } }
        let decoded = RequestDecoder.decode(entries: pointers)
        _ = decoded.request.queryItems
        _ = HeaderHygiene.exceedsConnectionTokenCap(decoded.request.headers)
        _ = HeaderHygiene.upstreamRequestHeaders(decoded.request.headers, facts: decoded.request.facts, requestId: decoded.request.requestId)
        rawRoundTrip(data)
    }

    /// Bytes survive `RawText` unchanged, whatever they are.
    static func rawRoundTrip(_ data: [UInt8]) {
        precondition(RawText.bytes(of: RawText.decode(data)) == data, "RawText round trip")
    }

    // MARK: Router

    static let routes: [RouteConfig] = [
        RouteConfig(name: "user", match: RouteMatch(path: .exact("/users/{id}"), methods: ["GET"]), upstream: "u", rewrite: "/internal/users/{id}"),
        RouteConfig(name: "orders", match: RouteMatch(path: .prefix("/users/{id}/orders/")), upstream: "u", stripPrefix: true),
        RouteConfig(name: "echo", match: RouteMatch(path: .prefix("/echo/")), upstream: "u"),
        RouteConfig(name: "host", match: RouteMatch(path: .prefix("/"), hosts: ["*.example.com"]), upstream: "u"),
        RouteConfig(name: "caf\u{e9}", match: RouteMatch(path: .prefix("/caf\u{e9}/")), upstream: "u", rewrite: "/x/"),
    ]
    static let compiledRouter = Router(routes: routes)

    /// An arbitrary path (as nginx's decoded `$document_uri` bytes) routed, and the upstream
    /// path built and percent-encoded as the pipeline does.
    static func router(_ data: [UInt8]) {
        rawRoundTrip(data)
        let path = RawText.decode(data)
        for host in ["", "a.example.com"] {
            let request = GatewayRequest(method: "GET", path: path, rawQuery: "", host: host)
            if case .matched(let match) = compiledRouter.route(request) {
                let upstream = Router.upstreamPath(route: routes[match.routeIndex], result: match, requestPath: path)
                let encoded = PercentEncoding.encode(upstream, allowed: .path)
                precondition(encoded.utf8.allSatisfy { $0 < 0x80 && $0 > 0x20 }, "an encoded path is printable ASCII")
                precondition(PercentEncoding.decode(encoded).utf8.elementsEqual(upstream.utf8), "encoding keeps the bytes")
            }
        }
    }
}
