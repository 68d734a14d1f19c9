/// Where bytes are written: a byte array, or a `ByteBuffer` (the output of the serialiser,
/// of response and request heads and of access-log lines). The writers are generic over it
/// and specialised for each.
public protocol ByteSink {
    mutating func append(_ byte: UInt8)
    mutating func append(bytes: UnsafeBufferPointer<UInt8>)
}

extension ByteSink {
    /// Appends an ASCII literal in one copy (a literal's `.utf8` view goes through the
    /// generic path).
    @inlinable @inline(__always)
    public mutating func appendASCII(_ literal: StaticString) {
        append(bytes: UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    /// Appends the UTF-8 of `text` in one copy. `append(contentsOf: text.utf8)` goes through
    /// the view's generic copy, several times the cost for the short fields of a head or a
    /// log line.
    @inlinable @inline(__always)
    public mutating func appendUTF8(_ text: String) {
        var text = text  // withUTF8 is free for a native string
        text.withUTF8 { append(bytes: $0) }
    }

    @inlinable @inline(__always)
    public mutating func appendUTF8(_ text: Substring) {
        var text = text
        text.withUTF8 { append(bytes: $0) }
    }

    /// Appends `value` in decimal, as `String(value)` writes it, without making the `String`.
    @inlinable
    public mutating func appendDecimal(_ value: Int) {
        DecimalText.forEachByte(of: value) { append($0) }
    }
}

extension Array: ByteSink where Element == UInt8 {
    @inlinable
    public mutating func append(bytes: UnsafeBufferPointer<UInt8>) { append(contentsOf: bytes) }
}

/// A growable byte buffer written with plain stores and copies, where an array's checks on
/// every append (unique, capacity, the generic copy of `append(contentsOf:)`, about 120
/// instructions for a short piece) were most of the cost of writing the short keys and
/// values of a body, a head or a log line. The owner calls `deallocate()`; a copy of the
/// struct shares the storage (so a copy must not outlive it or append behind its back).
public struct ByteBuffer: ByteSink {
    @usableFromInline var storage: UnsafeMutablePointer<UInt8>
    @usableFromInline var used = 0
    @usableFromInline var size: Int

    public init(capacity: Int) {
        size = max(capacity, 16)
        storage = .allocate(capacity: size)
    }

    public func deallocate() { storage.deallocate() }

    /// Bytes written so far.
    @inlinable public var count: Int { used }
    /// Bytes it holds without growing.
    @inlinable public var capacity: Int { size }
    @inlinable public var isEmpty: Bool { used == 0 }
    /// The bytes written (valid until the next append or `deallocate`).
    @inlinable public var bytes: UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(start: storage, count: used) }

    @inlinable @inline(__always)
    public mutating func append(_ byte: UInt8) {
        if used == size { grow(toHold: used + 1) }
        (storage + used).initialize(to: byte)
        used += 1
    }

    @inlinable @inline(__always)
    public mutating func append(bytes: UnsafeBufferPointer<UInt8>) {
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        if used + bytes.count > size { grow(toHold: used + bytes.count) }
        (storage + used).initialize(from: source, count: bytes.count)
        used += bytes.count
    }

    /// Lets `fill` write at most `count` bytes after the ones written so far and keeps the
    /// number it returns (a read from a socket or a body source).
    public mutating func append(upTo count: Int, _ fill: (UnsafeMutableRawBufferPointer) -> Int) {
        if used + count > size { grow(toHold: used + count) }
        let got = fill(UnsafeMutableRawBufferPointer(start: storage + used, count: count))
        used += min(max(got, 0), count)
    }

    /// Forgets the bytes written, keeping the storage.
    public mutating func removeAll() { used = 0 }

    /// Forgets the last `n` bytes written.
    public mutating func removeLast(_ n: Int) {
        precondition(n >= 0 && n <= used, "removeLast(\(n)) of \(used) bytes")
        used -= n
    }

    /// Room for `total` bytes without growing again.
    public mutating func reserveCapacity(_ total: Int) {
        if total > size { grow(toHold: total) }
    }

    /// At least doubles, so appending n bytes costs O(n) copies overall.
    @usableFromInline
    mutating func grow(toHold needed: Int) {
        let grown = max(needed, size * 2)
        let replacement = UnsafeMutablePointer<UInt8>.allocate(capacity: grown)
        replacement.initialize(from: storage, count: used)
        storage.deallocate()
        storage = replacement
        size = grown
    }

    /// The bytes written, as an array (one copy).
    public var array: [UInt8] { Array(bytes) }
}
