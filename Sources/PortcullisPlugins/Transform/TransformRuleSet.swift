import PortcullisCore

/// Which side of the proxy a rule set works on.
public enum TransformPhase: String, Sendable {
    /// Before the request is sent upstream.
    case request
    /// After the upstream answered, before the answer goes to the client.
    case response
}

/// A named, validated and compiled transformation rule set from one rule file.
public struct TransformRuleSet: Sendable {
    public let name: String
    public let phase: TransformPhase
    public let condition: TransformCondition?
    public let operations: [TransformOperation]
    /// Largest body this rule set parses or produces.
    public let maxBodyBytes: Int64
    /// The rule file it came from (for logs).
    public let file: String
    /// True when an operation reads or writes the body, so the pipeline must buffer it.
    public let touchesBody: Bool
    /// True when an operation reads the JSON body / the form fields: a request body of that
    /// kind must be buffered (`body.template` replaces a body without reading it).
    public let readsJSON: Bool
    public let readsForm: Bool
    /// What its operations may change (for deciding, before it runs, what later conditions see).
    public let changes: MessageChanges

    init(name: String, phase: TransformPhase, condition: TransformCondition?, operations: [TransformOperation],
         maxBodyBytes: Int64, file: String) {
        self.name = name
        self.phase = phase
        self.condition = condition
        self.operations = operations
        self.maxBodyBytes = maxBodyBytes
        self.file = file
        self.touchesBody = operations.contains { $0.touchesBody }
        self.readsJSON = operations.contains { if case .body = $0 { return true }; return false }
        self.readsForm = operations.contains { if case .form = $0 { return true }; return false }
        var changes = MessageChanges()
        for op in operations { changes.formUnion(MessageChanges(op)) }
        self.changes = changes
    }
}

/// The rule-file schema of `"type": "transform"`: reads a JSON rule set through `ConfigNode`
/// so that every problem is recorded with its pointer, and compiles what it reads.
enum TransformSchema {
    static let ruleSetKeys: Set<String> = ["name", "type", "phase", "condition", "operations", "max_body_bytes", "description", "comment"]

    /// Headers the gateway itself manages; a rule that changed them would break framing,
    /// correlation or the forwarded-for facts.
    static let managedHeaders: Set<String> = HeaderHygiene.hopByHop
        .union(HeaderHygiene.gatewayOwned)
        .union(["content-length", "host"])

    static func read(_ node: ConfigNode, defaultMaxBodyBytes: Int64) -> TransformRuleSet? {
        node.rejectUnknownKeys(ruleSetKeys)
        let name = node["name"].nonEmptyString(required: true)
        if let name, !isValidName(name) {
            node["name"].fail("rule set name \"\(name)\" may hold only letters, digits, \".\", \"_\" and \"-\"")
        }
        var phase: TransformPhase?
        if let text = node["phase"].string(required: true) {
            phase = TransformPhase(rawValue: text)
            if phase == nil { node["phase"].fail("unknown phase \"\(text)\" (expected \"request\" or \"response\")") }
        }
        let maxBody = node["max_body_bytes"].int(min: 1, max: 1 << 30) ?? defaultMaxBodyBytes
        let condition = node["condition"].isPresent ? readCondition(node["condition"], phase: phase) : nil
        var operations: [TransformOperation] = []
        if let items = node["operations"].array(required: true) {
            if items.isEmpty { node["operations"].fail("at least one operation is required") }
            for item in items {
                if let op = readOperation(item, phase: phase) { operations.append(op) }
            }
        }
        guard let name, let phase else { return nil }
        return TransformRuleSet(name: name, phase: phase, condition: condition, operations: operations,
                                maxBodyBytes: maxBody, file: node.diagnostics.file)
    }

    static func isValidName(_ name: String) -> Bool {
        name.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2E || c == 0x5F || c == 0x2D
        }
    }

    // MARK: Conditions

    static let conditionKeys: Set<String> = ["methods", "headers", "query", "cookies", "path", "client_ip", "consumer", "claims",
                                             "consumer_groups", "status", "any", "not"]

    static func readCondition(_ node: ConfigNode, phase: TransformPhase?) -> TransformCondition? {
        guard node.object() != nil else { return nil }
        node.rejectUnknownKeys(conditionKeys)
        var condition = TransformCondition()
        if let methods = node["methods"].stringList() {
            var set = Set<String>()
            for (i, m) in methods.enumerated() {
                let upper = m.uppercased()
                if HeaderHygiene.isToken(upper) { set.insert(upper) } else { node["methods"]["\(i)"].fail("invalid HTTP method \"\(m)\"") }
            }
            condition.methods = set
        }
        for (name, child) in node["headers"].object() ?? [] {
            if !HeaderHygiene.isToken(name) { child.fail("invalid header name \"\(name)\""); continue }
            if let rule = valueRule(child) { condition.headers.append((name.asciiLowercased, rule)) }
        }
        for (name, child) in node["query"].object() ?? [] {
            if let rule = valueRule(child) { condition.query.append((name, rule)) }
        }
        for (name, child) in node["cookies"].object() ?? [] {
            if let rule = valueRule(child) { condition.cookies.append((name, rule)) }
        }
        if node["path"].isPresent { condition.path = valueRule(node["path"]) }
        if node["consumer"].isPresent { condition.consumer = valueRule(node["consumer"]) }
        if node["client_ip"].isPresent { readClientIP(node["client_ip"], into: &condition) }
        for (name, child) in node["claims"].object() ?? [] {
            switch child.value {
            case .string?, .int?, .double?, .bool?: condition.claims.append((name, .equals(child.value!)))
            case .object?: if let rule = valueRule(child) { condition.claims.append((name, .rule(rule))) }
            default: child.fail("expected a string, number, boolean or a rule object, found \(child.value?.typeName ?? "nothing")")
            }
        }
        condition.consumerGroups = node["consumer_groups"].stringList()
        if node["status"].isPresent {
            if phase == .request { node["status"].fail("a status condition needs the response phase") }
            let items: [ConfigNode]
            if case .array? = node["status"].value { items = node["status"].array() ?? [] } else { items = [node["status"]] }
            var ranges: [TransformCondition.StatusRange] = []
            for item in items {
                if let range = item.value.flatMap(TransformCondition.parseStatus) { ranges.append(range) } else {
                    item.fail("expected a status code (100-599), \"4xx\" or \"400-499\"")
                }
            }
            condition.status = ranges
        }
        if node["any"].isPresent, let items = node["any"].array() {
            if items.isEmpty { node["any"].fail("at least one condition is required") }
            condition.any = items.compactMap { readCondition($0, phase: phase) }
        }
        if node["not"].isPresent, let negated = readCondition(node["not"], phase: phase) { condition.not = [negated] }
        return condition
    }

    /// `"10.0.0.0/8"`, a list of networks (any of), or `{"not": networks}`.
    static func readClientIP(_ node: ConfigNode, into condition: inout TransformCondition) {
        var list = node
        if case .object? = node.value {
            node.rejectUnknownKeys(["not"])
            list = node["not"]
            condition.clientIPNegated = true
        }
        guard let texts = list.stringList() else { return }
        let isArray = list.value?.arrayValue != nil
        var networks: [CIDR] = []
        for (i, text) in texts.enumerated() {
            if let network = CIDR(text) { networks.append(network) } else {
                (isArray ? list["\(i)"] : list).fail("invalid IP address or CIDR network \"\(text)\"")
            }
        }
        condition.clientIP = networks
    }

    static let valueRuleKeys: Set<String> = ["equals", "any_of", "regex", "not", "present"]

    /// A `ValueRule`: `true` / `false` (present / absent), a string (equals), an array of strings
    /// (any of), or an object with one of `equals`, `any_of`, `regex`, `not`, `present`.
    static func valueRule(_ node: ConfigNode) -> ValueRule? {
        switch node.value {
        case .bool(true)?: return .present
        case .bool(false)?: return .absent
        case .string(let s)?: return .equals(s)
        case .array(let items)?:
            if items.isEmpty { node.fail("at least one value is required"); return nil }
            return node.stringList().map { .anyOf($0) }
        case .object(let object)?:
            node.rejectUnknownKeys(valueRuleKeys)
            guard object.count == 1, let key = object.keys.first, valueRuleKeys.contains(key) else {
                if object.count != 1 { node.fail("give exactly one of \"equals\", \"any_of\", \"regex\", \"not\", \"present\"") }
                return nil
            }
            let child = node[key]
            switch key {
            case "equals": return child.string(required: true).map { .equals($0) }
            case "any_of":
                if child.value?.arrayValue?.isEmpty == true { child.fail("at least one value is required"); return nil }
                return child.stringList().map { .anyOf($0) }
            case "regex":
                guard let pattern = child.nonEmptyString(required: true) else { return nil }
                guard let regex = try? CompiledRegex(pattern: pattern) else {
                    child.fail("invalid regular expression \"\(pattern)\"")
                    return nil
                }
                return .regex(regex)
            case "present": return child.bool().map { $0 ? .present : .absent }
            default: return valueRule(child).map { .not($0) }
            }
        default:
            node.fail("expected true (present), false (absent), a string (equals), an array (any of) or an object with "
                      + "\"equals\", \"any_of\", \"regex\", \"not\" or \"present\", found \(node.value?.typeName ?? "nothing")")
            return nil
        }
    }

    // MARK: Operations

    static let operationKeys: [String: Set<String>] = [
        "header.add": ["name", "value"], "header.set": ["name", "value"], "header.append": ["name", "value"],
        "header.remove": ["name"], "header.rename": ["from", "to"], "header.replace": ["name", "value"],
        "query.add": ["name", "value"], "query.set": ["name", "value"], "query.append": ["name", "value"],
        "query.remove": ["name"], "query.rename": ["from", "to"], "query.replace": ["name", "value"], "host.set": ["value"],
        "form.add": ["name", "value"], "form.set": ["name", "value"], "form.append": ["name", "value"], "form.replace": ["name", "value"],
        "form.remove": ["name"], "form.rename": ["from", "to"],
        "path.rewrite": ["template", "regex", "replacement", "allow_slashes", "on_no_match"], "method.set": ["value"],
        "status.map": ["from", "to", "body", "content_type"],
        "body.set": ["path", "value", "strict"], "body.add": ["path", "value", "strict"],
        "body.replace": ["path", "value", "strict"], "body.append": ["path", "value", "strict"],
        "body.remove": ["path", "strict"], "body.rename": ["path", "to", "strict"],
        "body.move": ["from", "path", "strict"], "body.copy": ["from", "path", "strict"],
        "body.allow": ["fields"], "body.deny": ["fields"],
        "body.wrap": ["path"], "body.unwrap": ["path", "strict"],
        "body.template": ["template", "content_type"],
        "cookie.set": ["name", "value", "attributes"], "cookie.remove": ["name"],
    ]
    static let requestOnly: Set<String> = ["query.add", "query.set", "query.append", "query.remove", "query.rename", "query.replace",
                                           "form.add", "form.set", "form.append", "form.remove", "form.rename", "form.replace",
                                           "path.rewrite", "method.set", "host.set"]
    static let responseOnly: Set<String> = ["status.map"]

    static func readOperation(_ node: ConfigNode, phase: TransformPhase?) -> TransformOperation? {
        guard node.object(required: true) != nil else { return nil }
        guard let op = node["op"].nonEmptyString(required: true) else { return nil }
        guard let keys = operationKeys[op] else {
            node["op"].fail("unknown operation \"\(op)\"")
            return nil
        }
        node.rejectUnknownKeys(keys.union(["op", "comment"]))
        if phase == .response && requestOnly.contains(op) {
            node["op"].fail("operation \"\(op)\" is only allowed in the request phase")
            return nil
        }
        if phase == .request && responseOnly.contains(op) {
            node["op"].fail("operation \"\(op)\" is only allowed in the response phase")
            return nil
        }
        let strict = node["strict"].bool() ?? false
        switch op {
        case "header.add", "header.set", "header.append", "header.replace":
            guard let name = headerName(node["name"]), let value = headerValue(node["value"], phase: phase) else { return nil }
            switch op {
            case "header.add": return .headerAdd(name: name, value: value)
            case "header.set": return .headerSet(name: name, value: value)
            case "header.replace": return .headerReplace(name: name, value: value)
            default: return .headerAppend(name: name, value: value)
            }
        case "header.remove":
            return headerName(node["name"]).map { .headerRemove(name: $0) }
        case "header.rename":
            guard let from = headerName(node["from"]), let to = headerName(node["to"]) else { return nil }
            return .headerRename(from: from, to: to)
        case "query.add", "query.set", "query.append", "query.replace", "query.remove", "query.rename":
            return readPairOperation(node, op: String(op.dropFirst("query.".count))).map { .query($0) }
        case "form.add", "form.set", "form.append", "form.replace", "form.remove", "form.rename":
            return readPairOperation(node, op: String(op.dropFirst("form.".count))).map { .form($0) }
        case "host.set":
            guard let value = template(node["value"], phase: phase) else { return nil }
            if !HostValue.isValid(value.literalText, allowEmpty: !value.isStatic) {
                node["value"].fail("not a host name, IP address or host:port")
                return nil
            }
            return .hostSet(value)
        case "path.rewrite":
            return readPathRewrite(node, phase: phase)
        case "method.set":
            guard let method = node["value"].nonEmptyString(required: true) else { return nil }
            guard HeaderHygiene.isToken(method) else { node["value"].fail("invalid HTTP method \"\(method)\""); return nil }
            return .methodSet(method.uppercased())
        case "status.map":
            return readStatusMap(node, phase: phase)
        case "body.template":
            guard let t = template(node["template"], phase: phase) else { return nil }
            var contentType = "text/plain; charset=utf-8"
            if let ct = node["content_type"].nonEmptyString() {
                guard HeaderHygiene.isSafeHeaderValue(ct) else { node["content_type"].fail("value contains CR, LF or another control character"); return nil }
                contentType = ct
            }
            return .bodyTemplate(t, contentType: contentType)
        case "cookie.set", "cookie.remove":
            guard let name = node["name"].nonEmptyString(required: true) else { return nil }
            guard HeaderHygiene.isToken(name) else { node["name"].fail("invalid cookie name \"\(name)\""); return nil }
            if op == "cookie.remove" { return .cookieRemove(name: name) }
            guard let value = template(node["value"], phase: phase) else { return nil }
            guard CookieValue.isValid(value.literalText) else {
                node["value"].fail("a cookie value may not hold spaces, quotes, commas, semicolons, backslashes or control characters")
                return nil
            }
            var attributes: String?
            if node["attributes"].isPresent {
                if phase == .request { node["attributes"].fail("cookie attributes need the response phase"); return nil }
                guard let text = node["attributes"].string(required: true) else { return nil }
                guard HeaderHygiene.isSafeHeaderValue(text) else { node["attributes"].fail("value contains CR, LF or another control character"); return nil }
                attributes = text
            }
            return .cookieSet(name: name, value: value, attributes: attributes)
        case "body.set", "body.add", "body.replace", "body.append":
            guard let path = pointer(node["path"]), node["value"].value != nil else {
                if node["value"].value == nil { node["value"].fail("required field is missing") }
                return nil
            }
            guard let value = jsonTemplate(node["value"], phase: phase) else { return nil }
            switch op {
            case "body.set": return .body(.set(path, value), strict: strict)
            case "body.add": return .body(.add(path, value), strict: strict)
            case "body.replace": return .body(.replace(path, value), strict: strict)
            default:
                let end = JSONPointer(tokens: path.tokens + ["-"], text: path.text + "/-")
                return .body(.append(path, end: end, value), strict: strict)
            }
        case "body.remove":
            return pointer(node["path"]).map { .body(.remove($0), strict: strict) }
        case "body.rename":
            guard let path = pointer(node["path"]), let to = node["to"].nonEmptyString(required: true) else { return nil }
            if path.tokens.isEmpty { node["path"].fail("cannot rename the document root"); return nil }
            return .body(.rename(path, to: to), strict: strict)
        case "body.move", "body.copy":
            guard let from = pointer(node["from"]), let to = pointer(node["path"]) else { return nil }
            if op == "body.move" && to.isSelfOrDescendant(of: from) {
                node["path"].fail("cannot move \"\(from.text)\" into itself")
                return nil
            }
            return .body(op == "body.move" ? .move(from: from, to: to) : .copy(from: from, to: to), strict: strict)
        case "body.allow", "body.deny":
            guard let items = node["fields"].array(required: true) else { return nil }
            if items.isEmpty { node["fields"].fail("at least one field is required"); return nil }
            var tree = FieldTree()
            for item in items {
                guard let field = item.nonEmptyString(required: true) else { continue }
                if field.hasPrefix("/") {
                    guard let p = pointer(item) else { continue }
                    tree.insert(p.tokens[...])
                } else {
                    tree.insert([field])
                }
            }
            return .body(op == "body.allow" ? .allow(tree) : .deny(tree), strict: false)
        case "body.wrap":
            guard let path = pointer(node["path"]) else { return nil }
            if path.tokens.isEmpty { node["path"].fail("wrap needs a non-empty pointer such as \"/data\""); return nil }
            return .body(.wrap(path), strict: false)
        case "body.unwrap":
            guard let path = pointer(node["path"]) else { return nil }
            if path.tokens.isEmpty { node["path"].fail("unwrap needs a non-empty pointer such as \"/data\""); return nil }
            return .body(.unwrap(path), strict: strict)
        default:
            return nil
        }
    }

    /// The fields of a query or form operation (`verb` without its prefix).
    static func readPairOperation(_ node: ConfigNode, op verb: String) -> PairOperation? {
        switch verb {
        case "remove":
            return node["name"].nonEmptyString(required: true).map { .remove(name: $0) }
        case "rename":
            guard let from = node["from"].nonEmptyString(required: true), let to = node["to"].nonEmptyString(required: true) else { return nil }
            return .rename(from: from, to: to)
        default:
            guard let name = node["name"].nonEmptyString(required: true), let value = template(node["value"], phase: .request) else { return nil }
            switch verb {
            case "add": return .add(name: name, value: value)
            case "set": return .set(name: name, value: value)
            case "replace": return .replace(name: name, value: value)
            default: return .append(name: name, value: value)
            }
        }
    }

    static func readPathRewrite(_ node: ConfigNode, phase: TransformPhase?) -> TransformOperation? {
        let hasTemplate = node["template"].isPresent
        let hasRegex = node["regex"].isPresent
        let allowSlashes = node["allow_slashes"].bool() ?? false
        switch (hasTemplate, hasRegex) {
        case (true, false):
            guard let t = template(node["template"], phase: phase) else { return nil }
            if case .literal(let first)? = t.parts.first, !first.hasPrefix("/") {
                node["template"].fail("must start with \"/\"")
                return nil
            } else if case .variable? = t.parts.first {
                node["template"].fail("must start with \"/\"")
                return nil
            }
            if !HeaderHygiene.isSafeHeaderValue(t.literalText) { node["template"].fail("contains a control character"); return nil }
            return .pathTemplate(t, allowSlashes: allowSlashes)
        case (false, true):
            guard let pattern = node["regex"].nonEmptyString(required: true) else { return nil }
            guard node["replacement"].isPresent else { node["replacement"].fail("required field is missing"); return nil }
            // A rewrite that silently forwards the unrewritten path fails open (the upstream
            // serves a path the rule meant to hide), so passing through must be asked for.
            var passOnNoMatch = false
            switch node["on_no_match"].string() {
            case nil, "error"?: break
            case "pass"?: passOnNoMatch = true
            case let other?: node["on_no_match"].fail("must be \"error\" or \"pass\", found \"\(other)\""); return nil
            }
            let regex: CompiledRegex
            do { regex = try CompiledRegex(pattern: pattern) } catch {
                node["regex"].fail("invalid regular expression \"\(pattern)\"")
                return nil
            }
            guard let t = template(node["replacement"], phase: phase) else { return nil }
            if !HeaderHygiene.isSafeHeaderValue(t.literalText) { node["replacement"].fail("contains a control character"); return nil }
            switch RewritePart.compile(t, groups: regex.captureGroupCount) {
            case .success(let parts): return .pathRegex(regex, replacement: parts, allowSlashes: allowSlashes, passOnNoMatch: passOnNoMatch)
            case .failure(let e): node["replacement"].fail(e.message); return nil
            }
        case (true, true):
            node.fail("give either \"template\" or \"regex\", not both")
            return nil
        case (false, false):
            node.fail("path.rewrite needs a \"template\" or a \"regex\" with a \"replacement\"")
            return nil
        }
    }

    static func readStatusMap(_ node: ConfigNode, phase: TransformPhase?) -> TransformOperation? {
        guard node["from"].isPresent else { node["from"].fail("required field is missing"); return nil }
        let items: [ConfigNode]
        if case .array? = node["from"].value { items = node["from"].array() ?? [] } else { items = [node["from"]] }
        var ranges: [TransformCondition.StatusRange] = []
        for item in items {
            if let r = item.value.flatMap(TransformCondition.parseStatus) { ranges.append(r) } else {
                item.fail("expected a status code (100-599), \"4xx\" or \"400-499\"")
            }
        }
        let to = node["to"].int(min: 100, max: 599).map { Int($0) }
        var body: JSONTemplate?
        if node["body"].value != nil {
            guard let b = jsonTemplate(node["body"], phase: phase) else { return nil }
            body = b
        }
        if to == nil && body == nil && !node["to"].isPresent { node.fail("status.map needs \"to\", \"body\" or both"); return nil }
        var contentType = "application/json"
        if let ct = node["content_type"].nonEmptyString() {
            if !HeaderHygiene.isSafeHeaderValue(ct) { node["content_type"].fail("value contains CR, LF or another control character") } else {
                contentType = ct
            }
            if body == nil { node["content_type"].fail("content_type needs a \"body\"") }
        }
        guard ranges.count == items.count else { return nil }
        return .statusMap(from: ranges, to: to, body: body, contentType: contentType)
    }

    // MARK: Values

    static func headerName(_ node: ConfigNode) -> String? {
        guard let name = node.nonEmptyString(required: true) else { return nil }
        guard HeaderHygiene.isToken(name) else { node.fail("invalid header name \"\(name)\""); return nil }
        if managedHeaders.contains(name.asciiLowercased) {
            let hint = name.asciiLowercased == "host" ? " (use host.set)" : ""
            node.fail("header \"\(name)\" is managed by the gateway and cannot be transformed\(hint)")
            return nil
        }
        return name
    }

    /// A header value: a template whose literal text has no CR, LF or control character.
    static func headerValue(_ node: ConfigNode, phase: TransformPhase?) -> Template? {
        guard let t = template(node, phase: phase) else { return nil }
        if !HeaderHygiene.isSafeHeaderValue(t.literalText) {
            node.fail("value contains CR, LF or another control character")
            return nil
        }
        return t
    }

    static func template(_ node: ConfigNode, phase: TransformPhase?) -> Template? {
        guard let text = node.string(required: true) else { return nil }
        switch Template.compile(text) {
        case .success(let t):
            return checkPhase(t.variables, node, phase: phase) ? t : nil
        case .failure(let e):
            node.fail(e.message)
            return nil
        }
    }

    static func jsonTemplate(_ node: ConfigNode, phase: TransformPhase?) -> JSONTemplate? {
        guard let value = node.value else { node.fail("required field is missing"); return nil }
        switch JSONTemplate.compile(value) {
        case .success(let t):
            return checkPhase(t.variables, node, phase: phase) ? t : nil
        case .failure(let f):
            node.diagnostics.fail(node.pointer + f.pointer, f.error.message)
            return nil
        }
    }

    static func checkPhase(_ variables: [TemplateVariable], _ node: ConfigNode, phase: TransformPhase?) -> Bool {
        if phase == .request && variables.contains(where: { $0.base == .status }) {
            node.fail("template variable \"status\" is only available in the response phase")
            return false
        }
        return true
    }

    static func pointer(_ node: ConfigNode) -> JSONPointer? {
        guard let text = node.string(required: true) else { return nil }
        switch JSONPointer.parse(text) {
        case .success(let p): return p
        case .failure(let e): node.fail(e.message); return nil
        }
    }
}
