/// An ordered list of header fields with case-insensitive lookup. Names are stored as given.
public struct HTTPHeaders: Sendable, Equatable, Sequence {
    public private(set) var fields: [(name: String, value: String)] = []

    public init() {}
    public init(_ fields: [(String, String)]) { self.fields = fields.map { (name: $0.0, value: $0.1) } }

    public static func == (a: HTTPHeaders, b: HTTPHeaders) -> Bool {
        a.fields.map(\.name) == b.fields.map(\.name) && a.fields.map(\.value) == b.fields.map(\.value)
    }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> { fields.makeIterator() }
    public var count: Int { fields.count }

    /// The first value of `name`.
    public subscript(name: String) -> String? {
        guard let i = firstIndex(named: name, from: 0) else { return nil }
        return fields[i].value
    }

    public func values(_ name: String) -> [String] {
        guard var i = firstIndex(named: name, from: 0) else { return [] }
        var found: [String] = []
        while true {
            found.append(fields[i].value)
            guard let next = firstIndex(named: name, from: i + 1) else { return found }
            i = next
        }
    }

    public func contains(_ name: String) -> Bool { firstIndex(named: name, from: 0) != nil }

    /// The index of the first field at or after `start` named `name` (any case). Lengths are
    /// compared first and the fields are read in place: `first(where:)` over the array copied
    /// each field (two retains and releases) before comparing its name.
    @inline(__always)
    private func firstIndex(named name: String, from start: Int) -> Int? {
        let length = name.utf8.count
        return fields.withUnsafeBufferPointer { all in
            var i = start
            while i < all.count {
                if all[i].name.utf8.count == length, all[i].name.caseInsensitiveEquals(name) { return i }
                i += 1
            }
            return nil
        }
    }

    public mutating func add(_ name: String, _ value: String) { fields.append((name, value)) }

    /// Room for `count` fields without growing again (one allocation where fields are added).
    public mutating func reserveCapacity(_ count: Int) { fields.reserveCapacity(count) }

    /// Replaces every value of `name` with one.
    public mutating func set(_ name: String, _ value: String) {
        if let i = firstIndex(named: name, from: 0) {
            fields[i].value = value
            var j = fields.count - 1
            while j > i {
                if fields[j].name.caseInsensitiveEquals(name) { fields.remove(at: j) }
                j -= 1
            }
        } else {
            fields.append((name, value))
        }
    }

    public mutating func remove(_ name: String) { fields.removeAll { $0.name.caseInsensitiveEquals(name) } }

    public mutating func removeAll(where predicate: (String) -> Bool) { fields.removeAll { predicate($0.name) } }
}

extension StringProtocol {
    /// ASCII case-insensitive comparison (header names are ASCII tokens). Native strings are
    /// compared on their contiguous bytes; the iterator path is only a fallback.
    @inlinable
    public func caseInsensitiveEquals(_ other: some StringProtocol) -> Bool {
        let a = utf8, b = other.utf8
        guard a.count == b.count else { return false }
        if let result = a.withContiguousStorageIfAvailable({ x in
            b.withContiguousStorageIfAvailable { y in ASCIICase.equal(x, y) }
        }), let known = result {
            return known
        }
        for (x, y) in zip(a, b) where x != y {
            if ASCIICase.lower(x) != ASCIICase.lower(y) { return false }
        }
        return true
    }
}

/// ASCII case folding on bytes.
public enum ASCIICase {
    @inlinable
    public static func lower(_ c: UInt8) -> UInt8 { (c >= 65 && c <= 90) ? c + 32 : c }

    /// `x` equals `lower` (a lower-case ASCII literal) ignoring ASCII case.
    @inlinable
    public static func equal(_ x: UnsafeBufferPointer<UInt8>, lower: StaticString) -> Bool {
        guard x.count == lower.utf8CodeUnitCount else { return false }
        let y = lower.utf8Start
        for i in 0..<x.count where ASCIICase.lower(x[i]) != y[i] { return false }
        return true
    }

    @inlinable
    public static func equal(_ x: UnsafeBufferPointer<UInt8>, _ y: UnsafeBufferPointer<UInt8>) -> Bool {
        guard x.count == y.count else { return false }
        for i in 0..<x.count where x[i] != y[i] {
            if lower(x[i]) != lower(y[i]) { return false }
        }
        return true
    }
}

extension String {
    /// ASCII lower-casing, cheaper than `lowercased()` for header names.
    public var asciiLowercased: String {
        if !utf8.contains(where: { $0 >= 65 && $0 <= 90 }) { return self }
        return String(decoding: utf8.map { ($0 >= 65 && $0 <= 90) ? $0 + 32 : $0 }, as: UTF8.self)
    }
}
