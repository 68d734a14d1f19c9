import Foundation
import PortcullisCore

/// One compiled operation of a rule set: names validated, templates split, pointers parsed and
/// regular expressions compiled at load time.
public enum TransformOperation: Sendable {
    /// Adds the header only when the message does not have it yet.
    case headerAdd(name: String, value: Template)
    /// Replaces every value of the header with one (adds it when absent).
    case headerSet(name: String, value: Template)
    /// Adds one more field line, keeping existing ones.
    case headerAppend(name: String, value: Template)
    /// `headerSet`, only when the message has the header.
    case headerReplace(name: String, value: Template)
    case headerRemove(name: String)
    /// Moves every value of `from` to `to` (replacing `to`'s values); nothing when `from` is absent.
    case headerRename(from: String, to: String)

    /// An operation on the decoded query items (names case-sensitive).
    case query(PairOperation)
    /// The same on the fields of an `application/x-www-form-urlencoded` request body.
    case form(PairOperation)

    /// Replaces the whole path with a rendered template. A rendered value is one segment (no
    /// `/` or backslash) unless `allowSlashes`.
    case pathTemplate(Template, allowSlashes: Bool)
    /// Replaces the first match of `regex` in the path with `replacement`. No match is an
    /// error (404) unless `passOnNoMatch`, when the path is left as it is. `{{...}}` values in
    /// the replacement are segments as in `pathTemplate`.
    case pathRegex(CompiledRegex, replacement: [RewritePart], allowSlashes: Bool, passOnNoMatch: Bool)
    case methodSet(String)
    /// The `Host` sent upstream (instead of the upstream target's).
    case hostSet(Template)

    /// When the status is in `from`: set the status to `to` and/or replace the body.
    case statusMap(from: [TransformCondition.StatusRange], to: Int?, body: JSONTemplate?, contentType: String)

    /// A JSON body operation. `strict` turns a missing path or type mismatch into an error.
    case body(BodyOperation, strict: Bool)
    /// Replaces the body, whatever its type, with the rendered template.
    case bodyTemplate(Template, contentType: String)

    /// Request: sets or removes one `name=value` pair of the `Cookie` header. Response: replaces
    /// the `Set-Cookie` lines of `name` with one (`value` and `attributes`) or removes them.
    case cookieSet(name: String, value: Template, attributes: String?)
    case cookieRemove(name: String)

    public var touchesBody: Bool {
        switch self {
        case .body, .bodyTemplate, .form: return true
        case .statusMap(_, _, let body, _): return body != nil
        default: return false
        }
    }
}

/// Operations on a list of decoded `name=value` pairs (a query string, a form body), with the
/// header operations' semantics.
public enum PairOperation: Sendable {
    /// Only when the name is absent.
    case add(name: String, value: Template)
    /// The first value is replaced (keeping its position), later ones dropped; appended when absent.
    case set(name: String, value: Template)
    /// `set`, only when the name is present.
    case replace(name: String, value: Template)
    case append(name: String, value: Template)
    case remove(name: String)
    /// Every `from` becomes `to` (existing `to` values are dropped); nothing when `from` is absent.
    case rename(from: String, to: String)

    /// The names it may change.
    var names: [String] {
        switch self {
        case .add(let name, _), .set(let name, _), .replace(let name, _), .append(let name, _), .remove(let name): return [name]
        case .rename(let from, let to): return [from, to]
        }
    }

    func apply(to items: inout [(name: String, value: String)], context: TemplateContext) {
        switch self {
        case .add(let name, let value):
            if !items.contains(where: { $0.name == name }) { items.append((name, value.render(context))) }
        case .set(let name, let value):
            Self.set(&items, name, value.render(context))
        case .replace(let name, let value):
            if items.contains(where: { $0.name == name }) { Self.set(&items, name, value.render(context)) }
        case .append(let name, let value):
            items.append((name, value.render(context)))
        case .remove(let name):
            items.removeAll { $0.name == name }
        case .rename(let from, let to):
            guard items.contains(where: { $0.name == from }) else { return }
            items.removeAll { $0.name == to }
            for i in items.indices where items[i].name == from { items[i].name = to }
        }
    }

    static func set(_ items: inout [(name: String, value: String)], _ name: String, _ value: String) {
        if let first = items.firstIndex(where: { $0.name == name }) {
            items[first].value = value
            items = items.enumerated().filter { $0.offset <= first || $0.element.name != name }.map(\.element)
        } else {
            items.append((name, value))
        }
    }
}

/// JSON body operations, addressed by RFC 6901 pointers.
public enum BodyOperation: Sendable {
    /// Writes the value, replacing what is there and creating missing parent objects.
    case set(JSONPointer, JSONTemplate)
    /// Writes the value only when nothing is there; an array index inserts, `-` appends.
    case add(JSONPointer, JSONTemplate)
    /// Writes the value only when something is there.
    case replace(JSONPointer, JSONTemplate)
    /// Appends to the array at the pointer; a value that is not an array becomes the first
    /// element of one, nothing there becomes a one-element array. `end` is the pointer's `/-`.
    case append(JSONPointer, end: JSONPointer, JSONTemplate)
    case remove(JSONPointer)
    /// Renames an object member in place (its position is kept).
    case rename(JSONPointer, to: String)
    case move(from: JSONPointer, to: JSONPointer)
    case copy(from: JSONPointer, to: JSONPointer)
    /// Keeps only these fields.
    case allow(FieldTree)
    /// Drops these fields.
    case deny(FieldTree)
    /// Nests the whole body at the pointer (`/data` → `{"data": body}`).
    case wrap(JSONPointer)
    /// Replaces the whole body with the value at the pointer.
    case unwrap(JSONPointer)
}

/// Allow/deny lists as a tree of member names. Arrays met on the way are filtered
/// element-wise, so `/items/secret` drops `secret` from every element of `items`.
public struct FieldTree: Sendable, Equatable {
    public var children: [String: FieldTree] = [:]
    /// The field itself is listed (its whole value is kept or dropped).
    public var isLeaf = false

    public init() {}

    mutating func insert(_ tokens: ArraySlice<String>) {
        guard let first = tokens.first else { isLeaf = true; return }
        children[first, default: FieldTree()].insert(tokens.dropFirst())
    }

    /// `value` with only the listed fields, nil when nothing listed is in it.
    func keep(_ value: JSONValue) -> JSONValue? {
        if isLeaf { return value }
        switch value {
        case .object(let object):
            var kept = JSONObject()
            for (key, child) in object.entries {
                if let tree = children[key], let v = tree.keep(child) { kept[key] = v }
            }
            return .object(kept)
        case .array(let items):
            return .array(items.compactMap { keep($0) })
        default:
            return nil
        }
    }

    func drop(_ value: inout JSONValue) {
        // `if case` then `value = .null` leaves the container uniquely referenced, so it is
        // edited in place; a `switch` on `value` keeps a second reference to the payload until
        // it ends, and every first edit below then copied a whole object or array.
        if case .object(var object) = value {
            value = .null
            for (key, tree) in children {
                if tree.isLeaf {
                    object.removeValue(forKey: key)
                } else {
                    object.modifyValue(forKey: key) { tree.drop(&$0) }
                }
            }
            value = .object(object)
        } else if case .array(var items) = value {
            value = .null
            for i in items.indices { drop(&items[i]) }
            value = .array(items)
        }
    }
}

/// A regular expression compiled once at load time. `NSRegularExpression` is immutable and
/// documented as safe to use from several threads, hence the unchecked conformance.
public struct CompiledRegex: @unchecked Sendable {
    public let pattern: String
    let regex: NSRegularExpression

    init(pattern: String) throws {
        self.pattern = pattern
        // `.` matches every character, line separators included: a path is one line however
        // it is encoded, and `^/v1/(.*)$` must not fail on U+2028, U+2029, U+0085 or CR/LF.
        self.regex = try NSRegularExpression(pattern: pattern, options: [.dotMatchesLineSeparators])
    }

    var captureGroupCount: Int { regex.numberOfCaptureGroups }

    /// True when the expression matches somewhere in `subject` (unanchored, like `grep`).
    func matches(_ subject: String) -> Bool {
        regex.firstMatch(in: subject, range: NSRange(subject.startIndex..., in: subject)) != nil
    }

    /// Replaces the first match in `subject`; nil when nothing matches. `value` renders a
    /// placeholder.
    func replaceFirst(in subject: String, with parts: [RewritePart], value: (TemplateVariable) -> String) -> String? {
        let whole = NSRange(subject.startIndex..., in: subject)
        guard let match = regex.firstMatch(in: subject, range: whole),
              let matched = Range(match.range, in: subject) else { return nil }
        var replacement = ""
        for part in parts {
            switch part {
            case .literal(let s): replacement += s
            case .capture(let i):
                if let r = Range(match.range(at: i), in: subject) { replacement += subject[r] }
            case .variable(let v): replacement += value(v)
            }
        }
        return subject.replacingCharacters(in: matched, with: replacement)
    }
}

/// Parts of a regex replacement: text, `$1`-style captures and `{{...}}` placeholders.
public enum RewritePart: Sendable, Equatable {
    case literal(String)
    case capture(Int)
    case variable(TemplateVariable)

    /// Splits the `$n` references out of a compiled template's literal parts (`$$` is a `$`).
    static func compile(_ template: Template, groups: Int) -> Result<[RewritePart], TemplateSyntaxError> {
        var parts: [RewritePart] = []
        for part in template.parts {
            switch part {
            case .variable(let v): parts.append(.variable(v))
            case .literal(let text):
                var literal = ""
                var chars = Array(text)
                var i = 0
                while i < chars.count {
                    guard chars[i] == "$" else { literal.append(chars[i]); i += 1; continue }
                    if i + 1 < chars.count, chars[i + 1] == "$" { literal.append("$"); i += 2; continue }
                    var j = i + 1
                    while j < chars.count, chars[j].isASCII, chars[j].isNumber { j += 1 }
                    guard j > i + 1, let n = Int(String(chars[(i + 1)..<j])) else {
                        return .failure(TemplateSyntaxError(message: "\"$\" must be followed by a capture group number or \"$\""))
                    }
                    guard n <= groups else {
                        return .failure(TemplateSyntaxError(message: "replacement uses $\(n) but the regex has \(groups) capture group\(groups == 1 ? "" : "s")"))
                    }
                    if !literal.isEmpty { parts.append(.literal(literal)); literal = "" }
                    parts.append(.capture(n))
                    i = j
                }
                if !literal.isEmpty { parts.append(.literal(literal)) }
                chars.removeAll()
            }
        }
        return .success(parts)
    }
}
