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

    /// Whether the pipeline must buffer the request body (instead of streaming it), and up to
    /// which limit: the smallest limit of the request rule sets with body operations that
    /// *could* apply. Conditions are decided on the request as received, except members that
    /// read something an earlier rule set that could apply may change (then the rule set could
    /// apply); the real decision is taken when `applyRequest` reaches it. nil: stream the body.
    public func requestBodyNeed(_ request: TransformableRequest, context: TemplateContext) -> BodyLimit? {
        let json = Self.isTransformable(contentType: request.contentType, headers: request.headers)
        let form = !json && Self.isForm(contentType: request.contentType, headers: request.headers)
        guard json || form else { return nil }
        var changed = MessageChanges.none
        var limit: BodyLimit?
        for set in self.request {
            if let condition = set.condition,
               !condition.matches(.request(request, query: nil), context: context, undecided: changed) {
                continue
            }
            if json ? set.readsJSON : set.readsForm { limit = BodyLimit.tightest(limit, set) }
            changed.formUnion(set.changes)
        }
        return limit
    }

    /// True when an applicable request rule set may work on a JSON or form body (`requestBodyNeed`).
    public func needsRequestBody(_ request: TransformableRequest, context: TemplateContext) -> Bool {
        requestBodyNeed(request, context: context) != nil
    }

    /// The limit of the rule sets whose body operations really run on this request, found by
    /// running the chain on a copy without the body: for a body above `requestBodyNeed`'s
    /// limit, which may belong to a rule set that could apply but will not. nil: no body
    /// operation runs, the body streams. Throws what `applyRequest` would throw.
    public func appliedRequestBodyLimit(_ request: TransformableRequest, context: TemplateContext) throws(TransformError) -> BodyLimit? {
        var copy = request
        copy.body = nil
        var body = BodyState(bytes: nil, eligible: false, phase: .request)
        try run(&copy, body: &body, context: context)
        return body.limit
    }

    /// Applies every applicable request rule set in order. On `.replaced` the caller forwards
    /// `request.body` with the new `Content-Length`; otherwise the original body streams on.
    @discardableResult
    public func applyRequest(to request: inout TransformableRequest, context: TemplateContext) throws(TransformError) -> BodyOutcome {
        guard !self.request.isEmpty else { return .untouched }
        let jsonBody = Self.isTransformable(contentType: request.contentType, headers: request.headers)
        // A JSON media type is never the form type: the form test is only asked otherwise.
        var body = BodyState(bytes: request.body, eligible: jsonBody, phase: .request,
                             formEligible: !jsonBody && Self.isForm(contentType: request.contentType, headers: request.headers))
        try run(&request, body: &body, context: context)
        let outcome = try body.finish()
        if case .replaced(let count) = outcome {
            request.body = body.bytes
            if request.headers.contains("content-length") { request.headers.set("Content-Length", String(count)) }
        }
        return outcome
    }

    /// The request rule sets in order, each deciding its condition on the request as the
    /// earlier ones left it.
    private func run(_ request: inout TransformableRequest, body: inout BodyState, context: TemplateContext) throws(TransformError) {
        var query: [(name: String, value: String)]?
        for set in self.request {
            if let condition = set.condition,
               !condition.matches(.request(request, query: query), context: context) {
                continue
            }
            for op in set.operations {
                switch op {
                case .headerAdd(let name, let value):
                    if !request.headers.contains(name) { Self.addHeader(&request.headers, name, try headerValue(value, name, context, nil, set)) }
                case .headerSet(let name, let value):
                    Self.setHeader(&request.headers, name, try headerValue(value, name, context, nil, set))
                case .headerAppend(let name, let value):
                    Self.addHeader(&request.headers, name, try headerValue(value, name, context, nil, set))
                case .headerReplace(let name, let value):
                    if request.headers.contains(name) { Self.setHeader(&request.headers, name, try headerValue(value, name, context, nil, set)) }
                case .headerRemove(let name):
                    request.headers.remove(name)
                case .headerRename(let from, let to):
                    Self.renameHeader(&request.headers, from: from, to: to)
                case .query(let pairOp):
                    var items = query ?? QueryString.parse(request.rawQuery)
                    pairOp.apply(to: &items, context: context)
                    query = items
                case .form(let pairOp):
                    try body.applyForm(pairOp, context: context, ruleSet: set)
                case .hostSet(let value):
                    let host = value.render(context)
                    guard HostValue.isValid(host, allowEmpty: true) else {
                        throw TransformError(problem: .transformUnsafeValue(
                            "rule set \"\(set.name)\": the rendered Host is not a host name, IP address or host:port"), ruleSet: set.name)
                    }
                    // An empty rendering keeps the upstream target's own Host.
                    request.host = host.isEmpty ? nil : host
                case .pathTemplate(let template, let allowSlashes):
                    var unsafe: String?
                    var rendered = ""
                    for part in template.parts {
                        switch part {
                        case .literal(let text): rendered += text
                        case .variable(let v): rendered += Self.pathValue(v, context, allowSlashes: allowSlashes, unsafe: &unsafe)
                        }
                    }
                    request.path = try checkedPath(rendered, unsafeValue: unsafe, set)
                case .pathRegex(let regex, let replacement, let allowSlashes, let passOnNoMatch):
                    var unsafe: String?
                    if let rewritten = regex.replaceFirst(in: request.path, with: replacement,
                                                          value: { Self.pathValue($0, context, allowSlashes: allowSlashes, unsafe: &unsafe) }) {
                        request.path = try checkedPath(rewritten, unsafeValue: unsafe, set)
                    } else if !passOnNoMatch {
                        throw TransformError(problem: .rewriteNoMatch(ruleSet: set.name), ruleSet: set.name)
                    }
                case .methodSet(let method):
                    request.method = method
                case .statusMap:
                    break  // refused at load time for the request phase
                case .body(let bodyOp, let strict):
                    try body.apply(bodyOp, strict: strict, context: context, status: nil, ruleSet: set)
                case .bodyTemplate(let template, let contentType):
                    try body.replace(withBytes: Array(template.render(context).utf8), contentType: contentType, ruleSet: set)
                    request.headers.set("Content-Type", contentType)
                    request.headers.remove("Content-Encoding")
                case .cookieSet(let name, let value, _):
                    let rendered = try cookieValue(value, name, context, nil, set)
                    Self.setHeader(&request.headers, "Cookie", CookieValue.editing(request.headers["cookie"], name: name, value: rendered) ?? "")
                case .cookieRemove(let name):
                    if let header = request.headers["cookie"] {
                        Self.setHeader(&request.headers, "Cookie", CookieValue.editing(header, name: name, value: nil) ?? "")
                    }
                }
            }
        }
        if let query { request.rawQuery = QueryString.serialize(query) }
        if let contentType = request.headers["content-type"] { request.contentType = contentType }
    }

    // MARK: Response phase

    /// Whether the pipeline must collect the upstream body (instead of streaming it), and up
    /// to which limit: the smallest limit of the response rule sets that could work on it (JSON
    /// operations on a JSON, uncompressed body, or a `status.map` that could replace it).
    /// Conditions are decided as in `requestBodyNeed`. nil: stream the body.
    public func responseBodyNeed(status received: Int, headers: HTTPHeaders, context: TemplateContext) -> BodyLimit? {
        let jsonBody = Self.isTransformableResponse(headers)
        var changed = MessageChanges.none
        // The status as far as it is known: operations of a set that surely applies map it
        // exactly; one that only could apply leaves it unknown.
        var status: Int? = received
        var limit: BodyLimit?
        for set in response {
            changed.status = status == nil
            let message = ConditionMessage.response(status: status ?? received, headers: headers, context: context)
            if let condition = set.condition, !condition.matches(message, context: context, undecided: changed) { continue }
            let surely = !(set.condition?.reads(changed) ?? false)
            var needs = false
            for op in set.operations {
                switch op {
                case .statusMap(let from, let to, let replacement, _):
                    let hit = status.map { code in from.contains { $0.contains(code) } } ?? true
                    guard hit else { continue }
                    if replacement != nil { needs = true }
                    if let to { status = surely && status != nil ? to : nil }
                case .body:
                    if jsonBody || changed.body { needs = true }
                case .bodyTemplate:
                    needs = true
                default:
                    continue
                }
            }
            if needs { limit = BodyLimit.tightest(limit, set) }
            changed.formUnion(set.changes)
        }
        return limit
    }

    /// True when an applicable response rule set may work on the body (`responseBodyNeed`).
    public func needsResponseBody(status: Int, headers: HTTPHeaders, context: TemplateContext) -> Bool {
        responseBodyNeed(status: status, headers: headers, context: context) != nil
    }

    /// What the response rule sets that really run do with the body, found by running the
    /// chain on copies of the head without the body: for an upstream body above
    /// `responseBodyNeed`'s limit. `readsOriginal`: a body operation works on the upstream's
    /// body; otherwise a `status.map` replaces it first (`limit` non-nil) or nothing touches
    /// it (`limit` nil). Throws what `applyResponse` would throw.
    public func appliedResponseBodyUse(status: Int, headers: HTTPHeaders,
                                       context: TemplateContext) throws(TransformError) -> (readsOriginal: Bool, limit: BodyLimit?) {
        var status = status
        var headers = headers
        var body = BodyState(bytes: nil, eligible: Self.isTransformableResponse(headers), phase: .response)
        try run(status: &status, headers: &headers, body: &body, context: context)
        return (body.wantedOriginal, body.limit)
    }

    /// Applies every applicable response rule set in order. Conditions see the status and
    /// headers as earlier operations left them. On `.replaced` the caller sends `body` with the
    /// new `Content-Length` (also updated in `headers` when present).
    @discardableResult
    public func applyResponse(status: inout Int, headers: inout HTTPHeaders, body: inout [UInt8]?,
                              context: TemplateContext) throws(TransformError) -> BodyOutcome {
        guard !response.isEmpty else { return .untouched }
        var state = BodyState(bytes: body, eligible: Self.isTransformableResponse(headers), phase: .response)
        try run(status: &status, headers: &headers, body: &state, context: context)
        let outcome = try state.finish()
        if case .replaced(let count) = outcome {
            body = state.bytes
            if headers.contains("content-length") { headers.set("Content-Length", String(count)) }
        }
        return outcome
    }

    /// The response rule sets in order, each deciding its condition on the answer as the
    /// earlier ones left it.
    private func run(status: inout Int, headers: inout HTTPHeaders, body state: inout BodyState,
                     context: TemplateContext) throws(TransformError) {
        for set in response {
            if let condition = set.condition, !condition.matches(.response(status: status, headers: headers, context: context), context: context) {
                continue
            }
            for op in set.operations {
                switch op {
                case .headerAdd(let name, let value):
                    if !headers.contains(name) { Self.addHeader(&headers, name, try headerValue(value, name, context, status, set)) }
                case .headerSet(let name, let value):
                    Self.setHeader(&headers, name, try headerValue(value, name, context, status, set))
                case .headerAppend(let name, let value):
                    Self.addHeader(&headers, name, try headerValue(value, name, context, status, set))
                case .headerReplace(let name, let value):
                    if headers.contains(name) { Self.setHeader(&headers, name, try headerValue(value, name, context, status, set)) }
                case .headerRemove(let name):
                    headers.remove(name)
                case .headerRename(let from, let to):
                    Self.renameHeader(&headers, from: from, to: to)
                case .statusMap(let from, let to, let replacement, let contentType):
                    guard from.contains(where: { $0.contains(status) }) else { continue }
                    if let replacement {
                        try state.replace(with: replacement.render(context, status: status), ruleSet: set)
                        headers.set("Content-Type", contentType)
                        headers.remove("Content-Encoding")
                    }
                    if let to { status = to }
                case .body(let bodyOp, let strict):
                    try state.apply(bodyOp, strict: strict, context: context, status: status, ruleSet: set)
                case .bodyTemplate(let template, let contentType):
                    try state.replace(withBytes: Array(template.render(context, status: status).utf8), contentType: contentType, ruleSet: set)
                    headers.set("Content-Type", contentType)
                    headers.remove("Content-Encoding")
                case .cookieSet(let name, let value, let attributes):
                    let rendered = try cookieValue(value, name, context, status, set)
                    Self.removeSetCookie(&headers, name)
                    headers.add("Set-Cookie", name + "=" + rendered + (attributes.map { "; " + $0 } ?? ""))
                case .cookieRemove(let name):
                    Self.removeSetCookie(&headers, name)
                case .query, .form, .pathTemplate, .pathRegex, .methodSet, .hostSet:
                    break  // refused at load time for the response phase
                }
            }
        }
    }

    // MARK: Helpers

    /// A response body is transformable when it is JSON and not content-encoded (a gzip body
    /// cannot be parsed; it passes through untouched).
    static func isTransformableResponse(_ headers: HTTPHeaders) -> Bool {
        isTransformable(contentType: headers["content-type"], headers: headers)
    }

    /// An `application/x-www-form-urlencoded` body without content coding.
    static func isForm(contentType: String?, headers: HTTPHeaders) -> Bool {
        guard FormMediaType.matches(contentType) else { return false }
        if let encoding = headers["content-encoding"], encoding.trimmingSpaces().lowercased() != "identity" { return false }
        return true
    }

    /// A JSON media type and no content coding (other than `identity`), in either phase.
    static func isTransformable(contentType: String?, headers: HTTPHeaders) -> Bool {
        guard JSONMediaType.matches(contentType) else { return false }
        if let encoding = headers["content-encoding"], encoding.trimmingSpaces().lowercased() != "identity" { return false }
        return true
    }

    /// `header.set`: a value that renders empty removes the header, so a client-sent value never
    /// survives an anonymous request and no empty field line is sent.
    static func setHeader(_ headers: inout HTTPHeaders, _ name: String, _ value: String) {
        if value.isEmpty { headers.remove(name) } else { headers.set(name, value) }
    }

    /// `header.add` / `header.append`: a value that renders empty adds nothing.
    static func addHeader(_ headers: inout HTTPHeaders, _ name: String, _ value: String) {
        if !value.isEmpty { headers.add(name, value) }
    }

    /// Drops the `Set-Cookie` lines that set cookie `name`.
    static func removeSetCookie(_ headers: inout HTTPHeaders, _ name: String) {
        let lines = headers.values("set-cookie")
        guard lines.contains(where: { CookieValue.setCookieName($0) == name }) else { return }
        headers.remove("Set-Cookie")
        for line in lines where CookieValue.setCookieName(line) != name { headers.add("Set-Cookie", line) }
    }

    /// Renders a cookie value and refuses one that is not RFC 6265 cookie-octets.
    func cookieValue(_ template: Template, _ name: String, _ context: TemplateContext, _ status: Int?,
                     _ set: TransformRuleSet) throws(TransformError) -> String {
        let value = template.render(context, status: status)
        if template.isStatic || CookieValue.isValid(value) { return value }
        throw TransformError(problem: .transformUnsafeValue(
            "rule set \"\(set.name)\": the value rendered for cookie \(name) is not a valid cookie value"), ruleSet: set.name)
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

    /// A value rendered into a path: one segment unless `allowSlashes`. The first value that
    /// is not is recorded in `unsafe` (the rewrite is then refused).
    static func pathValue(_ variable: TemplateVariable, _ context: TemplateContext, allowSlashes: Bool,
                          unsafe: inout String?) -> String {
        let value = variable.stringValue(context, status: nil) ?? ""
        if !allowSlashes, unsafe == nil, value.utf8.contains(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "\\") }) {
            unsafe = value
        }
        return value
    }

    /// A rewritten path must stay an absolute path without control characters, whose rendered
    /// values cannot climb out of the template's prefix: no value with `/` (unless allowed),
    /// no `.` or `..` segment.
    func checkedPath(_ path: String, unsafeValue: String?, _ set: TransformRuleSet) throws(TransformError) -> String {
        guard path.hasPrefix("/"), HeaderHygiene.isSafeHeaderValue(path) else {
            throw TransformError(problem: .transformUnsafeValue(
                "rule set \"\(set.name)\": the rewritten path is not an absolute path without control characters"),
                ruleSet: set.name)
        }
        if unsafeValue != nil {
            throw TransformError(problem: .transformUnsafePath(
                "rule set \"\(set.name)\": a value rendered into the path contains \"/\" or a backslash"), ruleSet: set.name)
        }
        if Self.hasDotSegment(path) {
            throw TransformError(problem: .transformUnsafePath(
                "rule set \"\(set.name)\": the rewritten path contains a \".\" or \"..\" segment"), ruleSet: set.name)
        }
        return path
    }

    static func hasDotSegment(_ path: String) -> Bool {
        path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).contains { segment in
            (segment.count == 1 || segment.count == 2) && segment.allSatisfy { $0 == UInt8(ascii: ".") }
        }
    }
}

/// The body limit that applies: the smallest `max_body_bytes` of the rule sets concerned, and
/// the first of them with it (named in errors).
public struct BodyLimit: Sendable, Equatable {
    public let bytes: Int64
    public let ruleSet: String

    public init(bytes: Int64, ruleSet: String) {
        self.bytes = bytes
        self.ruleSet = ruleSet
    }

    static func tightest(_ current: BodyLimit?, _ set: TransformRuleSet) -> BodyLimit {
        if let current, current.bytes <= set.maxBodyBytes { return current }
        return BodyLimit(bytes: set.maxBodyBytes, ruleSet: set.name)
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
    /// The tightest limit of the rule sets whose body operations ran, and the first of them
    /// (named in errors); nil until one ran.
    private(set) var limit: BodyLimit?
    /// A body operation ran on an eligible body that had not been replaced: the upstream's (or
    /// client's) body was needed, whether or not this state holds its bytes.
    private(set) var wantedOriginal = false
    /// `body.template` replaced the bytes (later JSON operations parse the new ones).
    private var replacedRaw = false
    /// A form-urlencoded body: its fields once a form operation read them.
    private var formEligible: Bool
    private var form: [(name: String, value: String)]?
    private var maxBytes: Int64 { limit?.bytes ?? .max }
    private var limitingSet: String { limit?.ruleSet ?? "" }

    init(bytes: [UInt8]?, eligible: Bool, phase: TransformPhase, formEligible: Bool = false) {
        self.bytes = bytes
        self.eligible = eligible
        self.phase = phase
        self.formEligible = formEligible
    }

    /// A form field operation: the body's fields are read on first use (an empty body has
    /// none) and written back by `finish`.
    mutating func applyForm(_ op: PairOperation, context: TemplateContext, ruleSet set: TransformRuleSet) throws(TransformError) {
        try limit(set)
        if form == nil {
            guard formEligible, let bytes else { return }
            if Int64(bytes.count) > maxBytes {
                throw TransformError(problem: .transformBodyTooLarge(phase: phase, limit: maxBytes, ruleSet: limitingSet), ruleSet: limitingSet)
            }
            form = QueryString.parse(String(decoding: bytes, as: UTF8.self))
        }
        op.apply(to: &form!, context: context)
    }

    /// A body operation of `set` is about to run: its limit applies from now on (a rule set
    /// that is skipped, or whose body operations do not run, does not limit the body).
    private mutating func limit(_ set: TransformRuleSet) throws(TransformError) {
        guard set.maxBodyBytes < maxBytes else { return }
        limit = BodyLimit(bytes: set.maxBodyBytes, ruleSet: set.name)
        if parsed, !changed, let bytes, Int64(bytes.count) > maxBytes {
            throw TransformError(problem: .transformBodyTooLarge(phase: phase, limit: maxBytes, ruleSet: limitingSet), ruleSet: limitingSet)
        }
    }

    /// Parses the body on first use; false when there is no JSON body to work on.
    private mutating func load() throws(TransformError) -> Bool {
        if parsed { return true }
        if eligible && !replacedRaw { wantedOriginal = true }
        guard eligible, let bytes, !bytes.isEmpty else { return false }
        if Int64(bytes.count) > maxBytes {
            throw TransformError(problem: .transformBodyTooLarge(phase: phase, limit: maxBytes, ruleSet: limitingSet), ruleSet: limitingSet)
        }
        do {
            document = try JSONCodec.parse(bytes, rejectDuplicateKeys: false, keepLargeNumbers: true)
        } catch {
            throw TransformError(problem: .transformInvalidJSON(phase: phase, reason: error.description), ruleSet: limitingSet)
        }
        parsed = true
        return true
    }

    /// `body.template`: new bytes of any media type; JSON operations after it work on them when
    /// `contentType` is JSON.
    mutating func replace(withBytes newBytes: [UInt8], contentType: String, ruleSet set: TransformRuleSet) throws(TransformError) {
        try limit(set)
        bytes = newBytes
        document = .null
        parsed = false
        changed = false
        replacedRaw = true
        eligible = JSONMediaType.matches(contentType)
        formEligible = FormMediaType.matches(contentType)
        form = nil
    }

    mutating func replace(with value: JSONValue, ruleSet set: TransformRuleSet) throws(TransformError) {
        try limit(set)
        document = value
        parsed = true
        eligible = true
        changed = true
    }

    mutating func apply(_ op: BodyOperation, strict: Bool, context: TemplateContext, status: Int?,
                        ruleSet set: TransformRuleSet) throws(TransformError) {
        try limit(set)
        guard try load() else { return }
        let ruleSet = set.name
        do throws(PointerMiss) {
            switch op {
            case .set(let pointer, let value):
                try document.write(value.render(context, status: status), at: pointer, mode: .set)
                changed = true
            case .add(let pointer, let value):
                if try document.write(value.render(context, status: status), at: pointer, mode: .add) {
                    changed = true
                }
            case .replace(let pointer, let value):
                guard document.value(at: pointer) != nil else { throw PointerMiss.notFound(pointer, depth: pointer.tokens.count) }
                try document.write(value.render(context, status: status), at: pointer, mode: .set)
                changed = true
            case .append(let pointer, let end, let value):
                let element = value.render(context, status: status)
                switch document.value(at: pointer) {
                case .array?: try document.write(element, at: end, mode: .set)
                case let existing?: try document.write(.array([existing, element]), at: pointer, mode: .set)
                case nil: try document.write(.array([element]), at: pointer, mode: .set)
                }
                changed = true
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
        if let form {
            bytes = Array(QueryString.serialize(form).utf8)
            replacedRaw = true
        }
        if !changed && replacedRaw {
            let count = bytes?.count ?? 0
            if Int64(count) > maxBytes {
                throw TransformError(problem: .transformBodyTooLarge(phase: phase, limit: maxBytes, ruleSet: limitingSet), ruleSet: limitingSet)
            }
            return .replaced(byteCount: count)
        }
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
