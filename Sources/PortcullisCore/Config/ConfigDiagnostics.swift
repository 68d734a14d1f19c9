import Foundation

/// One problem found while reading a configuration or plugin document:
/// `config/portcullis.json: /routes/3/upstream: unknown upstream "userz"`.
public struct ConfigIssue: Error, Sendable, Equatable, CustomStringConvertible {
    public let file: String
    /// RFC 6901 JSON Pointer to the offending value ("" is the whole document).
    public let pointer: String
    public let message: String

    public init(file: String, pointer: String, message: String) {
        self.file = file
        self.pointer = pointer
        self.message = message
    }

    public var description: String { "\(file): \(pointer.isEmpty ? "/" : pointer): \(message)" }
}

/// Every issue of a document that failed validation; nothing of it was applied.
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public let issues: [ConfigIssue]
    public init(_ issues: [ConfigIssue]) { self.issues = issues }
    public var description: String { issues.map(\.description).joined(separator: "\n") }
}

/// Collects issues while a document is read, so that one pass reports all of them.
public final class ConfigDiagnostics {
    public let file: String
    public private(set) var issues: [ConfigIssue] = []

    public init(file: String) { self.file = file }

    public func fail(_ pointer: String, _ message: String) {
        issues.append(ConfigIssue(file: file, pointer: pointer, message: message))
    }

    /// Throws every collected issue, if any.
    public func throwIfFailed() throws(ConfigErrors) {
        if !issues.isEmpty { throw ConfigErrors(issues) }
    }
}

/// Escapes one JSON Pointer reference token (RFC 6901 §3).
public func jsonPointerEscape(_ token: String) -> String {
    token.replacingOccurrences(of: "~", with: "~0").replacingOccurrences(of: "/", with: "~1")
}

/// A value inside a configuration document with its JSON Pointer; typed accessors record a
/// precise issue when the value has the wrong type or range, and return nil.
public struct ConfigNode {
    public let value: JSONValue?
    public let pointer: String
    public let diagnostics: ConfigDiagnostics

    public init(value: JSONValue?, pointer: String, diagnostics: ConfigDiagnostics) {
        self.value = value
        self.pointer = pointer
        self.diagnostics = diagnostics
    }

    public var isPresent: Bool { value != nil && value != .null }

    public subscript(key: String) -> ConfigNode {
        ConfigNode(value: value?[key], pointer: pointer + "/" + jsonPointerEscape(key), diagnostics: diagnostics)
    }

    public func fail(_ message: String) { diagnostics.fail(pointer, message) }

    private func typeError(_ expected: String) {
        fail("expected \(expected), found \(value?.typeName ?? "nothing")")
    }

    /// Records an issue for every key not in `allowed` (catches typos in option names).
    public func rejectUnknownKeys(_ allowed: Set<String>) {
        guard let object = value?.objectValue else { return }
        for key in object.keys where !allowed.contains(key) {
            self[key].fail("unknown field \"\(key)\"")
        }
    }

    public func string(required: Bool = false) -> String? {
        guard isPresent else { if required { fail("required field is missing") }; return nil }
        guard let s = value?.stringValue else { typeError("a string"); return nil }
        return s
    }

    public func nonEmptyString(required: Bool = false) -> String? {
        guard let s = string(required: required) else { return nil }
        if s.isEmpty { fail("must not be empty"); return nil }
        return s
    }

    public func bool() -> Bool? {
        guard isPresent else { return nil }
        guard let b = value?.boolValue else { typeError("a boolean"); return nil }
        return b
    }

    public func int(min: Int64 = .min, max: Int64 = .max, required: Bool = false) -> Int64? {
        guard isPresent else { if required { fail("required field is missing") }; return nil }
        guard let i = value?.intValue else { typeError("an integer"); return nil }
        guard i >= min && i <= max else { fail("must be between \(min) and \(max), found \(i)"); return nil }
        return i
    }

    public func array(required: Bool = false) -> [ConfigNode]? {
        guard isPresent else { if required { fail("required field is missing") }; return nil }
        guard let items = value?.arrayValue else { typeError("an array"); return nil }
        return items.indices.map { ConfigNode(value: items[$0], pointer: pointer + "/\($0)", diagnostics: diagnostics) }
    }

    public func object(required: Bool = false) -> [(key: String, node: ConfigNode)]? {
        guard isPresent else { if required { fail("required field is missing") }; return nil }
        guard let object = value?.objectValue else { typeError("an object"); return nil }
        return object.keys.map { ($0, self[$0]) }
    }

    /// An array of strings, or a single string taken as a one-element array.
    public func stringList() -> [String]? {
        guard isPresent else { return nil }
        if let s = value?.stringValue { return [s] }
        guard let items = array() else { return nil }
        return items.compactMap { $0.string(required: true) }
    }
}
