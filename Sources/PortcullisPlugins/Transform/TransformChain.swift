import PortcullisCore

/// The rule sets of one route, split by phase in the route's declared order. Build it once per
/// route and configuration generation (`PluginSet.chain(_:)`); applying it is pure.
public struct TransformChain: Sendable {
    public let request: [TransformRuleSet]
    public let response: [TransformRuleSet]

    public init(request: [TransformRuleSet], response: [TransformRuleSet]) {
        self.request = request
        self.response = response
    }

    public static let empty = TransformChain(request: [], response: [])
    public var isEmpty: Bool { request.isEmpty && response.isEmpty }

    // MARK: Request phase

    /// True when an applicable request rule set works on a JSON body, so the pipeline must
    /// buffer the body (up to `requestBodyLimit`) instead of streaming it.
    public func needsRequestBody(_ request: TransformableRequest, context: TemplateContext) -> Bool {
        guard JSONMediaType.matches(request.contentType) else { return false }
        return self.request.contains { set in
            set.touchesBody && (set.condition?.matches(method: request.method, headers: request.headers, status: nil, context: context) ?? true)
        }
    }

    /// The smallest body limit of the request rule sets that touch the body; a larger body is
    /// answered 413 without reading further.
    public var requestBodyLimit: Int64? { request.filter(\.touchesBody).map(\.maxBodyBytes).min() }

    /// Applies every applicable request rule set in order. On `.replaced` the caller forwards
    /// `request.body` with the new `Content-Length`; otherwise the original body streams on.
    @discardableResult
    public func applyRequest(to request: inout TransformableRequest, context: TemplateContext) throws(TransformError) -> BodyOutcome {
        guard !self.request.isEmpty else { return .untouched }
        let jsonBody = JSONMediaType.matches(request.contentType)
        var body = BodyState(bytes: request.body, eligible: jsonBody, phase: .request)
        var query: [(name: String, value: String)]?
        for set in self.request {
            if let condition = set.condition,
               !condition.matches(method: request.method, headers: request.headers, status: nil, context: context) {
                continue
            }
            if set.touchesBody { body.limit(set) }
            for op in set.operations {
                switch op {
                case .headerAdd(let name, let value):
                    if !request.headers.contains(name) { request.headers.add(name, try headerValue(value, name, context, nil, set)) }
                case .headerSet(let name, let value):
                    request.headers.set(name, try headerValue(value, name, context, nil, set))
                case .headerAppend(let name, let value):
                    request.headers.add(name, try headerValue(value, name, context, nil, set))
                case .headerRemove(let name):
                    request.headers.remove(name)
                case .headerRename(let from, let to):
                    Self.renameHeader(&request.headers, from: from, to: to)
                case .queryAdd(let name, let value):
                    var items = query ?? QueryString.parse(request.rawQuery)
                    if !items.contains(where: { $0.name == name }) { items.append((name, value.render(context))) }
                    query = items
                case .querySet(let name, let value):
                    var items = query ?? QueryString.parse(request.rawQuery)
                    let rendered = value.render(context)
                    if let first = items.firstIndex(where: { $0.name == name }) {
                        items[first].value = rendered
                        items = items.enumerated().filter { $0.offset <= first || $0.element.name != name }.map(\.element)
                    } else {
                        items.append((name, rendered))
                    }
                    query = items
                case .queryAppend(let name, let value):
                    var items = query ?? QueryString.parse(request.rawQuery)
                    items.append((name, value.render(context)))
                    query = items
                case .queryRemove(let name):
                    var items = query ?? QueryString.parse(request.rawQuery)
                    items.removeAll { $0.name == name }
                    query = items
                case .queryRename(let from, let to):
                    var items = query ?? QueryString.parse(request.rawQuery)
                    if items.contains(where: { $0.name == from }) {
                        items.removeAll { $0.name == to }
                        for i in items.indices where items[i].name == from { items[i].name = to }
                    }
                    query = items
                case .pathTemplate(let template):
                    request.path = try checkedPath(template.render(context), set)
                case .pathRegex(let regex, let replacement, let passOnNoMatch):
                    if let rewritten = regex.replaceFirst(in: request.path, with: replacement, context: context) {
                        request.path = try checkedPath(rewritten, set)
                    } else if !passOnNoMatch {
                        throw TransformError(problem: .rewriteNoMatch(ruleSet: set.name), ruleSet: set.name)
                    }
                case .methodSet(let method):
                    request.method = method
                case .statusMap:
                    break  // refused at load time for the request phase
                case .body(let bodyOp, let strict):
                    try body.apply(bodyOp, strict: strict, context: context, status: nil, ruleSet: set.name)
                }
            }
        }
        if let query { request.rawQuery = QueryString.serialize(query) }
        if let contentType = request.headers["content-type"] { request.contentType = contentType }
        let outcome = try body.finish()
        if case .replaced(let count) = outcome {
            request.body = body.bytes
            if request.headers.contains("content-length") { request.headers.set("Content-Length", String(count)) }
        }
        return outcome
    }

    // MARK: Response phase

    /// True when an applicable response rule set works on the body (JSON operations on a JSON,
    /// uncompressed body, or a `status.map` that replaces it), so the pipeline must buffer the
    /// upstream body (up to `responseBodyLimit`) instead of streaming it.
    public func needsResponseBody(status: Int, headers: HTTPHeaders, context: TemplateContext) -> Bool {
        let jsonBody = Self.isTransformableResponse(headers)
        var status = status
        for set in response {
            if let condition = set.condition, !condition.matches(method: context.method, headers: headers, status: status, context: context) {
                continue
            }
            for op in set.operations {
                switch op {
                case .statusMap(let from, let to, let replacement, _):
                    guard from.contains(where: { $0.contains(status) }) else { continue }
                    if replacement != nil { return true }
                    if let to { status = to }
                case .body:
                    if jsonBody { return true }
                default:
                    continue
                }
            }
        }
        return false
    }

    /// The smallest body limit of the response rule sets that touch the body.
    public var responseBodyLimit: Int64? { response.filter(\.touchesBody).map(\.maxBodyBytes).min() }

    /// Applies every applicable response rule set in order. Conditions see the status and
    /// headers as earlier operations left them. On `.replaced` the caller sends `body` with the
    /// new `Content-Length` (also updated in `headers` when present).
    @discardableResult
    public func applyResponse(status: inout Int, headers: inout HTTPHeaders, body: inout [UInt8]?,
                              context: TemplateContext) throws(TransformError) -> BodyOutcome {
        guard !response.isEmpty else { return .untouched }
        var state = BodyState(bytes: body, eligible: Self.isTransformableResponse(headers), phase: .response)
        for set in response {
            if let condition = set.condition, !condition.matches(method: context.method, headers: headers, status: status, context: context) {
                continue
            }
            if set.touchesBody { state.limit(set) }
            for op in set.operations {
                switch op {
                case .headerAdd(let name, let value):
                    if !headers.contains(name) { headers.add(name, try headerValue(value, name, context, status, set)) }
                case .headerSet(let name, let value):
                    headers.set(name, try headerValue(value, name, context, status, set))
                case .headerAppend(let name, let value):
                    headers.add(name, try headerValue(value, name, context, status, set))
                case .headerRemove(let name):
                    headers.remove(name)
                case .headerRename(let from, let to):
                    Self.renameHeader(&headers, from: from, to: to)
                case .statusMap(let from, let to, let replacement, let contentType):
                    guard from.contains(where: { $0.contains(status) }) else { continue }
                    if let replacement {
                        state.replace(with: replacement.render(context, status: status))
                        headers.set("Content-Type", contentType)
                        headers.remove("Content-Encoding")
                    }
                    if let to { status = to }
                case .body(let bodyOp, let strict):
                    try state.apply(bodyOp, strict: strict, context: context, status: status, ruleSet: set.name)
                case .queryAdd, .querySet, .queryAppend, .queryRemove, .queryRename, .pathTemplate, .pathRegex, .methodSet:
                    break  // refused at load time for the response phase
                }
            }
        }
        let outcome = try state.finish()
        if case .replaced(let count) = outcome {
            body = state.bytes
            if headers.contains("content-length") { headers.set("Content-Length", String(count)) }
        }
        return outcome
    }

    // MARK: Helpers

    /// A response body is transformable when it is JSON and not content-encoded (a gzip body
    /// cannot be parsed; it passes through untouched).
    static func isTransformableResponse(_ headers: HTTPHeaders) -> Bool {
        guard JSONMediaType.matches(headers["content-type"]) else { return false }
        if let encoding = headers["content-encoding"], encoding.trimmingSpaces().lowercased() != "identity" { return false }
        return true
    }

    static func renameHeader(_ headers: inout HTTPHeaders, from: String, to: String) {
        let values = headers.values(from)
        guard !values.isEmpty else { return }
        headers.remove(from)
        headers.remove(to)
        for v in values { headers.add(to, v) }
    }

    /// Renders a header value and refuses one that would inject a header line.
    func headerValue(_ template: Template, _ name: String, _ context: TemplateContext, _ status: Int?,
                     _ set: TransformRuleSet) throws(TransformError) -> String {
        let value = template.render(context, status: status)
        if template.isStatic || HeaderHygiene.isSafeHeaderValue(value) { return value }
        throw TransformError(problem: .transformUnsafeValue(
            "rule set \"\(set.name)\": the value rendered for header \(name) contains CR, LF or another control character"),
            ruleSet: set.name)
    }

    /// A rewritten path must stay an absolute path without control characters.
    func checkedPath(_ path: String, _ set: TransformRuleSet) throws(TransformError) -> String {
        guard path.hasPrefix("/"), HeaderHygiene.isSafeHeaderValue(path) else {
            throw TransformError(problem: .transformUnsafeValue(
                "rule set \"\(set.name)\": the rewritten path is not an absolute path without control characters"),
                ruleSet: set.name)
        }
        return path
    }
}

/// The body while a phase runs: parsed once on the first JSON operation, serialised once at the
/// end, and only when something changed.
struct BodyState {
    private(set) var bytes: [UInt8]?
    /// JSON media type (and, for responses, no content coding).
    private var eligible: Bool
    private let phase: TransformPhase
    private var document = JSONValue.null
    private var parsed = false
    private var changed = false
    /// The tightest limit of the rule sets that touched the body, and the first of them (named in errors).
    private var maxBytes = Int64.max
    private var limitingSet = ""

    init(bytes: [UInt8]?, eligible: Bool, phase: TransformPhase) {
        self.bytes = bytes
        self.eligible = eligible
        self.phase = phase
    }

    mutating func limit(_ set: TransformRuleSet) {
        if set.maxBodyBytes < maxBytes {
            maxBytes = set.maxBodyBytes
            limitingSet = set.name
        }
    }

    /// Parses the body on first use; false when there is no JSON body to work on.
    private mutating func load() throws(TransformError) -> Bool {
        if parsed { return true }
        guard eligible, let bytes, !bytes.isEmpty else { return false }
        if Int64(bytes.count) > maxBytes {
            throw TransformError(problem: .transformBodyTooLarge(phase: phase, limit: maxBytes, ruleSet: limitingSet), ruleSet: limitingSet)
        }
        do {
            document = try JSONCodec.parse(bytes, rejectDuplicateKeys: false)
        } catch {
            throw TransformError(problem: .transformInvalidJSON(phase: phase, reason: error.description), ruleSet: limitingSet)
        }
        parsed = true
        return true
    }

    mutating func replace(with value: JSONValue) {
        document = value
        parsed = true
        eligible = true
        changed = true
    }

    mutating func apply(_ op: BodyOperation, strict: Bool, context: TemplateContext, status: Int?,
                        ruleSet: String) throws(TransformError) {
        guard try load() else { return }
        do throws(PointerMiss) {
            switch op {
            case .set(let pointer, let value):
                try document.write(value.render(context, status: status), at: pointer, mode: .set)
                changed = true
            case .add(let pointer, let value):
                if try document.write(value.render(context, status: status), at: pointer, mode: .add) {
                    changed = true
                }
            case .remove(let pointer):
                try document.remove(at: pointer)
                changed = true
            case .rename(let pointer, let newName):
                try document.renameMember(at: pointer, to: newName)
                changed = true
            case .move(let from, let to):
                guard let value = document.value(at: from) else { throw PointerMiss.notFound(from, depth: from.tokens.count) }
                var edited = document
                try edited.remove(at: from)
                try edited.write(value, at: to, mode: .set)
                document = edited
                changed = true
            case .copy(let from, let to):
                guard let value = document.value(at: from) else { throw PointerMiss.notFound(from, depth: from.tokens.count) }
                try document.write(value, at: to, mode: .set)
                changed = true
            case .allow(let tree):
                document = tree.keep(document) ?? document
                changed = true
            case .deny(let tree):
                tree.drop(&document)
                changed = true
            case .wrap(let pointer):
                var wrapped = JSONValue.object(JSONObject())
                try wrapped.write(document, at: pointer, mode: .set)
                document = wrapped
                changed = true
            case .unwrap(let pointer):
                guard let inner = document.value(at: pointer) else { throw PointerMiss.notFound(pointer, depth: pointer.tokens.count) }
                document = inner
                changed = true
            }
        } catch {
            // Lenient by default: bodies vary, and a rule that does not fit one is skipped.
            if strict {
                throw TransformError(problem: .transformBodyMismatch(phase: phase, ruleSet: ruleSet, reason: error.message),
                                     ruleSet: ruleSet)
            }
        }
    }

    /// Serialises a changed document and enforces the output limit.
    mutating func finish() throws(TransformError) -> BodyOutcome {
        guard changed else { return .untouched }
        // Sized like the body it came from: most transforms change a body's size only a little.
        let out = JSONCodec.serializeBytes(document, capacity: (bytes?.count ?? 0) + 256)
        if Int64(out.count) > maxBytes {
            throw TransformError(problem: .transformBodyTooLarge(phase: phase, limit: maxBytes, ruleSet: limitingSet), ruleSet: limitingSet)
        }
        bytes = out
        return .replaced(byteCount: out.count)
    }
}
