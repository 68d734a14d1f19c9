/// Header fields as they arrived, kept as bytes: the names and values back to back in one
/// buffer, with each field's byte ranges. A parser appends pieces as its callbacks deliver them
/// (a name or value may come in several pieces when it spans reads); `removeAll` keeps the
/// capacity, so a connection that reuses one block allocates nothing per response. `headers()`
/// turns them into `HTTPHeaders` only for the hooks that need them.
public struct RawHeaderFields: Sendable {
    /// One field: `bytes[nameStart..<valueStart]` is its name, `bytes[valueStart..<valueEnd]`
    /// its value.
    public struct Field: Sendable, Equatable {
        public var nameStart: Int
        public var valueStart: Int
        public var valueEnd: Int
    }

    public private(set) var bytes: [UInt8] = []
    public private(set) var fields: [Field] = []
    /// The last field is receiving its value (a name piece now starts the next field).
    private var inValue = false

    public init() {}

    public var count: Int { fields.count }

    /// Empties the block for the next message, keeping its storage.
    public mutating func removeAll() {
        bytes.removeAll(keepingCapacity: true)
        fields.removeAll(keepingCapacity: true)
        inValue = false
    }

    /// Appends a piece of a field name: the start of a new field after a value, else the
    /// continuation of the name being received.
    public mutating func appendName(_ piece: UnsafeRawBufferPointer) {
        if inValue || fields.isEmpty {
            endValue()
            fields.append(Field(nameStart: bytes.count, valueStart: bytes.count, valueEnd: bytes.count))
            inValue = false
        }
        bytes.append(contentsOf: piece)
        fields[fields.count - 1].valueStart = bytes.count
        fields[fields.count - 1].valueEnd = bytes.count
    }

    /// Appends a piece of the value of the field whose name was received last (ignored before
    /// any name).
    public mutating func appendValue(_ piece: UnsafeRawBufferPointer) {
        guard !fields.isEmpty else { return }
        inValue = true
        bytes.append(contentsOf: piece)
        fields[fields.count - 1].valueEnd = bytes.count
    }

    /// The headers are complete: the last value loses its trailing spaces and tabs.
    public mutating func finish() {
        endValue()
        inValue = false
    }

    /// Trailing optional whitespace is not part of a value (leading whitespace never reaches
    /// the block: the parser skips it).
    private mutating func endValue() {
        guard let last = fields.last else { return }
        var end = last.valueEnd
        while end > last.valueStart, bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09 { end -= 1 }
        fields[fields.count - 1].valueEnd = end
    }

    /// Calls `body` with each field's name and value bytes, in order.
    public func forEach(_ body: (_ name: UnsafeBufferPointer<UInt8>, _ value: UnsafeBufferPointer<UInt8>) -> Void) {
        bytes.withUnsafeBufferPointer { all in
            for f in fields {
                body(UnsafeBufferPointer(rebasing: all[f.nameStart..<f.valueStart]), UnsafeBufferPointer(rebasing: all[f.valueStart..<f.valueEnd]))
            }
        }
    }

    /// Whether the name of a field (its bytes as they arrived) satisfies `predicate`.
    public func containsName(where predicate: (UnsafeBufferPointer<UInt8>) -> Bool) -> Bool {
        bytes.withUnsafeBufferPointer { all in
            fields.contains { predicate(UnsafeBufferPointer(rebasing: all[$0.nameStart..<$0.valueStart])) }
        }
    }

    /// The fields as `HTTPHeaders`: names decoded as UTF-8, values losslessly (`RawText`).
    public func headers() -> HTTPHeaders {
        var headers = HTTPHeaders()
        forEach { name, value in headers.add(String(decoding: name, as: UTF8.self), RawText.decode(value)) }
        return headers
    }
}
