import PortcullisCore

/// An RFC 6901 JSON Pointer, split into unescaped reference tokens once at load time so a
/// request never re-parses it.
public struct JSONPointer: Sendable, Equatable, CustomStringConvertible {
    /// Unescaped reference tokens (`~1` → `/`, `~0` → `~`); empty for the whole document.
    public let tokens: [String]
    /// The pointer as written in the rule file (used in error messages).
    public let text: String

    /// Parses `text`, or returns why it is not a JSON Pointer.
    public static func parse(_ text: String) -> Result<JSONPointer, PointerSyntaxError> {
        if text.isEmpty { return .success(JSONPointer(tokens: [], text: text)) }
        guard text.hasPrefix("/") else {
            return .failure(PointerSyntaxError(message: "invalid JSON pointer \"\(text)\": must be empty or start with \"/\""))
        }
        var tokens: [String] = []
        for raw in text.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
            var token = ""
            var index = raw.startIndex
            while index < raw.endIndex {
                let c = raw[index]
                if c == "~" {
                    let next = raw.index(after: index)
                    guard next < raw.endIndex, raw[next] == "0" || raw[next] == "1" else {
                        return .failure(PointerSyntaxError(
                            message: "invalid JSON pointer \"\(text)\": \"~\" must be followed by 0 or 1"))
                    }
                    token.append(raw[next] == "0" ? "~" : "/")
                    index = raw.index(after: next)
                } else {
                    token.append(c)
                    index = raw.index(after: index)
                }
            }
            tokens.append(token)
        }
        return .success(JSONPointer(tokens: tokens, text: text))
    }

    init(tokens: [String], text: String) {
        self.tokens = tokens
        self.text = text
    }

    public var description: String { text }

    /// True when `self` is `other` or lies inside it (a value cannot be moved into itself).
    func isSelfOrDescendant(of other: JSONPointer) -> Bool {
        tokens.count >= other.tokens.count && Array(tokens.prefix(other.tokens.count)) == other.tokens
    }
}

/// Why a string is not a valid JSON Pointer.
public struct PointerSyntaxError: Error, Sendable, Equatable {
    public let message: String
}

/// Why a pointer could not be followed in a particular document (reported only by strict ops).
struct PointerMiss: Error, Sendable, Equatable {
    let message: String

    static func notFound(_ pointer: JSONPointer, depth: Int) -> PointerMiss {
        PointerMiss(message: "\(prefixText(pointer, depth)): not found")
    }

    static func mismatch(_ pointer: JSONPointer, depth: Int, found: JSONValue, expected: String) -> PointerMiss {
        PointerMiss(message: "\(prefixText(pointer, depth)): expected \(expected), found \(found.typeName)")
    }

    static func badIndex(_ pointer: JSONPointer, depth: Int, token: String) -> PointerMiss {
        PointerMiss(message: "\(prefixText(pointer, depth)): \"\(token)\" is not a valid array index")
    }

    /// The pointer text up to (excluding) token `depth`: where the walk stopped.
    private static func prefixText(_ pointer: JSONPointer, _ depth: Int) -> String {
        let prefix = pointer.tokens.prefix(depth).map { "/" + jsonPointerEscape($0) }.joined()
        return prefix.isEmpty ? "document root" : prefix
    }
}

/// How a write treats the location it targets.
enum PointerWrite {
    /// Replace what is there, or create it (missing parent objects are created).
    case set
    /// Only write when nothing is there; an array index inserts before that element.
    case add
}

/// Pointer evaluation and edits on `JSONValue`. Mutations take the child out of its parent
/// before editing it so Swift's copy-on-write does not copy the subtree. They match containers
/// with `if case`, not `switch`: a `switch` keeps a second reference to the payload until it
/// ends, so the container was copied on its first edit anyway.
extension JSONValue {
    /// The value at `pointer`, or nil when the path does not exist.
    public func value(at pointer: JSONPointer) -> JSONValue? {
        var current = self
        for token in pointer.tokens {
            switch current {
            case .object(let object):
                guard let next = object[token] else { return nil }
                current = next
            case .array(let items):
                guard let i = JSONValue.arrayIndex(token), i < items.count else { return nil }
                current = items[i]
            default:
                return nil
            }
        }
        return current
    }

    /// An RFC 6901 array index: "0" or digits without a leading zero.
    static func arrayIndex(_ token: String) -> Int? {
        guard !token.isEmpty, token.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        if token.utf8.count > 1 && token.utf8.first == 0x30 { return nil }
        return Int(token)
    }

    /// Writes `newValue` at `pointer`. Returns false when `.add` found something already there.
    @discardableResult
    mutating func write(_ newValue: JSONValue, at pointer: JSONPointer, mode: PointerWrite) throws(PointerMiss) -> Bool {
        try write(newValue, pointer: pointer, depth: 0, mode: mode)
    }

    private mutating func write(_ newValue: JSONValue, pointer: JSONPointer, depth: Int, mode: PointerWrite) throws(PointerMiss) -> Bool {
        if depth == pointer.tokens.count {
            // Only reached for the root pointer "".
            if mode == .add && self != .null { return false }
            self = newValue
            return true
        }
        let token = pointer.tokens[depth]
        let isLast = depth == pointer.tokens.count - 1
        if case .object(var object) = self {
            self = .null
            defer { self = .object(object) }
            if isLast {
                if mode == .add && object[token] != nil { return false }
                object[token] = newValue
                return true
            }
            // Missing members are created as empty objects; a walk below a fresh object can
            // always complete, so nothing half-built is left behind on failure.
            var child = object[token] ?? .object(JSONObject())
            object[token] = .null
            defer { object[token] = child }
            return try child.write(newValue, pointer: pointer, depth: depth + 1, mode: mode)
        } else if case .array(var items) = self {
            let index: Int
            if token == "-" {
                index = items.count
            } else if let i = JSONValue.arrayIndex(token) {
                index = i
            } else {
                throw .badIndex(pointer, depth: depth + 1, token: token)
            }
            guard index <= items.count else { throw .notFound(pointer, depth: depth + 1) }
            self = .null
            defer { self = .array(items) }
            if isLast {
                if index == items.count {
                    items.append(newValue)
                } else if mode == .add {
                    items.insert(newValue, at: index)
                } else {
                    items[index] = newValue
                }
                return true
            }
            guard index < items.count else { throw .notFound(pointer, depth: depth + 1) }
            var child = items[index]
            items[index] = .null
            defer { items[index] = child }
            return try child.write(newValue, pointer: pointer, depth: depth + 1, mode: mode)
        } else {
            throw .mismatch(pointer, depth: depth, found: self, expected: "an object or array")
        }
    }

    /// Removes and returns the value at `pointer` (the root becomes null).
    @discardableResult
    mutating func remove(at pointer: JSONPointer) throws(PointerMiss) -> JSONValue {
        guard !pointer.tokens.isEmpty else {
            let old = self
            self = .null
            return old
        }
        var removed = JSONValue.null
        try modifyParent(of: pointer, depth: 0) { (parent: inout JSONValue, token: String) throws(PointerMiss) in
            if case .object(var object) = parent {
                guard let old = object[token] else { throw .notFound(pointer, depth: pointer.tokens.count) }
                parent = .null
                object[token] = nil
                parent = .object(object)
                removed = old
            } else if case .array(var items) = parent {
                guard let i = JSONValue.arrayIndex(token) else {
                    throw .badIndex(pointer, depth: pointer.tokens.count, token: token)
                }
                guard i < items.count else { throw .notFound(pointer, depth: pointer.tokens.count) }
                parent = .null
                removed = items.remove(at: i)
                parent = .array(items)
            } else {
                throw .mismatch(pointer, depth: pointer.tokens.count - 1, found: parent, expected: "an object or array")
            }
        }
        return removed
    }

    /// Renames the object member at `pointer` to `newName`, keeping its position; a member
    /// already called `newName` is replaced.
    mutating func renameMember(at pointer: JSONPointer, to newName: String) throws(PointerMiss) {
        guard !pointer.tokens.isEmpty else { throw .mismatch(pointer, depth: 0, found: self, expected: "a member") }
        try modifyParent(of: pointer, depth: 0) { (parent: inout JSONValue, token: String) throws(PointerMiss) in
            guard case .object(let object) = parent else {
                throw .mismatch(pointer, depth: pointer.tokens.count - 1, found: parent, expected: "an object")
            }
            guard object[token] != nil else { throw .notFound(pointer, depth: pointer.tokens.count) }
            if token == newName { return }
            var renamed = JSONObject()
            for (key, value) in object.entries where key != newName {
                renamed[key == token ? newName : key] = value
            }
            parent = .object(renamed)
        }
    }

    /// Walks to the container holding the last token of `pointer` and hands it to `edit`.
    private mutating func modifyParent(of pointer: JSONPointer, depth: Int,
                                       _ edit: (inout JSONValue, String) throws(PointerMiss) -> Void) throws(PointerMiss) {
        let token = pointer.tokens[depth]
        if depth == pointer.tokens.count - 1 {
            try edit(&self, token)
            return
        }
        if case .object(var object) = self {
            guard var child = object[token] else { throw .notFound(pointer, depth: depth + 1) }
            self = .null
            object[token] = .null
            defer {
                object[token] = child
                self = .object(object)
            }
            try child.modifyParent(of: pointer, depth: depth + 1, edit)
        } else if case .array(var items) = self {
            guard let i = JSONValue.arrayIndex(token) else { throw .badIndex(pointer, depth: depth + 1, token: token) }
            guard i < items.count else { throw .notFound(pointer, depth: depth + 1) }
            var child = items[i]
            self = .null
            items[i] = .null
            defer {
                items[i] = child
                self = .array(items)
            }
            try child.modifyParent(of: pointer, depth: depth + 1, edit)
        } else {
            throw .mismatch(pointer, depth: depth, found: self, expected: "an object or array")
        }
    }
}
